/**
 * The figures a bench run produces and how they are printed and saved.
 * `bench/results.json` is a list of {@link LatencyRow} and {@link RatioRow}.
 */

/** A distribution of samples: latency in ms, memory in MB, CPU in ms, … */
export interface LatencyRow {
  name: string;
  unit: string;
  /** Number of samples. */
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  /** Requests per second (throughput rows). */
  rps?: number;
  /** Failed requests (throughput rows); must be 0 for the figure to count. */
  errors?: number;
  /** What the row measured, in a few words (printed in the table). */
  note?: string;
}

/** `ratio = of / to`, both p50s unless `note` says otherwise. */
export interface RatioRow {
  name: string;
  ratio: number;
  of: string;
  to: string;
  note?: string;
}

/** One line of results.json. */
export type ResultRow = LatencyRow | RatioRow;

/** Nearest-rank percentile of ascending `sorted` (p in 0..100). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** A {@link LatencyRow} from raw samples. */
export function summarize(
  name: string,
  unit: string,
  samples: readonly number[],
  extra: Partial<LatencyRow> = {},
): LatencyRow {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    name,
    unit,
    n: sorted.length,
    p50: round(percentile(sorted, 50)),
    p90: round(percentile(sorted, 90)),
    p99: round(percentile(sorted, 99)),
    max: round(sorted[sorted.length - 1] ?? NaN),
    ...extra,
  };
}

/** Rounds to 3 significant decimals, enough for ms figures. */
export function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** Collects the rows of a run, keeping the order in which scenarios add them. */
export class BenchResults {
  private readonly rows: ResultRow[] = [];

  /** Adds (or replaces, by name) a row. */
  add(row: ResultRow): void {
    const i = this.rows.findIndex((r) => r.name === row.name);
    if (i >= 0) this.rows[i] = row;
    else this.rows.push(row);
  }

  /** The latency row called `name`, if measured. */
  latency(name: string): LatencyRow | undefined {
    const r = this.rows.find((x) => x.name === name);
    return r && "p50" in r ? r : undefined;
  }

  /**
   * Adds `of.p50 / to.p50` as a ratio row when both rows exist; with `minimum`
   * (a target), the note says whether the ratio reaches it.
   */
  ratio(name: string, of: string, to: string, note?: string, minimum?: number): void {
    const a = this.latency(of);
    const b = this.latency(to);
    if (!a || !b || !(b.p50 > 0)) return;
    const ratio = round(a.p50 / b.p50);
    const target =
      minimum === undefined ? undefined : `target >= ${minimum}: ${ratio >= minimum ? "met" : "MISSED"}`;
    const text = [note, target].filter(Boolean).join("; ");
    this.add({ name, ratio, of, to, ...(text ? { note: text } : {}) });
  }

  /**
   * Adds `of.rps / to.rps` as a ratio row when both throughput rows exist; with
   * `minimum` (a target), the note says whether the ratio reaches it.
   */
  throughputRatio(name: string, of: string, to: string, minimum?: number): void {
    const a = this.latency(of);
    const b = this.latency(to);
    if (!a?.rps || !b?.rps) return;
    const ratio = round(a.rps / b.rps);
    const target =
      minimum === undefined ? "" : `; target >= ${minimum}: ${ratio >= minimum ? "met" : "MISSED"}`;
    this.add({ name, ratio, of, to, note: `requests/s${target}` });
  }

  all(): ResultRow[] {
    return [...this.rows];
  }

  /** The rows as a fixed-width text table. */
  table(): string {
    const lines: string[][] = [["name", "unit", "n", "p50", "p90", "p99", "max", "req/s", "note"]];
    for (const r of this.rows) {
      if ("ratio" in r) {
        lines.push([
          r.name,
          "ratio",
          "",
          fmt(r.ratio),
          "",
          "",
          "",
          "",
          `${r.of} / ${r.to}${r.note ? ` (${r.note})` : ""}`,
        ]);
      } else {
        const note = [r.errors ? `ERRORS: ${r.errors}` : "", r.note ?? ""].filter(Boolean).join("; ");
        lines.push([
          r.name,
          r.unit,
          String(r.n),
          fmt(r.p50),
          fmt(r.p90),
          fmt(r.p99),
          fmt(r.max),
          r.rps !== undefined ? fmt(r.rps) : "",
          note,
        ]);
      }
    }
    const widths = lines[0].map((_, c) => Math.max(...lines.map((l) => l[c].length)));
    return lines
      .map((l) =>
        l
          .map((cell, c) => (c >= 2 && c <= 7 ? cell.padStart(widths[c]) : cell.padEnd(widths[c])))
          .join("  ")
          .trimEnd(),
      )
      .join("\n");
  }
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return "-";
  if (Math.abs(x) >= 100) return x.toFixed(0);
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(2);
}
