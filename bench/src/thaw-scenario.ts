import { measureThaws } from "./agent-measurements.js";
import { summarize } from "./bench-results.js";
import type { BenchScenario } from "./bench-scenario.js";

/** Thaw: a paused (frozen) Node worker, acquired from the agent and POSTed, until the first response byte. */
export const thawScenario: BenchScenario = {
  id: "thaw",
  rows: ["thaw"],
  async run({ env, results, sizes }) {
    await env.prepareFunction({ name: "bench-thaw", runtime: "nodejs24.x", pauseAfterMs: 10 });
    const samples = await measureThaws(env.agent!, "bench-thaw", sizes.thaws, sizes.warmup, "thaw");
    results.add(
      summarize("thaw", "ms", samples, {
        note: "paused -> acquire (containerd resume) + POST -> first byte",
      }),
    );
    await env.destroyFunction("bench-thaw");
  },
};
