import { describeContainerdConformance } from "./containerd-conformance.js";

// The Runtime conformance suite on Debian's containerd 1.6 (the test environment's `containerd`).
describeContainerdConformance("1.6");
