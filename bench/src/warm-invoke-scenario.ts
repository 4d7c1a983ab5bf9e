import { BENCH_HOLDER, progress } from "./agent-measurements.js";
import { BENCH_NAMESPACE, type BenchEnvironment } from "./bench-environment.js";
import { summarize } from "./bench-results.js";
import type { BenchScenario } from "./bench-scenario.js";
import { KeepAliveTarget, postFirstByte, WORKER_INVOKE_PATH } from "./worker-http.js";

/** The warm Node function of the warm and throughput scenarios; never paused while they run. */
export const WARM_FUNCTION = "bench-node";

/** Gateway path that invokes {@link WARM_FUNCTION}. */
export const WARM_INVOKE_PATH = `/2015-03-31/functions/${WARM_FUNCTION}/invocations`;

/** Prepares {@link WARM_FUNCTION} (idempotent) with one started, idle worker. */
export async function ensureWarmFunction(env: BenchEnvironment): Promise<void> {
  const ref = { namespace: BENCH_NAMESPACE, name: WARM_FUNCTION };
  if (env.agent!.pools().some((p) => p.ref.name === WARM_FUNCTION)) return;
  await env.prepareFunction({ name: WARM_FUNCTION, runtime: "nodejs24.x", pauseAfterMs: 600_000 });
  // Boot one worker and wait for its runtime, so the first gateway request is already warm.
  const w = await env.agent!.acquire(ref, { holderId: BENCH_HOLDER, leaseMs: 60_000 });
  await postFirstByte(w.address, performance.now(), { waitListening: true });
  await env.agent!.release(w.workerId, w.leaseId, "success");
}

/**
 * Warm invoke: the same idle worker, POSTed directly on its :8080 (the
 * limit) and through the gateway's Invoke API, alternating request by
 * request over keep-alive connections so both paths see the same machine
 * conditions. `warm-overhead` is the difference of the percentiles.
 */
export const warmInvokeScenario: BenchScenario = {
  id: "warm",
  rows: ["warm-direct", "warm-gateway", "warm-overhead"],
  async run({ env, results, sizes }) {
    await ensureWarmFunction(env);
    const ref = { namespace: BENCH_NAMESPACE, name: WARM_FUNCTION };
    const agent = env.agent!;
    const idle = agent.listWorkers(ref).filter((w) => w.state === "idle");
    if (idle.length !== 1) throw new Error(`warm: expected one idle worker, found ${idle.length}`);
    const direct = new KeepAliveTarget(`http://${idle[0].address}`, WORKER_INVOKE_PATH);
    const gateway = env.hasGateway ? new KeepAliveTarget(env.gatewayUrl, WARM_INVOKE_PATH) : undefined;
    // Without a gateway the worker is held under a lease, as the gateway would hold it.
    const held = gateway ? undefined : await agent.acquire(ref, { holderId: BENCH_HOLDER, leaseMs: 600_000 });
    const d: number[] = [];
    const g: number[] = [];
    try {
      const warmup = Math.max(100, sizes.warmup);
      for (let i = 0; i < warmup + sizes.warm; i++) {
        const a = await direct.timedPost();
        const b = gateway ? await gateway.timedPost() : 0;
        if (i < warmup) continue;
        d.push(a);
        if (gateway) g.push(b);
        progress("warm", i - warmup, sizes.warm, 250);
      }
    } finally {
      await direct.close();
      await gateway?.close();
      if (held) await agent.release(held.workerId, held.leaseId, "success");
    }
    const workers = agent.listWorkers(ref).length;
    const rowDirect = summarize("warm-direct", "ms", d, { note: "keep-alive POST to the worker's :8080" });
    results.add(rowDirect);
    if (!gateway) return;
    const rowGateway = summarize("warm-gateway", "ms", g, {
      note: `same worker through the gateway Invoke API${workers !== 1 ? ` (pool grew to ${workers} workers)` : ""}`,
    });
    results.add(rowGateway);
    results.add({
      name: "warm-overhead",
      unit: "ms",
      n: g.length,
      p50: round3(rowGateway.p50 - rowDirect.p50),
      p90: round3(rowGateway.p90 - rowDirect.p90),
      p99: round3(rowGateway.p99 - rowDirect.p99),
      max: round3(rowGateway.max - rowDirect.max),
      note: `warm-gateway minus warm-direct, percentile by percentile; ${target(
        rowGateway.p50 - rowDirect.p50 <= WARM_OVERHEAD_TARGET_MS,
        `p50 <= ${WARM_OVERHEAD_TARGET_MS} ms`,
      )}`,
    });
  },
};

/** DESIGN.md's target for the gateway's warm overhead (p50, ms). */
export const WARM_OVERHEAD_TARGET_MS = 0.5;

/** "target …: met" or "target …: MISSED", printed beside the figure. */
export function target(met: boolean, what: string): string {
  return `target ${what}: ${met ? "met" : "MISSED"}`;
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
