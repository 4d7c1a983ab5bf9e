import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CniNetwork } from "../network/cni-network.js";
import { ContainerdRuntime } from "../runtime/containerd-runtime.js";
import { buildTestImage, pushTestImage } from "./test-image.js";

/**
 * For tests of the containerd runtime, pool, node agent and service: the REAL
 * ContainerdRuntime on the test containerd (ESB_TEST_CONTAINERD_SOCKET), in a
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

  constructor() {
    const socket = process.env.ESB_TEST_CONTAINERD_SOCKET;
    const registry = process.env.ESB_TEST_REGISTRY;
    if (!socket) throw new Error("ESB_TEST_CONTAINERD_SOCKET is not set: the test containerd is missing");
    if (!registry) throw new Error("ESB_TEST_REGISTRY is not set: the test registry is missing");
    this.socket = socket;
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
