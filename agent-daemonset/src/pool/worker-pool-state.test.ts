// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect, afterEach } from "@jest/globals";
import { WORKER_LABELS } from "../runtime/runtime.js";
import { FakeRuntime, fakePoolConfig as config } from "./fake-runtime.js";
import { ConcurrencyLimitError, LeaseMismatchError, PoolClosedError } from "./pool-errors.js";
import { WORKER_TRANSITIONS, WorkerPool, type PoolEvent, type PoolFunctionConfig } from "./worker-pool.js";

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for: ${what}`);
}

const pools: WorkerPool[] = [];
function makePool(
  rt: FakeRuntime,
  over: Partial<PoolFunctionConfig> = {},
  events: PoolEvent[] = [],
): WorkerPool {
  const pool = new WorkerPool({
    // The fake's workers have no process: they are ready as soon as they start.
    waitReady: async () => undefined,
    functionKey: "ns/fn",
    runtime: rt,
    config: config(over),
    onEvent: (e) => events.push(e),
  });
  pools.push(pool);
  return pool;
}

afterEach(async () => {
  for (const p of pools.splice(0)) await p.destroy();
});

describe("WorkerPool state machine (FakeRuntime)", () => {
  it("declares stopping → destroyed as the only way out and no way back from destroyed", () => {
    expect(WORKER_TRANSITIONS.stopping).toEqual(["destroyed"]);
    expect(WORKER_TRANSITIONS.destroyed).toEqual([]);
    expect(WORKER_TRANSITIONS.paused).not.toContain("idle");
  });

  it("cold-starts, then reuses warm, then thaws the paused worker", async () => {
    const rt = new FakeRuntime();
    const events: PoolEvent[] = [];
    const pool = makePool(rt, {}, events);
    const a = await pool.acquire({ holderId: "g1" });
    expect(a.startKind).toBe("cold");
    expect(a.address).toMatch(/^10\.0\.0\.\d+:8080$/);
    await pool.release(a.workerId, a.leaseId, "success");
    // Immediately re-acquired before the pause timer: warm.
    const b = await pool.acquire({ holderId: "g1" });
    expect(b.startKind).toBe("warm");
    expect(b.workerId).toBe(a.workerId);
    await pool.release(b.workerId, b.leaseId, "function-error");
    await until(() => rt.status.get(a.workerId) === "paused", "worker paused");
    expect(pool.counts()).toEqual({ starting: 0, idle: 0, busy: 0, paused: 1 });
    const c = await pool.acquire({ holderId: "g1" });
    expect(c.startKind).toBe("thawed");
    expect(c.workerId).toBe(a.workerId);
    expect(rt.status.get(a.workerId)).toBe("running");
    expect(events.filter((e) => e.type === "thawed")).toHaveLength(1);
    expect(events.filter((e) => e.type === "paused")).toHaveLength(1);
  });

  it("never hands one worker to two callers and enforces the limit", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt, { maxWorkers: 2 });
    const [a, b] = await Promise.all([pool.acquire({ holderId: "g" }), pool.acquire({ holderId: "g" })]);
    expect(a.workerId).not.toBe(b.workerId);
    await expect(pool.acquire({ holderId: "g" })).rejects.toBeInstanceOf(ConcurrencyLimitError);
    expect(pool.counts().busy).toBe(2);
  });

  it("a waiter gets the next released worker", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt, { maxWorkers: 1 });
    const a = await pool.acquire({ holderId: "g" });
    const waiting = pool.acquire({ holderId: "g", waitMs: 30_000 });
    await new Promise((r) => setTimeout(r, 20));
    await pool.release(a.workerId, a.leaseId, "success");
    const b = await waiting;
    expect(b.workerId).toBe(a.workerId);
    expect(b.startKind).toBe("warm");
  });

  it("a waiter times out with the concurrency error", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt, { maxWorkers: 1 });
    await pool.acquire({ holderId: "g" });
    await expect(pool.acquire({ holderId: "g", waitMs: 50 })).rejects.toBeInstanceOf(ConcurrencyLimitError);
  });

  it("a worker released as failed or timed out is removed and never handed out again", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt);
    const a = await pool.acquire({ holderId: "g" });
    await pool.release(a.workerId, a.leaseId, "worker-failed");
    expect(rt.calls).toContain(`remove ${a.workerId}`);
    const b = await pool.acquire({ holderId: "g" });
    expect(b.workerId).not.toBe(a.workerId);
    expect(b.startKind).toBe("cold");
    await pool.release(b.workerId, b.leaseId, "timeout");
    expect(pool.workers()).toEqual([]);
    // A late, duplicate release of a removed worker is harmless.
    await pool.release(b.workerId, b.leaseId, "success");
  });

  it("rejects a release with the wrong lease", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt);
    const a = await pool.acquire({ holderId: "g" });
    await expect(pool.release(a.workerId, "not-the-lease", "success")).rejects.toBeInstanceOf(
      LeaseMismatchError,
    );
  });

  it("reclaims a worker whose lease expired without heartbeats, and heartbeats keep leases alive", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt);
    const kept = await pool.acquire({ holderId: "alive", leaseMs: 1000 });
    const lost = await pool.acquire({ holderId: "gone", leaseMs: 150 });
    // Heartbeats for well past the kept lease's length.
    for (let i = 0; i < 30; i++) {
      await new Promise((r) => setTimeout(r, 50));
      expect(pool.heartbeat("alive").held).toBe(1);
    }
    await until(() => !rt.status.has(lost.workerId), "expired worker removed");
    expect(rt.status.get(kept.workerId)).toBe("running");
    await pool.release(kept.workerId, kept.leaseId, "success");
  });

  it("a crashed worker (exit event) is removed and a provisioned one replaced", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt, { provisioned: 1 });
    pool.start();
    await until(() => pool.counts().paused === 1, "provisioned worker paused");
    const [first] = pool.workerIds();
    expect(pool.workerExited(first, "exit 137")).toBe(true);
    await until(() => pool.counts().paused === 1 && !pool.workerIds().includes(first), "replacement paused");
    expect(rt.calls).toContain(`remove ${first}`);
  });

  it("a failed resume removes the worker and the acquire falls back to a cold start", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt);
    const a = await pool.acquire({ holderId: "g" });
    await pool.release(a.workerId, a.leaseId, "success");
    await until(() => rt.status.get(a.workerId) === "paused", "paused");
    rt.failResumeOf.add(a.workerId);
    const b = await pool.acquire({ holderId: "g" });
    expect(b.workerId).not.toBe(a.workerId);
    expect(b.startKind).toBe("cold");
    await until(() => !rt.status.has(a.workerId), "broken worker removed");
  });

  it("a failed cold start surfaces the runtime error and frees the slot", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt, { maxWorkers: 1 });
    rt.failNextStart = true;
    await expect(pool.acquire({ holderId: "g" })).rejects.toThrow("image broken");
    const ok = await pool.acquire({ holderId: "g" });
    expect(ok.startKind).toBe("cold");
  });

  it("drains workers of an old revision: idle ones at once, busy ones on release", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt, { maxWorkers: 3 });
    const busy = await pool.acquire({ holderId: "g" });
    const idle = await pool.acquire({ holderId: "g" });
    await pool.release(idle.workerId, idle.leaseId, "success");
    pool.update(config({ revision: "r2", generation: 2, maxWorkers: 3 }));
    await until(() => !rt.status.has(idle.workerId), "old idle worker removed");
    const next = await pool.acquire({ holderId: "g" });
    expect(next.revision).toBe("r2");
    expect(next.startKind).toBe("cold");
    await pool.release(busy.workerId, busy.leaseId, "success");
    expect(rt.status.has(busy.workerId)).toBe(false);
  });

  it("a lowered limit removes surplus idle workers at once and busy ones on release", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt, { maxWorkers: 3 });
    const busy = await pool.acquire({ holderId: "g" });
    const idle1 = await pool.acquire({ holderId: "g" });
    const idle2 = await pool.acquire({ holderId: "g" });
    await pool.release(idle1.workerId, idle1.leaseId, "success");
    await pool.release(idle2.workerId, idle2.leaseId, "success");
    pool.update(config({ maxWorkers: 1 }));
    await until(
      () => !rt.status.has(idle1.workerId) && !rt.status.has(idle2.workerId),
      "idle surplus removed",
    );
    expect(rt.status.has(busy.workerId)).toBe(true);
    // Down to 0 (this node's share of reservedConcurrency went elsewhere): the busy one goes when released.
    pool.update(config({ maxWorkers: 0 }));
    await pool.release(busy.workerId, busy.leaseId, "success");
    expect(rt.status.size).toBe(0);
    await expect(pool.acquire({ holderId: "g" })).rejects.toBeInstanceOf(ConcurrencyLimitError);
  });

  it("reaps idle workers after keepWarm but keeps the provisioned ones", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt, { provisioned: 1, keepWarmMs: 100, maxWorkers: 3 });
    pool.start();
    await until(() => pool.counts().paused === 1, "provisioned ready");
    const a = await pool.acquire({ holderId: "g" });
    const b = await pool.acquire({ holderId: "g" });
    await pool.release(a.workerId, a.leaseId, "success");
    await pool.release(b.workerId, b.leaseId, "success");
    await until(() => pool.workerIds().length === 1, "one worker reaped");
    await new Promise((r) => setTimeout(r, 300));
    expect(pool.workerIds()).toHaveLength(1);
  });

  it("destroy removes idle workers, drains busy ones and refuses new acquires", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt);
    const a = await pool.acquire({ holderId: "g" });
    const b = await pool.acquire({ holderId: "g" });
    await pool.release(b.workerId, b.leaseId, "success");
    expect(await pool.destroy()).toBe(2);
    expect(rt.status.has(b.workerId)).toBe(false);
    expect(rt.status.has(a.workerId)).toBe(true);
    await expect(pool.acquire({ holderId: "g" })).rejects.toBeInstanceOf(PoolClosedError);
    await pool.release(a.workerId, a.leaseId, "success");
    await pool.drained();
    expect(rt.status.size).toBe(0);
  });

  it("re-adopts a paused worker as thawable and a running one as busy until released", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt);
    rt.status.set("old-paused", "paused");
    rt.status.set("old-running", "running");
    const labels = { [WORKER_LABELS.revision]: "r1", [WORKER_LABELS.generation]: "1" };
    pool.adopt({ id: "old-paused", ip: "10.0.0.50", port: 8080, labels, status: "paused" });
    pool.adopt({ id: "old-running", ip: "10.0.0.51", port: 8080, labels, status: "running" });
    expect(pool.counts()).toEqual({ starting: 0, idle: 0, busy: 1, paused: 1 });
    const a = await pool.acquire({ holderId: "g" });
    expect(a).toMatchObject({ workerId: "old-paused", startKind: "thawed", address: "10.0.0.50:8080" });
    // The previous agent's lease id is unknown; any release returns the adopted worker.
    await pool.release("old-running", "whatever", "success");
    expect(pool.counts().idle).toBe(1);
  });
});
