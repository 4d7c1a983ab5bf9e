#!/usr/bin/env node
import "./quiet-logs.js";
import { existsSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { BenchEnvironment, REPO_ROOT } from "./bench-environment.js";
import { BenchResults } from "./bench-results.js";
import { FULL_SIZES, QUICK_SIZES, type BenchScenario } from "./bench-scenario.js";
import { agentRpcScenario } from "./agent-rpc-scenario.js";
import { coldStartScenario } from "./cold-start-scenario.js";
import { densityScenario } from "./density-scenario.js";
import { functionScaleScenario } from "./function-scale-scenario.js";
import { memoryScenario } from "./memory-scenario.js";
import { dockerModeScenario } from "./docker-mode-scenario.js";
import { perRequestScenario } from "./per-request-scenario.js";
import { thawScenario } from "./thaw-scenario.js";
import { throughputScenario } from "./throughput-scenario.js";
import { warmInvokeScenario } from "./warm-invoke-scenario.js";
import { wrkAvailable } from "./wrk-load.js";

/** Every scenario, in the order they run. */
export const SCENARIOS: BenchScenario[] = [
  coldStartScenario,
  thawScenario,
  agentRpcScenario,
  warmInvokeScenario,
  perRequestScenario,
  throughputScenario,
  densityScenario,
  memoryScenario,
  functionScaleScenario,
  dockerModeScenario,
];

const HELP = `make bench / node bench/dist/main.js: ESB's performance figures (DESIGN.md targets)

Options:
  --only a,b    run only these scenarios: ${SCENARIOS.map((s) => s.id).join(", ")}
  --quick       short runs (smoke test; figures are not comparable)
  --out FILE    results file (default bench/results.json)
  --no-gateway  skip the gateway rows
  --help

Runs as root: starts its own containerd + registry (+ podman for docker mode)
under /tmp/esb-bench-<id>, a CNI bridge esbb<id> on its own /24, the agent
in this process and the gateway (gateway/dist/main.js) in a child process;
removes all of it at the end or on Ctrl-C.
`;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      only: { type: "string" },
      quick: { type: "boolean", default: false },
      out: { type: "string" },
      "no-gateway": { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const only = values.only
    ?.split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  for (const id of only ?? []) {
    if (!SCENARIOS.some((s) => s.id === id)) {
      process.stderr.write(
        `bench: unknown scenario "${id}" (one of ${SCENARIOS.map((s) => s.id).join(", ")})\n`,
      );
      return 2;
    }
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write("bench: must run as root (containerd, CNI bridges, cgroups)\n");
    return 2;
  }
  let selected = SCENARIOS.filter((s) => !only || only.includes(s.id));
  const podman = selected.some((s) => s.needsPodman) && hasCommand("podman");
  if (!podman && selected.some((s) => s.needsPodman)) {
    process.stderr.write("bench: podman is not installed: docker-mode rows skipped\n");
    selected = selected.filter((s) => !s.needsPodman);
  }
  if (selected.includes(throughputScenario) && !(await wrkAvailable())) {
    process.stderr.write("bench: wrk is missing (apt-get install wrk): throughput rows skipped\n");
    selected = selected.filter((s) => s !== throughputScenario);
  }
  const gateway = !values["no-gateway"] && existsSync(BenchEnvironment.gatewayMain());
  if (!gateway && !values["no-gateway"]) {
    process.stderr.write(
      `bench: ${BenchEnvironment.gatewayMain()} is missing (build the gateway): gateway rows skipped\n`,
    );
  }
  const sizes = values.quick ? QUICK_SIZES : FULL_SIZES;
  const out = values.out ?? join(REPO_ROOT, "bench", "results.json");
  const kube = selected.some((s) => s.needsKube);
  const env = new BenchEnvironment({ podman, gateway, kube });
  const results = new BenchResults();

  let stopping = false;
  const onSignal = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`\nbench: ${signal}: cleaning up ${env.dir}\n`);
    void env.down().finally(() => process.exit(130));
  };
  process.on("SIGINT", () => onSignal("SIGINT"));
  process.on("SIGTERM", () => onSignal("SIGTERM"));

  const started = Date.now();
  let failed = 0;
  try {
    process.stderr.write(
      `bench: ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB; environment in ${env.dir} (bridge ${env.bridge}, ${env.subnet})\n`,
    );
    await env.up();
    process.stderr.write(
      `bench: environment up in ${((Date.now() - started) / 1000).toFixed(1)} s (agent ${env.agentUrl}${env.hasGateway ? `, gateway ${env.gatewayUrl}` : ""})\n`,
    );
    for (const s of selected) {
      if (stopping) break;
      const t0 = Date.now();
      process.stderr.write(`bench: ${s.id} …\n`);
      try {
        await s.run({ env, results, sizes });
        process.stderr.write(`bench: ${s.id} done in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
      } catch (err) {
        failed++;
        process.stderr.write(`bench: ${s.id} FAILED: ${(err as Error).stack ?? String(err)}\n`);
      }
    }
  } finally {
    if (!stopping) await env.down();
  }
  const warm = results.latency("warm-gateway") ? "warm-gateway" : "warm-direct";
  results.ratio("ratio-per-request-vs-warm", "per-request", warm, undefined, 100);
  results.ratio("ratio-per-request-vs-thaw", "per-request", "thaw");
  results.ratio("ratio-warm-gateway-vs-direct", "warm-gateway", "warm-direct");
  results.ratio("ratio-cold-start-vs-thaw", "cold-start-node", "thaw");
  results.ratio("ratio-docker-thaw-vs-thaw", "docker-thaw", "thaw");

  writeFileSync(out, JSON.stringify(results.all(), null, 2) + "\n");
  process.stdout.write(`\n${results.table()}\n\n`);
  process.stdout.write(
    `bench: ${((Date.now() - started) / 1000).toFixed(0)} s${values.quick ? " (--quick)" : ""}; results in ${out}${failed ? `; ${failed} scenario(s) FAILED` : ""}\n`,
  );
  return failed ? 1 : 0;
}

function hasCommand(cmd: string): boolean {
  return (process.env.PATH ?? "").split(":").some((d) => d && existsSync(join(d, cmd)));
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
