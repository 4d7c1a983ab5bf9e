import { measureColdStarts } from "./agent-measurements.js";
import { summarize } from "./bench-results.js";
import type { BenchScenario } from "./bench-scenario.js";
import type { ColdStartSample } from "./cold-start-breakdown.js";

/**
 * Cold start with the image already local: a new worker (container, task,
 * network namespace, runtime init) until the first byte of its first
 * response, for the no-op Node function (nodejs24.x), the `provided`
 * shell function and the no-op Python function (python3.13: Node's emulator,
 * then CPython and awslambdaric).
 */
export const coldStartScenario: BenchScenario = {
  id: "cold-start",
  rows: ["cold-start-node", "cold-start-shell", "cold-start-python"],
  async run({ env, results, sizes }) {
    await env.prepareFunction({ name: "bench-cold-node", runtime: "nodejs24.x" });
    const nodeParts: ColdStartSample[] = [];
    const node = await measureColdStarts(
      env.agent!,
      "bench-cold-node",
      sizes.coldStarts,
      sizes.warmup,
      "cold-start-node",
      { of: env.breakdown, parts: nodeParts },
    );
    results.add(summarize("cold-start-node", "ms", node, { note: "new worker -> first byte, Node no-op" }));
    for (const row of env.breakdown.rows("node", nodeParts)) results.add(row);
    await env.destroyFunction("bench-cold-node");

    await env.prepareFunction({ name: "bench-cold-shell", runtime: "provided" });
    const shellParts: ColdStartSample[] = [];
    const shell = await measureColdStarts(
      env.agent!,
      "bench-cold-shell",
      sizes.coldStarts,
      sizes.warmup,
      "cold-start-shell",
      { of: env.breakdown, parts: shellParts },
    );
    results.add(
      summarize("cold-start-shell", "ms", shell, { note: "new worker -> first byte, provided sh" }),
    );
    for (const row of env.breakdown.rows("shell", shellParts)) results.add(row);
    await env.destroyFunction("bench-cold-shell");

    await env.prepareFunction({ name: "bench-cold-python", runtime: "python3.13" });
    const pythonParts: ColdStartSample[] = [];
    const python = await measureColdStarts(
      env.agent!,
      "bench-cold-python",
      sizes.coldStarts,
      sizes.warmup,
      "cold-start-python",
      { of: env.breakdown, parts: pythonParts },
    );
    results.add(
      summarize("cold-start-python", "ms", python, { note: "new worker -> first byte, python3.13 no-op" }),
    );
    for (const row of env.breakdown.rows("python", pythonParts)) results.add(row);
    await env.destroyFunction("bench-cold-python");
  },
};
