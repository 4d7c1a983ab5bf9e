// Typed access to the test environment started by the jest global setup
// (hack/dev-env.sh): tests that need a component call these and FAIL with a
// clear message when it is missing, instead of silently skipping.
import { existsSync } from "node:fs";

/** Names of the components `hack/dev-env.sh --only` can start. */
export type TestComponent = "containerd" | "registry" | "kube";

/** Thrown when a test needs a component that the test environment does not have. */
export class TestEnvironmentMissingError extends Error {
  constructor(component: TestComponent, variable: string, detail: string) {
    super(
      `test environment: ${component} is not available (${variable} ${detail}). ` +
        `Run the tests through jest (its global setup starts hack/dev-env.sh), or start one with ` +
        `\`hack/dev-env.sh up --dir DIR\` and set ESB_DEV_ENV_DIR=DIR; ` +
        `ESB_TEST_ENV_ONLY must include "${component}" and ESB_TEST_ENV must not be "none".`,
    );
    this.name = "TestEnvironmentMissingError";
  }
}

function required(component: TestComponent, variable: string): string {
  const value = process.env[variable];
  if (!value) throw new TestEnvironmentMissingError(component, variable, "is not set");
  return value;
}

function existingPath(component: TestComponent, variable: string): string {
  const value = required(component, variable);
  if (!existsSync(value))
    throw new TestEnvironmentMissingError(component, variable, `points at missing ${value}`);
  return value;
}

/** Path of the test containerd's gRPC socket (ESB_TEST_CONTAINERD_SOCKET); throws when absent. */
export function testContainerdSocket(): string {
  return existingPath("containerd", "ESB_TEST_CONTAINERD_SOCKET");
}

/** `host:port` of the test OCI registry, plain HTTP on loopback (ESB_TEST_REGISTRY); throws when absent. */
export function testRegistry(): string {
  return required("registry", "ESB_TEST_REGISTRY");
}

/** Path of an admin kubeconfig for the test kube-apiserver (ESB_TEST_KUBECONFIG); throws when absent. */
export function testKubeconfig(): string {
  return existingPath("kube", "ESB_TEST_KUBECONFIG");
}

/** `https://127.0.0.1:PORT` of the test kube-apiserver (ESB_TEST_KUBE_SERVER); throws when absent. */
export function testKubeServer(): string {
  return required("kube", "ESB_TEST_KUBE_SERVER");
}
