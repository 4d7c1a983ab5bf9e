import type { CallMode, CallOutcome } from "./chaos-load.js";
import type { Fault } from "./chaos-faults.js";
import type { Leftovers, StoreState } from "./chaos-inventory.js";
import type { LogWarning } from "./log-summary.js";

/** One asserted check: `ok` false fails the run; `value` is what was measured, `detail` why it failed. */
export interface ChaosCheck {
  name: string;
  ok: boolean;
  value: string;
  detail?: string;
}

/** A distribution row, as `make bench` prints them (nearest-rank percentiles, never a mean). */
export interface FigureRow {
  name: string;
  unit: string;
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  note?: string;
}

/** What happened to the accepted Events. */
export interface EventTally {
  accepted: number;
  /** Accepted and recorded at least once by the recorder. */
  executed: number;
  /** Accepted and never recorded. */
  lost: string[];
  /** Accepted Events recorded more than once (at-least-once delivery allows it). */
  duplicates: number;
  /** Recorded although the caller did not see a 202 (the gateway died after storing it). */
  executedWithout202: number;
  store: StoreState;
}

/** Everything a chaos run reports; written as JSON and printed as tables. */
export interface ChaosReport {
  startedAt: string;
  options: Record<string, unknown>;
  machine: { cores: number; memoryGiB: number; node: string };
  durationSeconds: number;
  loadSeconds: number;
  /** Seconds from the end of the load until the node was clean (or the settle bound). */
  settleSeconds: number;
  calls: Record<CallMode | "all", Record<string, number>>;
  /** Failure types with their counts, per mode. */
  failures: { mode: CallMode; type: string; shaped: boolean; count: number }[];
  transport: { type: string; duringGatewayOutage: number; outside: number }[];
  hung: { mode: CallMode; start: number }[];
  misrouted: { mode: CallMode; token: string; got?: string }[];
  /** The ten longest calls (start: ms since the load started, to set beside the faults' times). */
  slowest: { mode: CallMode; kind: string; start: number; ms: number }[];
  events: Omit<EventTally, "lost"> & { lost: number; lostSample: string[] };
  faults: Fault[];
  leftovers: Leftovers;
  figures: FigureRow[];
  checks: ChaosCheck[];
  /** Warnings and errors the agent and gateway logged, grouped (not checked: where to look for causes). */
  logWarnings: LogWarning[];
}

/** Nearest-rank percentile of ascending `sorted` (p in 0..100). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** A {@link FigureRow} from raw samples. */
export function figure(name: string, unit: string, samples: readonly number[], note?: string): FigureRow {
  const s = [...samples].sort((a, b) => a - b);
  const r = (x: number) => Math.round(x * 100) / 100;
  return {
    name,
    unit,
    n: s.length,
    p50: r(percentile(s, 50)),
    p90: r(percentile(s, 90)),
    p99: r(percentile(s, 99)),
    max: r(s[s.length - 1] ?? NaN),
    ...(note ? { note } : {}),
  };
}

/** Counts per outcome kind for the calls of `mode` (or all). */
export function callCounts(outcomes: readonly CallOutcome[], mode?: CallMode): Record<string, number> {
  const c: Record<string, number> = { total: 0, ok: 0, failure: 0, transport: 0, hung: 0, misrouted: 0 };
  for (const o of outcomes) {
    if (mode && o.mode !== mode) continue;
    c.total++;
    c[o.kind]++;
  }
  return c;
}

/** The report as readable tables: checks, calls, failure types, faults, figures. */
export function formatReport(r: ChaosReport): string {
  const out: string[] = [];
  out.push(
    table(
      ["check", "result", "value", "detail"],
      r.checks.map((c) => [c.name, c.ok ? "ok" : "FAILED", c.value, c.detail ?? ""]),
    ),
  );
  out.push(
    table(
      ["calls", "total", "ok", "failure", "transport", "hung", "misrouted"],
      (["sync", "event", "http", "all"] as const).map((m) => [
        m,
        ...["total", "ok", "failure", "transport", "hung", "misrouted"].map((k) =>
          String(r.calls[m][k] ?? 0),
        ),
      ]),
    ),
  );
  const failureRows = [
    ...r.failures.map((f) => [f.mode, f.type, f.shaped ? "AWS-shaped" : "NOT AWS-SHAPED", String(f.count)]),
    ...r.transport.map((t) => [
      "any",
      `connection ${t.type}`,
      `${t.duringGatewayOutage} while the gateway was down`,
      String(t.duringGatewayOutage + t.outside),
    ]),
  ];
  if (failureRows.length > 0) out.push(table(["mode", "failure type", "shape", "count"], failureRows));
  const e = r.events;
  out.push(
    `events: ${e.accepted} accepted (202), ${e.executed} executed, ${e.lost} lost, ${e.duplicates} run more than once, ` +
      `${e.executedWithout202} executed without a 202 seen; store: ${e.store.waiting} waiting, ` +
      `${e.store.deadLetters.reduce((n, d) => n + d.count, 0)} dead letters` +
      (e.store.deadLetters.length
        ? ` (${e.store.deadLetters.map((d) => `${d.reason}/${d.error}: ${d.count}`).join(", ")})`
        : ""),
  );
  out.push(
    table(
      ["fault", "at call", "at ms", "recovery ms", "what"],
      r.faults
        .filter((f) => f.kind !== "worker-kill" || f.error)
        .map((f) => [
          f.kind,
          String(f.at),
          String(Math.round(f.injectedAt ?? NaN)),
          f.recoveredAt !== undefined && f.injectedAt !== undefined
            ? String(Math.round(f.recoveredAt - f.injectedAt))
            : "-",
          f.error ? `FAILED: ${f.error}` : (f.detail ?? ""),
        ]),
    ),
  );
  const kills = r.faults.filter((f) => f.kind === "worker-kill");
  out.push(
    `worker kills: ${kills.length} bursts: ${kills.map((k) => `@${Math.round(k.injectedAt ?? NaN)} ms ${k.detail ?? k.error}`).join("; ")}`,
  );
  out.push(
    `slowest calls (start ms + duration ms): ${r.slowest.map((c) => `${c.mode} ${c.kind} @${c.start}+${c.ms}`).join(", ")}`,
  );
  out.push(
    table(
      ["name", "unit", "n", "p50", "p90", "p99", "max", "note"],
      r.figures.map((f) => [
        f.name,
        f.unit,
        String(f.n),
        fmt(f.p50),
        fmt(f.p90),
        fmt(f.p99),
        fmt(f.max),
        f.note ?? "",
      ]),
    ),
  );
  if (r.logWarnings.length > 0) {
    out.push(
      table(
        ["log", "level", "count", "message (grouped; not a check)"],
        r.logWarnings.map((w) => [w.log, w.level, String(w.count), w.message]),
      ),
    );
  }
  return out.join("\n\n");
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return "-";
  if (Math.abs(x) >= 100) return x.toFixed(0);
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

function table(head: string[], rows: string[][]): string {
  const all = [head, ...rows];
  const widths = head.map((_, c) => Math.max(...all.map((l) => (l[c] ?? "").length)));
  return all
    .map((l) =>
      l
        .map((cell, c) => cell.padEnd(widths[c]))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}
