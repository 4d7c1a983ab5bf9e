import { measureColdStarts } from "./agent-measurements.js";
import type { BenchEnvironment } from "./bench-environment.js";
import { summarize, type BenchResults } from "./bench-results.js";
import type { BenchScenario, BenchSizes } from "./bench-scenario.js";
import type { ColdStartSample } from "./cold-start-breakdown.js";
import { target } from "./warm-invoke-scenario.js";

/** DESIGN.md targets (p50, ms) of a cold start, local image, to first byte. */
const TARGET_MS = { node: 100, shell: 80, python: 100 } as const;
/** The figures users compare with (issue 15). */
const ANCHORS = "anchors: Fission pool manager p50 73-115 ms (kind), AWS Lambda Node.js init ~170-200 ms";

/**
 * Cold start with the image already local, for the no-op Node function
 * (nodejs24.x), the `provided` shell function and the no-op Python function
 * (python3.13: Node's emulator, then CPython and awslambdaric), each side by side in one run:
 * `cold-start-<rt>` is a worker made from a ready generic sandbox (the agent's
 * default: network, container, emulator and, for Node, the runtime client
 * already up; specialised on acquire), `cold-start-<rt>-unpooled` a brand-new
 * worker (sandbox pool off: container, task, network namespace, runtime init).
 * Both until the first byte of the first response; the phase rows say where the
 * time went.
 */
export const coldStartScenario: BenchScenario = {
  id: "cold-start",
  rows: [
    "cold-start-node",
    "cold-start-node-unpooled",
    "cold-start-shell",
    "cold-start-shell-unpooled",
    "cold-start-python",
    "cold-start-python-unpooled",
    "cold-start-phase-*",
  ],
  async run({ env, results, sizes }) {
    await runtimeRows(env, results, sizes, "node", "nodejs24.x");
    await runtimeRows(env, results, sizes, "shell", "provided");
    await runtimeRows(env, results, sizes, "python", "python3.13");
  },
};

async function runtimeRows(
  env: BenchEnvironment,
  results: BenchResults,
  sizes: BenchSizes,
  label: "node" | "shell" | "python",
  runtime: "nodejs24.x" | "provided" | "python3.13",
): Promise<void> {
  const name = `bench-cold-${label}`;
  const what = { node: "Node no-op", shell: "provided sh", python: "python3.13 no-op" }[label];
  const sandboxes = env.agent!.sandboxes;
  await env.prepareFunction({ name, runtime });
  if (sandboxes) {
    const parts: ColdStartSample[] = [];
    const ms = await measureColdStarts(
      env.agent!,
      name,
      sizes.coldStarts,
      sizes.warmup,
      `cold-start-${label}`,
      { of: env.breakdown, parts },
      true,
    );
    const met = summarize("x", "ms", ms).p50 <= TARGET_MS[label];
    results.add(
      summarize(`cold-start-${label}`, "ms", ms, {
        note: `ready generic sandbox specialised -> first byte, ${what}; ${target(met, `p50 <= ${TARGET_MS[label]} ms`)}; ${ANCHORS}`,
      }),
    );
    for (const row of env.breakdown.rows(`${label}-sandbox`, parts)) results.add(row);
  }
  // The same without the pool: what every cold start cost before, and costs when the pool is empty.
  const size = sandboxes?.sizePerTemplate ?? 0;
  await sandboxes?.resize(0);
  try {
    const parts: ColdStartSample[] = [];
    const ms = await measureColdStarts(
      env.agent!,
      name,
      sizes.coldStarts,
      sizes.warmup,
      `cold-start-${label}-unpooled`,
      { of: env.breakdown, parts },
    );
    results.add(
      summarize(sandboxes ? `cold-start-${label}-unpooled` : `cold-start-${label}`, "ms", ms, {
        note: `new worker (no sandbox) -> first byte, ${what}`,
      }),
    );
    for (const row of env.breakdown.rows(label, parts)) results.add(row);
  } finally {
    await sandboxes?.resize(size);
  }
  await env.destroyFunction(name);
  results.ratio(
    `ratio-cold-start-${label}-unpooled-vs-sandbox`,
    `cold-start-${label}-unpooled`,
    `cold-start-${label}`,
  );
}
