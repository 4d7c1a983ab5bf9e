import { describeContainerdConformance } from "./containerd-conformance.js";

// The same suite on containerd 2.x (the test environment's `containerd2`, hack/build-containerd.sh).
describeContainerdConformance("2.x");
