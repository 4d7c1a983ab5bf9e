// @esb-test unit: needs no test environment (`make test-unit` runs it).
// The sandbox pool's bookkeeping on the FakeRuntime (see fake-runtime.ts for why a fake here):
// bounded per template and in templates, never ahead of a waiting worker start, refilled after
// a take, and empty after close/retain; and a WorkerPool that takes a sandbox specialises it.
import { describe, it, expect, afterEach } from "@jest/globals";
import type { WorkerSpec } from "../runtime/runtime.js";
import { FakeRuntime, fakePoolConfig } from "./fake-runtime.js";
import { SANDBOX_ID_PREFIX, SandboxPool, type SandboxEvent, type SandboxTemplate } from "./sandbox-pool.js";
import { StartLimiter } from "./start-limiter.js";
import { WorkerPool, type PoolEvent } from "./worker-pool.js";

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for: ${what}`);
}

function template(key: string, memoryMb = 128): SandboxTemplate {
  return {
    key,
    spec: (id): WorkerSpec => ({
      id,
      image: { ref: `img-${key}`, digest: "sha256:0", config: fakeImageConfig() },
      labels: {},
      env: {},
      memoryMb,
      platformMemoryMb: 96,
      tmpMb: 64,
      standby: true,
    }),
  };
}

function fakeImageConfig() {
  return { entrypoint: [], cmd: [], env: [], workingDir: "/", user: "" };
}

const pools: SandboxPool[] = [];
function makeSandboxes(
  rt: FakeRuntime,
  size: number,
  more: Partial<ConstructorParameters<typeof SandboxPool>[0]> = {},
) {
  const events: SandboxEvent[] = [];
  const pool = new SandboxPool({
    runtime: rt,
    size,
    refillDelayMs: 0,
    onEvent: (e) => events.push(e),
    ...more,
  });
  pools.push(pool);
  return { pool, events };
}

const ready = (p: SandboxPool, key: string) => p.counts().find((c) => c.template === key)?.ready ?? 0;

afterEach(async () => {
  for (const p of pools.splice(0)) await p.close();
});

describe("SandboxPool (FakeRuntime)", () => {
  it("keeps `size` standby sandboxes per template and refills after a take", async () => {
    const rt = new FakeRuntime();
    const { pool, events } = makeSandboxes(rt, 2);
    const t = template("a");
    pool.ensure(t);
    await until(() => ready(pool, "a") === 2, "two ready sandboxes");
    expect(rt.standby.size).toBe(2);
    const id = pool.take(t);
    expect(id).toMatch(new RegExp(`^${SANDBOX_ID_PREFIX}`));
    // Taken: no longer the pool's (the resync would otherwise see it as the pool's twice).
    expect(pool.ids()).not.toContain(id);
    await until(() => ready(pool, "a") === 2, "refilled");
    expect(rt.standby.size).toBe(3);
    expect(events.filter((e) => e.type === "taken")).toHaveLength(1);
  });

  it("says so when none is ready (size 0: off, no start at all)", async () => {
    const rt = new FakeRuntime();
    const { pool, events } = makeSandboxes(rt, 0);
    expect(pool.take(template("a"))).toBeUndefined();
    await new Promise((r) => setTimeout(r, 30));
    expect(rt.calls).toEqual([]);
    expect(events).toEqual([]);
  });

  it("keeps only the most recently used templates and removes the others' sandboxes", async () => {
    const rt = new FakeRuntime();
    const { pool } = makeSandboxes(rt, 1, { maxTemplates: 2 });
    for (const k of ["a", "b"]) pool.ensure(template(k));
    await until(() => ready(pool, "a") === 1 && ready(pool, "b") === 1, "a and b filled");
    const [aId] = [...rt.standby].filter((id) => pool.ids().includes(id));
    pool.ensure(template("c"));
    await until(() => ready(pool, "c") === 1, "c filled");
    expect(
      pool
        .counts()
        .map((c) => c.template)
        .sort(),
    ).toEqual(["b", "c"]);
    await until(() => !rt.status.has(aId) || rt.calls.includes(`remove ${aId}`), "a's sandbox removed");
    expect(pool.ids()).toHaveLength(2);
  });

  it("starts nothing while a worker start waits for the start limiter", async () => {
    const rt = new FakeRuntime();
    const limiter = new StartLimiter(1);
    let release!: () => void;
    const busy = limiter.run(() => new Promise<void>((r) => (release = r)));
    const { pool } = makeSandboxes(rt, 1, { startLimiter: limiter });
    pool.ensure(template("a"));
    await new Promise((r) => setTimeout(r, 150));
    expect(rt.calls.filter((c) => c.startsWith("start"))).toEqual([]);
    release();
    await busy;
    await until(() => ready(pool, "a") === 1, "filled once the slot is free");
  });

  it("drops templates no function uses (retain) and everything on close, and replaces an exited sandbox", async () => {
    const rt = new FakeRuntime();
    const { pool } = makeSandboxes(rt, 1);
    pool.ensure(template("a"));
    pool.ensure(template("b"));
    await until(() => ready(pool, "a") === 1 && ready(pool, "b") === 1, "filled");
    const exited = pool.ids()[0];
    expect(pool.workerExited(exited, "crashed")).toBe(true);
    expect(pool.workerExited("not-a-sandbox", "crashed")).toBe(false);
    await until(() => pool.ids().length === 2 && !pool.ids().includes(exited), "replaced");
    await pool.retain(new Set(["b"]));
    expect(pool.counts().map((c) => c.template)).toEqual(["b"]);
    await pool.close();
    expect(pool.ids()).toEqual([]);
    expect([...rt.status.keys()]).toEqual([]);
  });

  it("resize(0) removes the ready ones and a start finishing afterwards is not kept", async () => {
    const rt = new FakeRuntime();
    const { pool } = makeSandboxes(rt, 2);
    let open!: () => void;
    rt.gate = new Promise<void>((r) => (open = r));
    pool.ensure(template("a"));
    await until(() => rt.calls.some((c) => c.startsWith("start")), "a start in progress");
    await pool.resize(0);
    open();
    rt.gate = undefined;
    await until(() => (pool.counts()[0]?.starting ?? 0) === 0, "start settled");
    expect(ready(pool, "a")).toBe(0);
    await until(() => rt.status.size === 0, "its sandbox removed");
  });
});

describe("WorkerPool cold starts from sandboxes (FakeRuntime)", () => {
  it("specialises a taken sandbox instead of starting a worker, under the sandbox's id", async () => {
    const rt = new FakeRuntime();
    const { pool: sandboxes } = makeSandboxes(rt, 1);
    const t = template("a");
    sandboxes.ensure(t);
    await until(() => ready(sandboxes, "a") === 1, "filled");
    const events: PoolEvent[] = [];
    const pool = new WorkerPool({
      waitReady: async () => undefined,
      functionKey: "ns/fn",
      runtime: rt,
      config: fakePoolConfig({ takeSandbox: () => sandboxes.take(t) }),
      onEvent: (e) => events.push(e),
    });
    const sandboxId = sandboxes.ids()[0];
    const w = await pool.acquire({ holderId: "h" });
    expect(w).toMatchObject({ workerId: sandboxId, startKind: "cold" });
    expect(rt.calls.filter((c) => c.startsWith("start")).length).toBe(
      rt.calls.filter((c) => c.startsWith("start esb-sandbox-")).length,
    );
    expect(rt.calls).toContain(`specialise ${sandboxId}`);
    expect(events.find((e) => e.type === "cold-start")).toMatchObject({ ok: true, fromSandbox: true });
    // The next one finds no ready sandbox yet or the refilled one; either way it is served.
    await pool.release(w.workerId, w.leaseId, "worker-failed");
    expect(rt.status.has(sandboxId)).toBe(false);
    await pool.destroy();
  });

  it("starts a new worker when no sandbox is ready", async () => {
    const rt = new FakeRuntime();
    const pool = new WorkerPool({
      waitReady: async () => undefined,
      functionKey: "ns/fn",
      runtime: rt,
      config: fakePoolConfig({ takeSandbox: () => undefined }),
    });
    const w = await pool.acquire({ holderId: "h" });
    expect(w.workerId.startsWith(SANDBOX_ID_PREFIX)).toBe(false);
    expect(rt.calls).toEqual([`start ${w.workerId}`]);
    await pool.destroy();
  });
});
