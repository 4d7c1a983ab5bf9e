// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect, afterEach } from "@jest/globals";
import { FakeRuntime, fakePoolConfig } from "./fake-runtime.js";
import { AcquireCancelledError } from "./pool-errors.js";
import { WorkerPool, type PoolFunctionConfig } from "./worker-pool.js";

// Leases owned by their caller (FakeRuntime, see fake-runtime.ts): an acquire
// whose caller gave up hands nothing out, and a heartbeat that lists the
// holder's leases expires the others.

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for: ${what}`);
}

const pools: WorkerPool[] = [];
function makePool(rt: FakeRuntime, over: Partial<PoolFunctionConfig> = {}, graceMs?: number): WorkerPool {
  const pool = new WorkerPool({
    waitReady: async () => undefined,
    functionKey: "ns/fn",
    runtime: rt,
    config: fakePoolConfig(over),
    unlistedLeaseGraceMs: graceMs,
  });
  pools.push(pool);
  return pool;
}

/** A promise the test opens when it wants, for FakeRuntime.gate. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

afterEach(async () => {
  for (const p of pools.splice(0)) await p.destroy();
});

describe("WorkerPool leases owned by their caller (FakeRuntime)", () => {
  it("an acquire cancelled before it starts takes nothing", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt);
    const ac = new AbortController();
    ac.abort();
    await expect(pool.acquire({ holderId: "g", signal: ac.signal })).rejects.toBeInstanceOf(
      AcquireCancelledError,
    );
    expect(pool.workers()).toEqual([]);
    expect(rt.calls).toEqual([]);
  });

  it("a caller that cancels while waiting at the limit gets nothing, and the released worker stays acquirable", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt, { maxWorkers: 1 });
    const a = await pool.acquire({ holderId: "g" });
    const ac = new AbortController();
    const waiting = pool.acquire({ holderId: "g", waitMs: 30_000, signal: ac.signal });
    await new Promise((r) => setTimeout(r, 20));
    const t0 = Date.now();
    ac.abort();
    await expect(waiting).rejects.toBeInstanceOf(AcquireCancelledError);
    expect(Date.now() - t0).toBeLessThan(1000);
    await pool.release(a.workerId, a.leaseId, "success");
    expect(pool.counts()).toMatchObject({ idle: 1, busy: 0 });
    const b = await pool.acquire({ holderId: "g" });
    expect(b).toMatchObject({ workerId: a.workerId, startKind: "warm" });
  });

  it("a thaw whose caller cancelled puts the worker back (idle, then paused) for the next caller", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt);
    const a = await pool.acquire({ holderId: "g" });
    await pool.release(a.workerId, a.leaseId, "success");
    await until(() => pool.counts().paused === 1, "paused");
    const g = gate();
    rt.gate = g.promise;
    const ac = new AbortController();
    const thawing = pool.acquire({ holderId: "g", signal: ac.signal });
    await until(() => rt.calls.includes(`resume ${a.workerId}`), "resume under way");
    ac.abort();
    rt.gate = undefined;
    g.open();
    await expect(thawing).rejects.toBeInstanceOf(AcquireCancelledError);
    expect(pool.workers().map((w) => [w.workerId, w.state, w.holderId])).toEqual([
      [a.workerId, "idle", undefined],
    ]);
    await until(() => pool.counts().paused === 1, "paused again");
    const b = await pool.acquire({ holderId: "g" });
    expect(b).toMatchObject({ workerId: a.workerId, startKind: "thawed" });
  });

  it("a cold start whose caller cancelled finishes and serves the next caller warm", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt, { maxWorkers: 1 });
    const g = gate();
    rt.gate = g.promise;
    const ac = new AbortController();
    const starting = pool.acquire({ holderId: "g", signal: ac.signal });
    await until(() => pool.counts().starting === 1, "cold start under way");
    ac.abort();
    rt.gate = undefined;
    g.open();
    await expect(starting).rejects.toBeInstanceOf(AcquireCancelledError);
    expect(pool.counts()).toMatchObject({ idle: 1, busy: 0, starting: 0 });
    const b = await pool.acquire({ holderId: "g" });
    expect(b.startKind).toBe("warm");
    expect(rt.calls.filter((c) => c.startsWith("start "))).toHaveLength(1);
  });

  it("a heartbeat listing its leases renews those and expires the holder's others, freeing their workers", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt, { maxWorkers: 3 }, 0);
    const kept = await pool.acquire({ holderId: "gw", leaseMs: 150 });
    const forgotten = await pool.acquire({ holderId: "gw" });
    const otherHolder = await pool.acquire({ holderId: "other" });
    expect(pool.heartbeat("gw", new Set([kept.leaseId]))).toEqual({ held: 1, expired: 1 });
    // The forgotten worker may be mid-invocation for a caller that gave up: it is removed, not reused.
    await until(() => !rt.status.has(forgotten.workerId), "forgotten worker removed");
    expect(rt.status.get(otherHolder.workerId)).toBe("running");
    // Its slot is free again, and a late release of it is harmless.
    await pool.release(forgotten.workerId, forgotten.leaseId, "success");
    const next = await pool.acquire({ holderId: "gw" });
    expect(next.startKind).toBe("cold");
    // The listed lease lives on through heartbeats, well past its 150 ms.
    for (let i = 0; i < 8; i++) {
      await new Promise((r) => setTimeout(r, 50));
      expect(pool.heartbeat("gw", new Set([kept.leaseId, next.leaseId]))).toEqual({ held: 2, expired: 0 });
    }
    expect(pool.workers().find((w) => w.workerId === kept.workerId)?.state).toBe("busy");
    // Listing nothing is meaningful: every lease of the holder goes.
    expect(pool.heartbeat("gw", new Set())).toEqual({ held: 0, expired: 2 });
    expect(pool.heartbeat("other")).toEqual({ held: 1, expired: 0 });
  });

  it("spares a lease granted within the grace: its answer may still be on the way to the holder", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt, {}, 300);
    const fresh = await pool.acquire({ holderId: "gw" });
    expect(pool.heartbeat("gw", new Set())).toEqual({ held: 1, expired: 0 });
    await new Promise((r) => setTimeout(r, 350));
    expect(pool.heartbeat("gw", new Set())).toEqual({ held: 0, expired: 1 });
    await until(() => !rt.status.has(fresh.workerId), "unlisted worker removed");
  });

  it("after close (agent stopping) a given-back worker and one that finishes starting are paused for the next agent, not removed", async () => {
    const rt = new FakeRuntime();
    const pool = makePool(rt, { maxWorkers: 2 });
    const busy = await pool.acquire({ holderId: "g" });
    const g = gate();
    rt.gate = g.promise;
    const starting = pool.acquire({ holderId: "g" }).catch((e: unknown) => e);
    await until(() => rt.calls.filter((c) => c.startsWith("start ")).length === 2, "the second start began");
    const closing = pool.close(); // waits for the start in progress
    g.open();
    rt.gate = undefined;
    await closing;
    await starting; // its caller is told the agent is stopping; the worker itself is kept
    await pool.release(busy.workerId, busy.leaseId, "success");
    await until(() => [...rt.status.values()].every((s) => s === "paused"), "both workers paused");
    expect(rt.status.size).toBe(2);
    expect(rt.calls.filter((c) => c.startsWith("remove "))).toEqual([]);
  });
});
