// The function gets its whole memorySize, and /tmp is disk, not memory: a real NodeAgent on
// the test containerd runs nodejs24.x workers of the runtime image ESB builds (emulator +
// Node runtime client), invoked over HTTP at their IP as the gateway does.
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { createLogger } from "@esb/common";
import { FunctionCodeSchema, FunctionSpecSchema } from "@esb/common/gen/esb/agent/v1/agent_pb";
import { LocalBuildImageResolver, NodeAgent } from "./node-agent.js";
import { PLATFORM_MEMORY_MB } from "./sandbox/function-memory.js";
import {
  ContainerdTestFixture,
  TEST_CONTAINERDS,
  testContainerdSocket,
  type TestContainerd,
} from "./testing/containerd-test-fixture.js";
import { invokeWorker, MEMORY_PROBE_HANDLER, reportOf } from "./testing/memory-probe.js";

const log = createLogger("function-memory-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });
const HOLDER = "function-memory-test";
const MB = 1024 * 1024;

const containerds = Object.keys(TEST_CONTAINERDS) as TestContainerd[];

describe.each(containerds)("a function's memory and /tmp (real containerd %s, nodejs24.x workers)", (c) => {
  const fx = new ContainerdTestFixture({ socket: testContainerdSocket(c) });
  const stateDir = mkdtempSync(join(tmpdir(), "esb-function-memory-"));
  let agent: NodeAgent;
  const ref = { namespace: "default", name: "memory-probe" };

  const memoryCgroup = (workerId: string) => join("/sys/fs/cgroup/memory", fx.namespace, workerId);
  const acquire = () => agent.acquire(ref, { holderId: HOLDER, leaseMs: 120_000, waitMs: 60_000 });

  beforeAll(async () => {
    agent = new NodeAgent({
      nodeName: `node-${fx.id}`,
      runtime: fx.runtime(),
      network: fx.network,
      stateDir,
      imageResolver: new LocalBuildImageResolver(),
      logger: log,
    });
    await agent.start();
    await agent.prepareFunction(
      create(FunctionSpecSchema, {
        ref,
        generation: 1n,
        revision: "mem1",
        runtime: "nodejs24.x",
        handler: "index.handler",
        code: create(FunctionCodeSchema, {
          files: { "index.mjs": new TextEncoder().encode(MEMORY_PROBE_HANDLER) },
        }),
        memorySizeMb: 128,
        timeoutSeconds: 60,
        ephemeralStorageMb: 512,
        scaling: { pauseAfterMs: 600_000, keepWarmSeconds: 600 },
      }),
    );
  }, 300_000);

  afterAll(async () => {
    if (agent) {
      for (const p of agent.pools()) await agent.destroyFunction(p.ref);
      await agent.close();
    }
    await fx.teardown();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it("limits the worker to memorySize + the platform's allowance and the function to memorySize", async () => {
    const w = await acquire();
    try {
      const res = await invokeWorker(w.address, { op: "alloc", mb: 1 });
      expect(res.status).toBe(200);
      const cg = memoryCgroup(w.workerId);
      expect(Number(readFileSync(join(cg, "memory.limit_in_bytes"), "utf8"))).toBe(
        (128 + PLATFORM_MEMORY_MB) * MB,
      );
      expect(Number(readFileSync(join(cg, "function", "memory.limit_in_bytes"), "utf8"))).toBe(128 * MB);
      // The runtime (and only it) is in the function's cgroup; the emulator stays in the worker's.
      const fnPids = readFileSync(join(cg, "function", "cgroup.procs"), "utf8")
        .trim()
        .split("\n");
      expect(fnPids.length).toBeGreaterThanOrEqual(1);
      const workerPids = readFileSync(join(cg, "cgroup.procs"), "utf8").trim().split("\n");
      expect(workerPids.filter((p) => fnPids.includes(p))).toEqual([]);
    } finally {
      await agent.release(w.workerId, w.leaseId, "success");
    }
  });

  it("lets a 128 MB function allocate 110 MB of its own, and REPORT shows its peak", async () => {
    const w = await acquire();
    try {
      const res = await invokeWorker(w.address, { op: "alloc", mb: 110 }, { tail: true });
      expect(res.status).toBe(200);
      expect(res.functionError).toBeUndefined();
      expect(JSON.parse(res.body)).toEqual({ ok: true, mb: 110 });
      const report = reportOf(res.log);
      expect(report.memorySizeMb).toBe(128);
      // The function's own peak: what it allocated plus its runtime, never more than its size.
      expect(report.maxMemoryUsedMb).toBeGreaterThanOrEqual(110);
      expect(report.maxMemoryUsedMb).toBeLessThanOrEqual(128);
      process.stderr.write(
        `function-memory (containerd ${c}): 110 MB allocated, Max Memory Used ${report.maxMemoryUsedMb} MB\n`,
      );
    } finally {
      await agent.release(w.workerId, w.leaseId, "success");
    }
  });

  it("echoes a 6 MB payload 10 times in a row", async () => {
    const payload = JSON.stringify({ op: "echo", data: "x".repeat(6 * 1000 * 1000 - 100) });
    expect(payload.length).toBeLessThan(6 * MB);
    const w = await acquire();
    try {
      for (let i = 0; i < 10; i++) {
        const res = await invokeWorker(w.address, payload);
        expect({ i, status: res.status, error: res.functionError }).toEqual({
          i,
          status: 200,
          error: undefined,
        });
        expect(res.body.length).toBe(payload.length);
      }
    } finally {
      await agent.release(w.workerId, w.leaseId, "success");
    }
  });

  it("keeps 200 MB written to /tmp on disk, not in the function's memory", async () => {
    const w = await acquire();
    try {
      const res = await invokeWorker(w.address, { op: "tmp", mb: 200 });
      expect(res.functionError).toBeUndefined();
      const out = JSON.parse(res.body) as { ok: boolean; size: number; mount: string };
      expect(out.size).toBe(200 * MB);
      expect(out.mount.split(" ")[2]).not.toBe("tmpfs");
      // Page cache of a disk file can be written back and reclaimed; tmpfs pages (shmem) cannot.
      const stat = readFileSync(join(memoryCgroup(w.workerId), "function", "memory.stat"), "utf8");
      const shmem = Number(/^total_shmem (\d+)$/m.exec(stat)?.[1]);
      expect(shmem).toBeLessThan(8 * MB);
      // The function still has its memory afterwards.
      expect((await invokeWorker(w.address, { op: "alloc", mb: 100 })).functionError).toBeUndefined();
    } finally {
      await agent.release(w.workerId, w.leaseId, "success");
    }
  });

  it("answers Runtime.OutOfMemory past memorySize, and the worker is replaced", async () => {
    const w = await acquire();
    const res = await invokeWorker(w.address, { op: "alloc", mb: 200 });
    await agent.release(w.workerId, w.leaseId, "function-error");
    expect(res.status).toBe(200);
    expect(res.functionError).toBe("Unhandled");
    const body = JSON.parse(res.body) as { errorType: string; errorMessage: string };
    expect(body.errorType).toBe("Runtime.OutOfMemory");
    expect(body.errorMessage).toMatch(/Runtime exited with error: signal: killed/);
    // The worker ended and is gone: the next invocation runs in a new one, with its memory.
    const end = Date.now() + 30_000;
    while (agent.listWorkers(ref).some((x) => x.workerId === w.workerId)) {
      if (Date.now() > end) throw new Error(`worker ${w.workerId} was not replaced`);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(existsSync(memoryCgroup(w.workerId))).toBe(false);
    expect(existsSync(join(fx.dir, "runtime", ".worker-tmp", w.workerId))).toBe(false);
    const next = await acquire();
    try {
      expect(next.workerId).not.toBe(w.workerId);
      const again = await invokeWorker(next.address, { op: "alloc", mb: 100 });
      expect(again.functionError).toBeUndefined();
    } finally {
      await agent.release(next.workerId, next.leaseId, "success");
    }
  });
});
