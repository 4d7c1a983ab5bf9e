import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import type { ContainerdRuntime } from "../runtime/containerd-runtime.js";
import { WORKER_LABELS, type PreparedImage } from "../runtime/runtime.js";
import { TEST_WORKER_BODY } from "../testing/test-image.js";
import { ContainerdTestFixture, getWorker } from "../testing/containerd-test-fixture.js";
import { ConcurrencyLimitError } from "./pool-errors.js";
import { WorkerPool, type PoolEvent, type PoolFunctionConfig } from "./worker-pool.js";

// The pool on the REAL ContainerdRuntime and test containerd: pause/resume are
// checked through containerd's task status, crashes through its exit events.

async function until(cond: () => Promise<boolean> | boolean, what: string, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for: ${what}`);
}

describe("WorkerPool on containerd", () => {
  let fx: ContainerdTestFixture;
  let rt: ContainerdRuntime;
  let image: PreparedImage;
  const pools: WorkerPool[] = [];

  beforeAll(async () => {
    fx = new ContainerdTestFixture();
    await fx.setup();
    rt = fx.runtime();
    await rt.start();
    image = await rt.prepareImage(fx.imageRef);
  });

  afterAll(async () => {
    for (const p of pools) await p.destroy().then(() => p.drained());
    if (rt) {
      expect(await rt.listWorkers()).toEqual([]);
      await rt.close();
    }
    await fx?.teardown();
  });

  function pool(name: string, over: Partial<PoolFunctionConfig> = {}, events: PoolEvent[] = []): WorkerPool {
    const p = new WorkerPool({
      functionKey: `test/${name}`,
      runtime: rt,
      onEvent: (e) => events.push(e),
      config: {
        generation: 1,
        revision: "r1",
        maxWorkers: 2,
        provisioned: 0,
        pauseAfterMs: 50,
        keepWarmMs: 600_000,
        defaultLeaseMs: 60_000,
        workerSpec: (id) => ({
          id,
          image,
          labels: {
            [WORKER_LABELS.function]: `test/${name}`,
            [WORKER_LABELS.revision]: "r1",
            [WORKER_LABELS.generation]: "1",
            [WORKER_LABELS.owner]: `node-${fx.id}`,
          },
          env: { PATH: "/bin" },
          memoryMb: 128,
          tmpMb: 16,
        }),
        ...over,
      },
    });
    pools.push(p);
    return p;
  }

  it("cold-starts a worker, pauses (freezes) it after release, and thaws the same container", async () => {
    const events: PoolEvent[] = [];
    const p = pool("thaw", {}, events);
    const a = await p.acquire({ holderId: "gw" });
    expect(a.startKind).toBe("cold");
    expect(await getWorker(a.address)).toBe(TEST_WORKER_BODY);
    await p.release(a.workerId, a.leaseId, "success");
    await until(async () => (await rt.workerStatus(a.workerId)) === "paused", "worker frozen");
    expect(p.counts().paused).toBe(1);

    const b = await p.acquire({ holderId: "gw" });
    expect(b.startKind).toBe("thawed");
    expect(b.workerId).toBe(a.workerId);
    expect(await rt.workerStatus(b.workerId)).toBe("running");
    expect(await getWorker(b.address)).toBe(TEST_WORKER_BODY);
    await p.release(b.workerId, b.leaseId, "success");
    expect(events.some((e) => e.type === "thawed")).toBe(true);
    await p.destroy();
    await p.drained();
    expect(await rt.workerStatus(a.workerId)).toBe("unknown");
  });

  it("enforces the concurrency limit with RESOURCE_EXHAUSTED", async () => {
    const p = pool("limit", { maxWorkers: 1 });
    const a = await p.acquire({ holderId: "gw" });
    await expect(p.acquire({ holderId: "gw" })).rejects.toBeInstanceOf(ConcurrencyLimitError);
    await p.release(a.workerId, a.leaseId, "success");
    const b = await p.acquire({ holderId: "gw" });
    expect(b.workerId).toBe(a.workerId);
    await p.release(b.workerId, b.leaseId, "success");
  });

  it("notices a crashed worker through containerd events and replaces a provisioned one", async () => {
    const p = pool("crash", { provisioned: 1 });
    // The node agent routes runtime exit events to pools; here the test does it.
    const unsubscribe = rt.onWorkerExit((e) => p.workerExited(e.id, `exit ${e.exitCode}`));
    p.start();
    await until(() => p.counts().paused === 1, "provisioned worker paused");
    const [first] = p.workerIds();
    // The pool counts a worker paused once it issued the pause; containerd shows it when the pause is done.
    await until(async () => (await rt.workerStatus(first)) === "paused", "paused in containerd", 10_000);
    const a = await p.acquire({ holderId: "gw" });
    expect(a.workerId).toBe(first);
    const pid = (await rt.listWorkers()).find((w) => w.id === first)?.pid;
    expect(pid).toBeGreaterThan(0);
    process.kill(pid!, "SIGKILL");
    await until(() => !p.workerIds().includes(first), "crashed worker removed");
    await until(() => p.counts().paused === 1, "replacement provisioned and paused");
    expect(p.workerIds()).not.toContain(first);
    // The gateway's late release of the crashed worker is harmless.
    await p.release(a.workerId, a.leaseId, "worker-failed");
    unsubscribe();
  });

  it("reaps idle workers after keepWarm, leaving no task behind", async () => {
    const p = pool("reap", { keepWarmMs: 500 });
    const a = await p.acquire({ holderId: "gw" });
    await p.release(a.workerId, a.leaseId, "success");
    await until(() => p.workerIds().length === 0, "idle worker reaped");
    await until(async () => (await rt.workerStatus(a.workerId)) === "unknown", "container removed");
  });
});
