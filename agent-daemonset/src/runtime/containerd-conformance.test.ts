import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Containers } from "@esb/common/gen/containerd/services/containers/v1/containers_pb";
import { Snapshots } from "@esb/common/gen/containerd/services/snapshots/v1/snapshots_pb";
import { Tasks } from "@esb/common/gen/containerd/services/tasks/v1/tasks_pb";
import { ContainerdConnection, isNotFound } from "../containerd/containerd-connection.js";
import { CniNetwork } from "../network/cni-network.js";
import { buildTestImage, pushTestImage } from "../testing/test-image.js";
import { ContainerdRuntime } from "./containerd-runtime.js";
import { describeRuntimeConformance } from "./runtime-conformance.js";

describeRuntimeConformance("containerd", async () => {
  const socketPath = process.env.ESB_TEST_CONTAINERD_SOCKET;
  const registry = process.env.ESB_TEST_REGISTRY;
  if (!socketPath || !registry) {
    throw new Error(
      "ESB_TEST_CONTAINERD_SOCKET and ESB_TEST_REGISTRY must be set (the test environment is missing)",
    );
  }
  // A bridge, subnet and containerd namespace of this run only.
  const rand = Math.floor(Math.random() * 0xffff);
  const bridge = `esbc${rand.toString(16)}`;
  const subnet = `10.${150 + (rand % 50)}.${rand % 250}.0/24`;
  const namespace = `esb-conf-${rand.toString(16)}`;
  const dir = mkdtempSync(join(tmpdir(), "esb-ctrd-conf-"));
  const network = new CniNetwork({
    mode: "bridge",
    bridgeName: bridge,
    subnet,
    stateDir: join(dir, "cni"),
    netnsDir: join(dir, "netns"),
  });
  const imageRef = await pushTestImage(
    registry,
    `esb-test/conformance-${rand.toString(16)}`,
    "v1",
    await buildTestImage(),
  );
  const runtime = new ContainerdRuntime({
    socketPath,
    namespace,
    network,
    stateDir: join(dir, "state"),
    insecureRegistries: [registry],
  });
  const conn = new ContainerdConnection({ socketPath, namespace });
  const gone = async (what: string, call: () => Promise<unknown>) => {
    const err = await call().then(
      () => undefined,
      (e: unknown) => e,
    );
    if (!isNotFound(err)) throw new Error(`${what} still exists (${err ? (err as Error).message : "found"})`);
  };
  return {
    runtime,
    imageRef,
    missingImageRef: `${registry}/esb-test/does-not-exist-${rand.toString(16)}:v1`,
    async assertRemoved(id: string) {
      await gone(`task ${id}`, () => conn.unary(Tasks.method.get, { containerId: id }));
      await gone(`container ${id}`, () => conn.unary(Containers.method.get, { id }));
      await gone(`snapshot ${id}`, () =>
        conn.unary(Snapshots.method.stat, { snapshotter: "overlayfs", key: id }),
      );
      if ((await network.list()).includes(id)) throw new Error(`network of ${id} still allocated`);
      if (existsSync(join(dir, "netns", `esb-${id}`))) throw new Error(`netns of ${id} still exists`);
    },
    async cleanup() {
      conn.close();
      for (const id of await network.list()) await network.detach(id);
      try {
        execFileSync("ip", ["link", "del", bridge], { stdio: "ignore" });
      } catch {
        // already gone
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
});
