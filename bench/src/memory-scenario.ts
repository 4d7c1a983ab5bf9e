import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { FunctionCodeSchema } from "@esb/common/gen/esb/agent/v1/agent_pb";
import type { NodeAgent } from "@esb/agent/node-agent";
import { PLATFORM_MEMORY_MB } from "@esb/agent/sandbox/function-memory";
import { invokeWorker, MEMORY_PROBE_HANDLER, reportOf } from "@esb/agent/testing/memory-probe";
import { BENCH_HOLDER } from "./agent-measurements.js";
import { BENCH_NAMESPACE } from "./bench-environment.js";
import { round, summarize } from "./bench-results.js";
import type { BenchScenario } from "./bench-scenario.js";

const NAME = "bench-memory";
const MEMORY_MB = 128;
const MB = 1024 * 1024;
/** Workers of the probe function that have served an invocation (their high-water marks are taken). */
const served = new Set<string>();

/**
 * One invocation on a worker of the probe function; the worker goes back to the pool (or
 * is gone after an OOM). With `fresh`, workers that served before are removed until a new one comes.
 */
async function invokeProbe(agent: NodeAgent, event: unknown, tail = false, fresh = false) {
  const ref = { namespace: BENCH_NAMESPACE, name: NAME };
  const acquire = () => agent.acquire(ref, { holderId: BENCH_HOLDER, leaseMs: 120_000, waitMs: 60_000 });
  let w = await acquire();
  while (fresh && served.has(w.workerId)) {
    await agent.release(w.workerId, w.leaseId, "worker-failed");
    w = await acquire();
  }
  served.add(w.workerId);
  try {
    const res = await invokeWorker(w.address, event, { tail });
    await agent.release(w.workerId, w.leaseId, res.functionError ? "function-error" : "success");
    return { ...res, workerId: w.workerId };
  } catch (err) {
    await agent.release(w.workerId, w.leaseId, "worker-failed");
    throw err;
  }
}

async function cgroupMb(file: string): Promise<number> {
  return round(Number((await readFile(file, "utf8")).trim()) / MB);
}

/**
 * Memory: what a 128 MB Node function can really use. `memory-usable-128`: the
 * largest allocation (1 MiB Buffers, touched; bisected in 1 MiB steps) that
 * completes; beyond it the function gets Runtime.OutOfMemory. `memory-max-used-128`:
 * REPORT's Max Memory Used after allocating that much. `memory-echo-6mb`: a 6 MB
 * payload echoed back to back on one worker (errors must be 0), and
 * `memory-worker-peak-6mb`: that worker's cgroup high-water marks afterwards
 * (the worker's, limit memorySize + the platform's allowance; the function's in the note).
 */
export const memoryScenario: BenchScenario = {
  id: "memory",
  rows: ["memory-usable-128", "memory-max-used-128", "memory-echo-6mb", "memory-worker-peak-6mb"],
  async run({ env, results, sizes }) {
    const agent = env.agent!;
    const spec = env.functionSpec({ name: NAME, runtime: "nodejs24.x", pauseAfterMs: 600_000 });
    spec.code = create(FunctionCodeSchema, { files: { "index.mjs": Buffer.from(MEMORY_PROBE_HANDLER) } });
    spec.memorySizeMb = MEMORY_MB;
    spec.timeoutSeconds = 60;
    await agent.prepareFunction(spec);
    try {
      let lo = 32; // known to fit
      let hi = MEMORY_MB + 32; // known not to fit
      let probes = 0;
      while (hi - lo > 1) {
        const mid = Math.floor((lo + hi) / 2);
        const res = await invokeProbe(agent, { op: "alloc", mb: mid });
        probes++;
        const type = res.functionError ? (JSON.parse(res.body) as { errorType?: string }).errorType : "";
        process.stderr.write(`  memory: alloc ${mid} MB -> ${type || "ok"}\n`);
        if (res.functionError && type !== "Runtime.OutOfMemory")
          throw new Error(`memory: alloc ${mid} MB failed with ${res.body}`);
        if (res.functionError) hi = mid;
        else lo = mid;
      }
      results.add({
        ...summarize("memory-usable-128", "MB", [lo]),
        n: probes,
        note: `largest allocation a ${MEMORY_MB} MB Node function completes (limit ${MEMORY_MB} MB; target >= 110)`,
      });
      // A fresh worker, so the REPORT figure is this allocation's peak.
      const report = reportOf((await invokeProbe(agent, { op: "alloc", mb: lo }, true, true)).log);
      results.add(
        summarize("memory-max-used-128", "MB", [report.maxMemoryUsedMb], {
          note: `REPORT Max Memory Used after allocating ${lo} MB (Memory Size ${report.memorySizeMb} MB)`,
        }),
      );
      const payload = JSON.stringify({ op: "echo", data: "x".repeat(6 * 1000 * 1000 - 100) });
      const n = Math.max(10, Math.round(sizes.warm / 50));
      const ms: number[] = [];
      let errors = 0;
      let workerId = "";
      for (let i = 0; i < n; i++) {
        const t0 = performance.now();
        const res = await invokeProbe(agent, payload, false, i === 0);
        ms.push(performance.now() - t0);
        if (res.status !== 200 || res.functionError || res.body.length !== payload.length) errors++;
        workerId = res.workerId;
      }
      results.add(
        summarize("memory-echo-6mb", "ms", ms, {
          errors,
          note: `6 MB payload echoed by a ${MEMORY_MB} MB function, back to back (errors must be 0)`,
        }),
      );
      const cg = join("/sys/fs/cgroup/memory", env.namespace, workerId);
      const workerPeak = await cgroupMb(join(cg, "memory.max_usage_in_bytes"));
      const functionPeak = await cgroupMb(join(cg, "function", "memory.max_usage_in_bytes"));
      results.add(
        summarize("memory-worker-peak-6mb", "MB", [workerPeak], {
          note: `worker cgroup peak after the echoes (limit ${MEMORY_MB + PLATFORM_MEMORY_MB} MB); function's own ${functionPeak} MB (limit ${MEMORY_MB})`,
        }),
      );
    } finally {
      await agent.destroyFunction({ namespace: BENCH_NAMESPACE, name: NAME });
    }
  },
};
