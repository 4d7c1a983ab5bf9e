import { BENCH_HOLDER } from "./agent-measurements.js";
import { BENCH_NAMESPACE } from "./bench-environment.js";
import type { BenchScenario } from "./bench-scenario.js";
import { ensureWarmFunction, WARM_FUNCTION, WARM_INVOKE_PATH } from "./warm-invoke-scenario.js";
import { WORKER_INVOKE_PATH, postFirstByte } from "./worker-http.js";
import { runWrk } from "./wrk-load.js";

/** DESIGN.md's target for throughput through the gateway vs direct, at c8 and c32. */
export const THROUGHPUT_RATIO_TARGET = 0.9;

/** Concurrency levels of the throughput runs. */
export const CONCURRENCIES = [1, 8, 32];

/**
 * Throughput of the no-op Node function with wrk (closed loop, keep-alive)
 * at concurrency 1, 8 and 32: through the gateway (which spreads the load over
 * as many workers as requests in flight), then straight to the same number of
 * warm workers, one connection per worker (a worker serves one invocation at
 * a time). Each run is preceded by an untimed warm-up at the same concurrency
 * (through the gateway: repeated until the pool stops growing).
 */
export const throughputScenario: BenchScenario = {
  id: "throughput",
  rows: CONCURRENCIES.flatMap((c) => [`throughput-c${c}-gateway`, `throughput-c${c}-direct`]),
  async run({ env, results, sizes }) {
    await ensureWarmFunction(env);
    const agent = env.agent!;
    const ref = { namespace: BENCH_NAMESPACE, name: WARM_FUNCTION };
    const warmS = Math.max(1, Math.round(sizes.throughputS / 4));
    for (const c of CONCURRENCIES) {
      if (env.hasGateway) {
        const gw = {
          url: `${env.gatewayUrl}${WARM_INVOKE_PATH}`,
          connections: c,
          threads: Math.min(c, 2),
          scriptDir: env.dir,
        };
        process.stderr.write(`  throughput-c${c}-gateway: ${sizes.throughputS} s\n`);
        // Warm up until the gateway stops adding workers (at most 4 rounds): the figure is warm throughput.
        for (let round = 0; round < 4; round++) {
          const before = agent.listWorkers(ref).length;
          await runWrk({ ...gw, durationS: warmS });
          if (agent.listWorkers(ref).length === before) break;
        }
        const r = await runWrk({ ...gw, durationS: sizes.throughputS });
        results.add({
          name: `throughput-c${c}-gateway`,
          unit: "ms",
          n: r.requests,
          p50: r.p50,
          p90: r.p90,
          p99: r.p99,
          max: r.max,
          rps: r.rps,
          errors: r.errors,
          note: `wrk -c${c} ${r.durationS}s via gateway (${env.gatewayProcesses()} processes), ${agent.listWorkers(ref).length} workers`,
        });
      }
      // Hold c warm workers (reusing the gateway's; cold-starting the rest) and load them directly.
      const held = [];
      for (let i = 0; i < c; i++)
        held.push(await agent.acquire(ref, { holderId: BENCH_HOLDER, leaseMs: 600_000 }));
      try {
        for (const w of held) await postFirstByte(w.address, performance.now(), { waitListening: true });
        const addresses = held.map((w) => w.address);
        const direct = {
          url: `http://${addresses[0]}${WORKER_INVOKE_PATH}`,
          connections: c,
          threads: c,
          targets: addresses,
          scriptDir: env.dir,
        };
        process.stderr.write(`  throughput-c${c}-direct: ${sizes.throughputS} s\n`);
        await runWrk({ ...direct, durationS: warmS });
        const r = await runWrk({ ...direct, durationS: sizes.throughputS });
        results.add({
          name: `throughput-c${c}-direct`,
          unit: "ms",
          n: r.requests,
          p50: r.p50,
          p90: r.p90,
          p99: r.p99,
          max: r.max,
          rps: r.rps,
          errors: r.errors,
          note: `wrk -c${c} ${r.durationS}s, one connection per worker`,
        });
      } finally {
        for (const w of held) await agent.release(w.workerId, w.leaseId, "success");
      }
      results.throughputRatio(
        `ratio-throughput-c${c}-gateway-vs-direct`,
        `throughput-c${c}-gateway`,
        `throughput-c${c}-direct`,
        c >= 8 ? THROUGHPUT_RATIO_TARGET : undefined,
      );
    }
  },
};
