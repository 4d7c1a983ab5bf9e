import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { FunctionSpecSchema, type FunctionSpec } from "@esb/common/gen/esb/agent/v1/agent_pb";
import { CniNetwork } from "../network/cni-network.js";
import { ContainerdRuntime } from "../runtime/containerd-runtime.js";
import { buildTestImage, pushTestImage } from "./test-image.js";

/**
 * The containerds of the test environment (hack/dev-env.sh), by the variable
 * naming each one's socket: Debian's 1.6 and a 2.x built from its Go module
 * (hack/build-containerd.sh). The agent must work on both.
 */
export const TEST_CONTAINERDS = {
  "1.6": "ESB_TEST_CONTAINERD_SOCKET",
  "2.x": "ESB_TEST_CONTAINERD2_SOCKET",
} as const;

/** Which test containerd: a key of {@link TEST_CONTAINERDS}. */
export type TestContainerd = keyof typeof TEST_CONTAINERDS;

/** Socket of a test containerd; throws when the test environment does not have it. */
export function testContainerdSocket(containerd: TestContainerd): string {
  const variable = TEST_CONTAINERDS[containerd];
  const socket = process.env[variable];
  if (!socket) throw new Error(`${variable} is not set: the test containerd ${containerd} is missing`);
  return socket;
}

/** Options of {@link ContainerdTestFixture}. */
export interface ContainerdTestFixtureOptions {
  /** containerd's gRPC socket. Default: the test containerd 1.6 (ESB_TEST_CONTAINERD_SOCKET). */
  socket?: string;
}

/**
 * For tests of the containerd runtime, pool, node agent and service: the REAL
 * ContainerdRuntime on a test containerd (by default ESB_TEST_CONTAINERD_SOCKET), in a
 * containerd namespace, CNI bridge and subnet unique to this fixture, with the
 * test worker image pushed to the test registry (ESB_TEST_REGISTRY). Throws when
 * either is missing, so such tests fail instead of silently skipping.
 */
export class ContainerdTestFixture {
  readonly id = randomBytes(3).toString("hex");
  readonly namespace = `esb-t${this.id}`;
  readonly bridge = `esbp${this.id}`;
  readonly subnet = `10.${150 + (parseInt(this.id.slice(0, 2), 16) % 50)}.${parseInt(this.id.slice(2, 4), 16)}.0/24`;
  readonly dir = mkdtempSync(join(tmpdir(), "esb-agent-test-"));
  readonly socket: string;
  readonly registry: string;
  readonly network: CniNetwork;
  /** Reference of the test worker image in the test registry (set by {@link setup}). */
  imageRef = "";

  constructor(opts: ContainerdTestFixtureOptions = {}) {
    const registry = process.env.ESB_TEST_REGISTRY;
    this.socket = opts.socket ?? testContainerdSocket("1.6");
    if (!registry) throw new Error("ESB_TEST_REGISTRY is not set: the test registry is missing");
    this.registry = registry;
    this.network = new CniNetwork({
      mode: "bridge",
      bridgeName: this.bridge,
      subnet: this.subnet,
      stateDir: join(this.dir, "cni"),
      netnsDir: join(this.dir, "netns"),
    });
  }

  /** A new ContainerdRuntime on the fixture's namespace and network (not started). */
  runtime(): ContainerdRuntime {
    return new ContainerdRuntime({
      socketPath: this.socket,
      namespace: this.namespace,
      network: this.network,
      stateDir: join(this.dir, "runtime"),
      insecureRegistries: [this.registry],
    });
  }

  /** Pushes the test worker image (busybox httpd on :8080) and returns its reference. */
  async setup(): Promise<string> {
    this.imageRef = await pushTestImage(
      this.registry,
      `esb-agent-test/worker-${this.id}`,
      "v1",
      await buildTestImage(),
    );
    return this.imageRef;
  }

  /** Removes every worker left in the namespace, the network allocations, the bridge and the files. */
  async teardown(): Promise<void> {
    const rt = this.runtime();
    try {
      await rt.start();
      for (const w of await rt.listWorkers()) await rt.removeWorker(w.id);
    } finally {
      await rt.close();
    }
    for (const id of await this.network.list()) await this.network.detach(id);
    try {
      execFileSync("ip", ["link", "del", this.bridge], { stdio: "ignore" });
    } catch {
      // no bridge was created
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** GETs `/` of a worker at `address` (host:port) and returns the body. */
export async function getWorker(address: string): Promise<string> {
  const res = await fetch(`http://${address}/`, { signal: AbortSignal.timeout(20_000) });
  return res.text();
}

/**
 * TEST SUPPORT: a FunctionSpec of the fixture's image in namespace `default`
 * (128 MB, 3 s timeout, 16 MB /tmp, revision rev1), with `over` applied last.
 */
export function testFunctionSpec(
  fx: ContainerdTestFixture,
  name: string,
  over: Exclude<MessageInitShape<typeof FunctionSpecSchema>, FunctionSpec> = {},
): FunctionSpec {
  return create(FunctionSpecSchema, {
    ref: { namespace: "default", name },
    generation: 1n,
    revision: "rev1",
    image: fx.imageRef,
    memorySizeMb: 128,
    timeoutSeconds: 3,
    ephemeralStorageMb: 16,
    ...over,
  });
}
