import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { Tasks } from "@esb/common/gen/containerd/services/tasks/v1/tasks_pb";
import { ContainerdConnection } from "../containerd/containerd-connection.js";
import { CniNetwork } from "../network/cni-network.js";
import { buildTestImage, pushTestImage } from "../testing/test-image.js";
import type { TestContainerd } from "../testing/containerd-test-fixture.js";
import { ContainerdRuntime } from "./containerd-runtime.js";
import { waitFor } from "./runtime-conformance.js";
import type { WorkerExit } from "./runtime.js";

// This test restarts containerd, so it runs its own containerd (own root, state
// and socket) instead of the shared test one: Debian's 1.6 (`containerd` on PATH)
// and 2.x (ESB_TEST_CONTAINERD2_BIN, hack/build-containerd.sh) in turn.
const registry = process.env.ESB_TEST_REGISTRY ?? "";

/** How to run one containerd version with its root, state and sockets under `dir`. */
interface Daemon {
  command: string;
  /** PATH of the daemon, which is where it finds its shim. */
  path: string;
  config(dir: string, socketPath: string): string;
}

const daemons: Record<TestContainerd, () => Daemon> = {
  "1.6": () => ({
    command: "containerd",
    path: process.env.PATH ?? "",
    config: (dir, socketPath) =>
      `version = 2\nroot = "${dir}/root"\nstate = "${dir}/state"\n` +
      `disabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "${socketPath}"\n` +
      `[ttrpc]\n  address = "${socketPath}.ttrpc"\n[debug]\n  address = "${dir}/debug.sock"\n`,
  }),
  "2.x": () => {
    const command = process.env.ESB_TEST_CONTAINERD2_BIN;
    if (!command) throw new Error("ESB_TEST_CONTAINERD2_BIN is not set: the test containerd 2.x is missing");
    return {
      command,
      // Its own v2 shim first, as hack/dev-env.sh does; other containerds keep Debian's.
      path: `${dirname(command)}:${process.env.PATH ?? ""}`,
      // As hack/dev-env.sh's containerd2: config version 3, no CRI, no NRI, nothing under /opt.
      config: (dir, socketPath) =>
        `version = 3\nroot = "${dir}/root"\nstate = "${dir}/state"\nimports = []\n` +
        `disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", ` +
        `"io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox", ` +
        `"io.containerd.nri.v1.nri"]\n[grpc]\n  address = "${socketPath}"\n` +
        `[ttrpc]\n  address = "${socketPath}.ttrpc"\n[debug]\n  address = "${dir}/debug.sock"\n` +
        `[plugins."io.containerd.internal.v1.opt"]\n  path = "${dir}/opt"\n`,
    };
  },
};

async function stop(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null) return;
  const exited = new Promise((r) => p.once("exit", r));
  p.kill("SIGTERM");
  await exited;
}

describe.each(Object.keys(daemons) as TestContainerd[])(
  "ContainerdRuntime across a containerd %s restart (own containerd)",
  (version) => {
    const daemon = daemons[version]();
    const rand = Math.floor(Math.random() * 0xffff);
    const tag = rand.toString(16);
    const dir = mkdtempSync(join(tmpdir(), "esb-ctrd-restart-"));
    const socketPath = join(dir, "containerd.sock");
    const bridge = `esbx${tag}`;
    const subnet = `10.${50 + (rand % 50)}.${rand % 250}.0/24`;

    function startContainerd(): ChildProcess {
      const config = join(dir, "config.toml");
      if (!existsSync(config)) {
        mkdirSync(join(dir, "root"));
        mkdirSync(join(dir, "state"));
        writeFileSync(config, daemon.config(dir, socketPath));
      }
      return spawn(daemon.command, ["--config", config], {
        stdio: "ignore",
        env: { ...process.env, PATH: daemon.path },
      });
    }

    let containerd: ChildProcess;
    const network = new CniNetwork({
      mode: "bridge",
      bridgeName: bridge,
      subnet,
      stateDir: join(dir, "cni"),
      netnsDir: join(dir, "netns"),
    });
    let runtime: ContainerdRuntime;
    const id = `restart-${tag}`;

    beforeAll(async () => {
      if (!registry) throw new Error("ESB_TEST_REGISTRY must be set");
      containerd = startContainerd();
      runtime = new ContainerdRuntime({
        socketPath,
        network,
        stateDir: join(dir, "agent"),
        insecureRegistries: [registry],
      });
      await waitFor("containerd", () => runtime.start().then(() => true));
    });

    afterAll(async () => {
      await runtime?.removeWorker(id).catch(() => undefined);
      await runtime?.close();
      if (containerd) await stop(containerd);
      for (const w of await network.list()) await network.detach(w);
      try {
        execFileSync("ip", ["link", "del", bridge], { stdio: "ignore" });
      } catch {
        // already gone
      }
      // Snapshots are overlay mounts only while tasks run; they are gone by now.
      rmSync(dir, { recursive: true, force: true });
    });

    it("keeps reporting worker exits after containerd restarts", async () => {
      const ref = await pushTestImage(registry, `esb-test/restart-${tag}`, "v1", await buildTestImage());
      const image = await runtime.prepareImage(ref);
      const exits: WorkerExit[] = [];
      runtime.onWorkerExit((e) => exits.push(e));
      await runtime.startWorker({ id, image, labels: {}, env: {}, memoryMb: 64, tmpMb: 8 });

      await stop(containerd);
      expect(await runtime.workerStatus(id).catch((e: Error) => e.name)).toBe("RuntimeUnavailableError");
      containerd = startContainerd();
      // The task survived in its shim; the runtime reconnects by itself.
      expect(await waitFor("reconnect", () => runtime.workerStatus(id).catch(() => false))).toBe("running");

      const conn = new ContainerdConnection({ socketPath, namespace: "esb" });
      try {
        // Whether the re-subscribed event stream or the reconcile after re-subscribing sees it,
        // the exit is reported exactly once.
        await conn.unary(Tasks.method.kill, { containerId: id, signal: 9 });
      } finally {
        conn.close();
      }
      const exit = await waitFor("exit after restart", () => exits.find((e) => e.id === id));
      expect(exit.exitCode).toBe(137);
      expect(exits.filter((e) => e.id === id)).toHaveLength(1);
    });
  },
);
