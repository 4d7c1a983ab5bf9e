import { BENCH_HOLDER, progress } from "./agent-measurements.js";
import { BENCH_NAMESPACE } from "./bench-environment.js";
import { summarize } from "./bench-results.js";
import type { BenchScenario } from "./bench-scenario.js";
import { postFirstByte } from "./worker-http.js";

/**
 * Container per request, what a naive local emulator does (SAM local's
 * default): for each request create and start a container, invoke it once,
 * delete it — timed from the request until the container is gone, on the
 * same containerd and with the same (already optimised) container path as
 * ESB's cold start, so it is a lower bound for such emulators. Each sample
 * takes about a second, hence the smaller n.
 */
export const perRequestScenario: BenchScenario = {
  id: "per-request",
  rows: ["per-request"],
  async run({ env, results, sizes }) {
    const name = "bench-per-request";
    await env.prepareFunction({ name, runtime: "nodejs24.x" });
    const agent = env.agent!;
    const ref = { namespace: BENCH_NAMESPACE, name };
    const samples: number[] = [];
    for (let i = 0; i < 1 + sizes.perRequest; i++) {
      const t0 = performance.now();
      const w = await agent.acquire(ref, { holderId: BENCH_HOLDER, leaseMs: 120_000 });
      try {
        await postFirstByte(w.address, t0, { waitListening: true });
      } finally {
        // Released as failed: the pool deletes the container before resolving.
        await agent.release(w.workerId, w.leaseId, "worker-failed");
      }
      const ms = performance.now() - t0;
      if (i === 0) continue; // warm-up
      samples.push(ms);
      progress("per-request", i - 1, sizes.perRequest, 5);
    }
    results.add(
      summarize("per-request", "ms", samples, { note: "create+start+invoke+delete a container per request" }),
    );
    await env.destroyFunction(name);
  },
};
