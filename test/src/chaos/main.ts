#!/usr/bin/env node
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { formatReport } from "./chaos-report.js";
import { REPO_ROOT, type ChaosStack } from "./chaos-stack.js";
import {
  checkChaosPrerequisites,
  FULL_CHAOS,
  QUICK_CHAOS,
  runChaos,
  type ChaosOptions,
} from "./chaos-suite.js";

const HELP = `make chaos / node test/dist/chaos/main.js: ESB under faults

Runs sync, Event and HTTP-route calls through the real gateway while workers
are SIGKILLed, the agent is restarted (SIGKILL, then SIGTERM), containerd is
SIGKILLed and restarted and the gateway is SIGKILLed and restarted; then checks
that no answer went to the wrong caller, no call hung, every failure is
AWS-shaped, every accepted Event ran, nothing is left over and the pool is back
to its provisioned size. Exit status 1 when a check fails.

Options:
  --quick                 the CI form: 600 calls at concurrency 20, one fault of each kind
  --invocations N         calls (default 10000)
  --concurrency N         callers at once (default 50)
  --worker-kills N        worker kill bursts (default 20)
  --agent-restarts N      (default 2: SIGKILL, SIGTERM)
  --containerd-restarts N (default 1)
  --gateway-restarts N    (default 1)
  --hang-ms MS            a call not ended after MS counts as hung (default 60000)
  --out FILE              results (default bench/chaos-results.json)
  --keep-logs DIR         copy the agent, gateway and containerd logs to DIR
  --help

Runs as root: its own containerd, agent and gateway processes under
/tmp/esb-chaos-*, a CNI bridge esbx<id> on its own 10.x.y.0/24; removes all of
it at the end or on Ctrl-C.
`;

function int(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} ${value}: expected a whole number`);
  return n;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      quick: { type: "boolean", default: false },
      invocations: { type: "string" },
      concurrency: { type: "string" },
      "worker-kills": { type: "string" },
      "agent-restarts": { type: "string" },
      "containerd-restarts": { type: "string" },
      "gateway-restarts": { type: "string" },
      "hang-ms": { type: "string" },
      out: { type: "string" },
      "keep-logs": { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const base = values.quick ? QUICK_CHAOS : FULL_CHAOS;
  const options: ChaosOptions = {
    ...base,
    invocations: Math.max(1, int(values.invocations, "invocations", base.invocations)),
    concurrency: Math.max(1, int(values.concurrency, "concurrency", base.concurrency)),
    hangMs: int(values["hang-ms"], "hang-ms", base.hangMs),
    keepLogsDir: values["keep-logs"],
    faults: {
      ...base.faults,
      workerKillBursts: int(values["worker-kills"], "worker-kills", base.faults.workerKillBursts),
      agentRestarts: int(values["agent-restarts"], "agent-restarts", base.faults.agentRestarts),
      containerdRestarts: int(
        values["containerd-restarts"],
        "containerd-restarts",
        base.faults.containerdRestarts,
      ),
      gatewayRestarts: int(values["gateway-restarts"], "gateway-restarts", base.faults.gatewayRestarts),
    },
  };
  checkChaosPrerequisites();
  const out = values.out ?? join(REPO_ROOT, "bench", "chaos-results.json");
  const progress = (line: string) => process.stderr.write(`chaos: ${line}\n`);
  const holder: { stack?: ChaosStack } = {};
  let stopping = false;
  const onSignal = (signal: string) => {
    if (stopping) return;
    stopping = true;
    progress(`${signal}: cleaning up`);
    void (holder.stack?.down() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.on("SIGINT", () => onSignal("SIGINT"));
  process.on("SIGTERM", () => onSignal("SIGTERM"));

  const report = await runChaos(options, progress, holder);
  writeFileSync(out, JSON.stringify(report, null, 2) + "\n");
  process.stdout.write(`\n${formatReport(report)}\n\n`);
  const failed = report.checks.filter((c) => !c.ok);
  process.stdout.write(
    `chaos: ${report.durationSeconds} s (load ${report.loadSeconds} s, settle ${report.settleSeconds} s); results in ${out}\n`,
  );
  if (failed.length > 0) {
    process.stdout.write(`chaos: ${failed.length} check(s) FAILED:\n`);
    for (const c of failed)
      process.stdout.write(`  - ${c.name}: ${c.value}${c.detail ? ` (${c.detail})` : ""}\n`);
    return 1;
  }
  process.stdout.write("chaos: every check passed\n");
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`chaos: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
