import { existsSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { ChaosLoad, type CallMode, type CallOutcome } from "./chaos-load.js";
import { FaultInjector, faultSchedule, gatewayOutages, type FaultCounts } from "./chaos-faults.js";
import { isClean, readEventStore, takeInventory, type Leftovers } from "./chaos-inventory.js";
import { callCounts, figure, type ChaosCheck, type ChaosReport, type EventTally } from "./chaos-report.js";
import { ChaosStack, REPO_ROOT } from "./chaos-stack.js";
import { summarizeLogs } from "./log-summary.js";

/** Sizes and bounds of a chaos run. */
export interface ChaosOptions {
  invocations: number;
  concurrency: number;
  faults: FaultCounts;
  /** A call not ended after this long counts as hung (default 60 s). */
  hangMs: number;
  /** A caller's pause after a failed call (default 200 ms). */
  failureBackoffMs: number;
  /** provisionedConcurrency of the chaos function. */
  provisioned: number;
  keepWarmSeconds: number;
  /** AGENT_RESYNC_SECONDS. */
  resyncSeconds: number;
  /** GATEWAY_LEASE_MS: how long a lease of a killed gateway outlives it. */
  leaseMs: number;
  /** Longest wait after the load for Events to run and the node to be clean. */
  settleTimeoutMs: number;
  /** Copy the agent, gateway and containerd logs here before the run folder is removed. */
  keepLogsDir?: string;
}

/** `make chaos`: the full run. */
export const FULL_CHAOS: ChaosOptions = {
  invocations: 10_000,
  concurrency: 50,
  faults: {
    workerKillBursts: 20,
    workersPerBurst: 3,
    agentRestarts: 2,
    containerdRestarts: 1,
    gatewayRestarts: 1,
  },
  hangMs: 60_000,
  failureBackoffMs: 200,
  provisioned: 4,
  keepWarmSeconds: 10,
  resyncSeconds: 15,
  leaseMs: 10_000,
  settleTimeoutMs: 180_000,
};

/** The CI form (chaos.test.ts, `--quick`): fewer calls, one fault of each kind. */
export const QUICK_CHAOS: ChaosOptions = {
  ...FULL_CHAOS,
  invocations: 600,
  concurrency: 20,
  faults: {
    workerKillBursts: 1,
    workersPerBurst: 3,
    agentRestarts: 1,
    containerdRestarts: 1,
    gatewayRestarts: 1,
  },
  settleTimeoutMs: 120_000,
};

/** Throws a sentence saying what is missing when the suite cannot run here. */
export function checkChaosPrerequisites(): void {
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push("must run as root (containerd, CNI bridges, cgroups)");
  for (const f of ["agent-daemonset/dist/main.js", "gateway/dist/main.js"]) {
    if (!existsSync(join(REPO_ROOT, f))) problems.push(`${f} is missing: run make build`);
  }
  if (problems.length) throw new Error(`chaos: ${problems.join("; ")}`);
}

/**
 * Runs the chaos suite once: starts a {@link ChaosStack}, runs the load while
 * the faults are injected, waits for the node to settle, takes the inventory,
 * tears the stack down, and returns the report with its checks (never throws
 * for a failed check; throws when the stack cannot start). `holder.stack` is
 * set as soon as the stack exists, so a signal handler can tear it down.
 */
export async function runChaos(
  options: ChaosOptions,
  progress: (line: string) => void,
  holder: { stack?: ChaosStack } = {},
): Promise<ChaosReport> {
  const startedAt = new Date();
  const started = performance.now();
  const stack = new ChaosStack({
    provisioned: options.provisioned,
    keepWarmSeconds: options.keepWarmSeconds,
    resyncSeconds: options.resyncSeconds,
    leaseMs: options.leaseMs,
    keepLogsDir: options.keepLogsDir,
    progress,
  });
  holder.stack = stack;
  try {
    progress(`run folder ${stack.dir}, bridge ${stack.bridge} ${stack.subnet}`);
    await stack.up();
    const faults = faultSchedule(options.invocations, options.faults);
    let injector: FaultInjector | undefined = undefined;
    const load = new ChaosLoad({
      gatewayUrl: stack.gatewayUrl,
      invocations: options.invocations,
      concurrency: options.concurrency,
      hangMs: options.hangMs,
      failureBackoffMs: options.failureBackoffMs,
      gate: (i) => injector!.gate(i),
    });
    injector = new FaultInjector(stack, faults, () => load.now(), options.faults, progress);
    progress(
      `load: ${options.invocations} calls at concurrency ${options.concurrency}, ${faults.length} faults`,
    );
    const ticker = setInterval(
      () => progress(`load: ${load.outcomes.length}/${options.invocations} calls ended`),
      10_000,
    );
    const faultsDone = injector.run(() => load.issued);
    await load.run();
    clearInterval(ticker);
    await faultsDone;
    const loadEnd = load.now();
    progress(
      `load done in ${(loadEnd / 1000).toFixed(1)} s; settling (at most ${options.settleTimeoutMs / 1000} s)`,
    );

    const accepted = new Set(
      load.outcomes.filter((o) => o.mode === "event" && o.kind === "ok").map((o) => o.token),
    );
    const deadline = Date.now() + options.settleTimeoutMs;
    let leftovers: Leftovers | undefined;
    for (;;) {
      const store = readEventStore(stack.eventStore);
      const eventsDone = store.waiting === 0 && [...accepted].every((t) => stack.recorder.seen.has(t));
      leftovers = await takeInventory(stack).catch(() => undefined);
      if ((eventsDone && leftovers && isClean(leftovers, options.provisioned)) || Date.now() > deadline)
        break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    const settleSeconds = (load.now() - loadEnd) / 1000;
    leftovers ??= await takeInventory(stack);
    const events = tallyEvents(load.outcomes, accepted, stack);
    progress(`settled in ${settleSeconds.toFixed(1)} s; tearing down`);
    const report = buildReport({
      options,
      startedAt,
      load,
      loadEnd,
      settleSeconds,
      leftovers,
      events,
      faults,
      stack,
    });
    report.logWarnings = summarizeLogs({
      agent: join(stack.dir, "agent.log"),
      gateway: join(stack.dir, "gateway.log"),
    });
    report.durationSeconds = Math.round((performance.now() - started) / 100) / 10;
    return report;
  } finally {
    const problems = await stack.down();
    for (const p of problems) progress(`cleanup: ${p}`);
  }
}

function tallyEvents(outcomes: readonly CallOutcome[], accepted: Set<string>, stack: ChaosStack): EventTally {
  const seen = stack.recorder.seen;
  const lost = [...accepted].filter((t) => !seen.has(t));
  return {
    accepted: accepted.size,
    executed: accepted.size - lost.length,
    lost,
    duplicates: [...accepted].filter((t) => (seen.get(t) ?? 0) > 1).length,
    executedWithout202: outcomes.filter((o) => o.mode === "event" && o.kind !== "ok" && seen.has(o.token))
      .length,
    store: readEventStore(stack.eventStore),
  };
}

interface ReportInput {
  options: ChaosOptions;
  startedAt: Date;
  load: ChaosLoad;
  loadEnd: number;
  settleSeconds: number;
  leftovers: Leftovers;
  events: EventTally;
  faults: ReturnType<typeof faultSchedule>;
  stack: ChaosStack;
}

function buildReport(i: ReportInput): ChaosReport {
  const outcomes = i.load.outcomes;
  const modes: CallMode[] = ["sync", "event", "http"];
  const failures = new Map<string, { mode: CallMode; type: string; shaped: boolean; count: number }>();
  for (const o of outcomes.filter((x) => x.kind === "failure")) {
    const key = `${o.mode} ${o.type} ${o.shaped}`;
    const f = failures.get(key) ?? { mode: o.mode, type: o.type ?? "?", shaped: Boolean(o.shaped), count: 0 };
    f.count++;
    failures.set(key, f);
  }
  const outages = gatewayOutages(i.faults, i.loadEnd);
  const transport = new Map<string, { type: string; duringGatewayOutage: number; outside: number }>();
  for (const o of outcomes.filter((x) => x.kind === "transport")) {
    const t = transport.get(o.type ?? "?") ?? { type: o.type ?? "?", duringGatewayOutage: 0, outside: 0 };
    if (outages.some(([from, to]) => o.start <= to && o.end >= from)) t.duringGatewayOutage++;
    else t.outside++;
    transport.set(t.type, t);
  }
  const hung = outcomes
    .filter((o) => o.kind === "hung")
    .map((o) => ({ mode: o.mode, start: Math.round(o.start) }));
  const misrouted = outcomes
    .filter((o) => o.kind === "misrouted")
    .map((o) => ({ mode: o.mode, token: o.token, got: o.got }));
  const calls = Object.fromEntries([
    ...modes.map((m) => [m, callCounts(outcomes, m)]),
    ["all", callCounts(outcomes)],
  ]);
  const l = i.leftovers;
  const ev = i.events;
  const notShaped = [...failures.values()].filter((f) => !f.shaped);
  const transportOutside = [...transport.values()].reduce((n, t) => n + t.outside, 0);
  const faultErrors = i.faults.filter((f) => f.error);
  const check = (name: string, ok: boolean, value: string, detail?: string): ChaosCheck => ({
    name,
    ok,
    value,
    ...(ok || !detail ? {} : { detail }),
  });
  const checks: ChaosCheck[] = [
    check(
      "every mode answered",
      modes.every((m) => (calls[m].ok ?? 0) > 0),
      modes.map((m) => `${m} ${calls[m].ok}`).join(", "),
      "a mode with no successful call makes the other checks say nothing",
    ),
    check(
      "answers routed to the wrong caller",
      misrouted.length === 0,
      String(misrouted.length),
      JSON.stringify(misrouted.slice(0, 5)),
    ),
    check(
      `hung calls (no end within ${i.options.hangMs / 1000} s)`,
      hung.length === 0,
      String(hung.length),
      JSON.stringify(hung.slice(0, 10)),
    ),
    check(
      "failures that are not AWS-shaped",
      notShaped.length === 0 && transportOutside === 0,
      String(notShaped.reduce((n, f) => n + f.count, 0) + transportOutside),
      [
        ...notShaped.map((f) => `${f.mode} ${f.type}: ${f.count}`),
        ...(transportOutside ? [`connection errors while the gateway was up: ${transportOutside}`] : []),
      ].join("; "),
    ),
    check(
      "accepted Events not executed",
      ev.lost.length === 0,
      `${ev.lost.length} of ${ev.accepted}`,
      `e.g. ${ev.lost.slice(0, 3).join(", ")}; dead letters ${JSON.stringify(ev.store.deadLetters)}, still waiting ${ev.store.waiting}`,
    ),
    check(
      "orphan tasks/containers",
      l.orphanContainers.length + l.orphanTasks.length + l.lostWorkers.length === 0,
      `${l.orphanTasks.length} tasks, ${l.orphanContainers.length} containers, ${l.lostWorkers.length} dead workers listed`,
      JSON.stringify({ tasks: l.orphanTasks, containers: l.orphanContainers, lost: l.lostWorkers }).slice(
        0,
        400,
      ),
    ),
    check(
      "orphan network namespaces",
      l.orphanNetns.length === 0,
      String(l.orphanNetns.length),
      l.orphanNetns.join(", "),
    ),
    check(
      "orphan CNI IP allocations",
      l.orphanIps.length === 0,
      String(l.orphanIps.length),
      l.orphanIps.join(", "),
    ),
    check("leases left", l.leases.length === 0, String(l.leases.length), l.leases.join(", ")),
    check(
      "pool back to its provisioned size",
      l.poolSize === i.options.provisioned && l.notIdle.length === 0,
      `${l.poolSize} of ${i.options.provisioned}`,
      l.notIdle.join(", "),
    ),
    check(
      "every fault injected and recovered",
      faultErrors.length === 0,
      `${i.faults.length - faultErrors.length} of ${i.faults.length}`,
      faultErrors.map((f) => `${f.kind}@${f.at}: ${f.error}`).join("; "),
    ),
  ];
  const okLatency = (m: CallMode) =>
    outcomes.filter((o) => o.mode === m && o.kind === "ok").map((o) => o.end - o.start);
  const recovery = (kind: string) =>
    i.faults
      .filter((f) => f.kind === kind && f.recoveredAt !== undefined && f.injectedAt !== undefined)
      .map((f) => f.recoveredAt! - f.injectedAt!);
  const firstSeen = i.stack.recorder.firstSeen;
  const eventRun = outcomes
    .filter((o) => o.mode === "event" && o.kind === "ok" && firstSeen.has(o.token))
    .map((o) => firstSeen.get(o.token)! - i.load.t0 - o.start);
  const slowest = [...outcomes]
    .sort((a, b) => b.end - b.start - (a.end - a.start))
    .slice(0, 10)
    .map((o) => ({
      mode: o.mode,
      kind: o.kind,
      start: Math.round(o.start),
      ms: Math.round(o.end - o.start),
    }));
  const figures = [
    figure(
      "chaos-sync-ok",
      "ms",
      okLatency("sync"),
      "successful RequestResponse Invoke (SDK), call to answer",
    ),
    figure("chaos-event-accepted", "ms", okLatency("event"), "Event Invoke (SDK) to its 202"),
    figure("chaos-http-ok", "ms", okLatency("http"), "successful HTTP route call"),
    figure(
      "chaos-event-run",
      "ms",
      eventRun,
      "Event Invoke sent -> its first run recorded outside the worker",
    ),
    ...["agent-kill", "agent-term", "containerd-kill", "gateway-kill"]
      .filter((k) => recovery(k).length > 0)
      .map((k) =>
        figure(`chaos-recovery-${k}`, "ms", recovery(k), "signal sent -> restarted component ready"),
      ),
  ];
  return {
    startedAt: i.startedAt.toISOString(),
    options: { ...i.options },
    machine: { cores: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version },
    durationSeconds: 0,
    loadSeconds: Math.round(i.loadEnd / 100) / 10,
    settleSeconds: Math.round(i.settleSeconds * 10) / 10,
    calls: calls as ChaosReport["calls"],
    failures: [...failures.values()].sort((a, b) => b.count - a.count),
    transport: [...transport.values()],
    hung,
    misrouted,
    slowest,
    events: { ...ev, lost: ev.lost.length, lostSample: ev.lost.slice(0, 20) },
    faults: i.faults,
    leftovers: l,
    figures,
    checks,
    logWarnings: [],
  };
}
