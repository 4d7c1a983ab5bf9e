import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { BENCH_EVENT, splitAddress } from "./worker-http.js";
import { round } from "./bench-results.js";

const run = promisify(execFile);

/** One closed-loop load run of wrk. */
export interface WrkRun {
  /** Full URL; host and path of the requests. */
  url: string;
  /** Open connections (each sends one request at a time). */
  connections: number;
  /** wrk threads; with `targets`, one per target. */
  threads: number;
  durationS: number;
  /** host:port per thread: thread i sends to targets[i] (direct-to-worker runs). */
  targets?: string[];
  /** Folder for the generated Lua script. */
  scriptDir: string;
}

/** What wrk measured: every request's latency (µs histogram), counts and errors. */
export interface WrkResult {
  requests: number;
  durationS: number;
  rps: number;
  /** connect + read + write + timeout errors and non-2xx/3xx answers. */
  errors: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** Checks that Debian's `wrk` is installed. */
export async function wrkAvailable(): Promise<boolean> {
  try {
    await run("wrk", ["--version"]).catch((err: { stdout?: string }) => {
      // wrk --version exits 1 after printing its banner.
      if (!String(err.stdout ?? "").includes("wrk")) throw err;
    });
    return true;
  } catch {
    return false;
  }
}

/**
 * Runs wrk (Debian's, HTTP/1.1 keep-alive, one outstanding request per
 * connection) POSTing the bench event, and returns its latency percentiles
 * in ms from the full latency histogram (the Lua `done` hook prints every
 * bucket, so nothing is sampled).
 */
export async function runWrk(r: WrkRun): Promise<WrkResult> {
  const script = join(r.scriptDir, `wrk-${process.pid}-${Date.now()}.lua`);
  const targets = (r.targets ?? []).map((t) => splitAddress(t));
  writeFileSync(
    script,
    `wrk.method = "POST"
wrk.body = ${JSON.stringify(BENCH_EVENT)}
wrk.headers["Content-Type"] = "application/json"
local targets = { ${targets.map(([h, p]) => `{ ${JSON.stringify(h)}, "${p}" }`).join(", ")} }
local n = 0
function setup(thread)
  if #targets > 0 then
    n = n + 1
    local t = targets[((n - 1) % #targets) + 1]
    thread.addr = wrk.lookup(t[1], t[2])[1]
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write("ESB-WRK ", summary.requests, " ", summary.duration, " ", e.connect + e.read + e.write + e.timeout + e.status, "\\n")
  for i = 1, #latency do
    local v, c = latency(i)
    if c > 0 then io.write("ESB-H ", v, " ", c, "\\n") end
  end
end
`,
  );
  const { stdout } = await run(
    "wrk",
    [
      "-t",
      String(r.threads),
      "-c",
      String(r.connections),
      "-d",
      `${r.durationS}s`,
      "--timeout",
      "10s",
      "-s",
      script,
      r.url,
    ],
    { maxBuffer: 64 << 20 },
  );
  let requests = 0;
  let durationUs = 0;
  let errors = 0;
  const values: number[] = [];
  const counts: number[] = [];
  for (const line of stdout.split("\n")) {
    const parts = line.trim().split(" ");
    if (parts[0] === "ESB-WRK") {
      requests = Number(parts[1]);
      durationUs = Number(parts[2]);
      errors = Number(parts[3]);
    } else if (parts[0] === "ESB-H") {
      values.push(Number(parts[1]));
      counts.push(Number(parts[2]));
    }
  }
  if (!durationUs) throw new Error(`wrk printed no summary:\n${stdout.slice(0, 2000)}`);
  const pct = histogramPercentiles(values, counts);
  return {
    requests,
    durationS: round(durationUs / 1e6),
    rps: round(requests / (durationUs / 1e6)),
    errors,
    ...pct,
  };
}

/** p50/p90/p99/max in ms of a histogram of µs values (ascending) with counts. */
function histogramPercentiles(
  values: number[],
  counts: number[],
): { p50: number; p90: number; p99: number; max: number } {
  const total = counts.reduce((a, b) => a + b, 0);
  const at = (p: number): number => {
    const rank = Math.max(1, Math.ceil((p / 100) * total));
    let seen = 0;
    for (let i = 0; i < values.length; i++) {
      seen += counts[i];
      if (seen >= rank) return round(values[i] / 1000);
    }
    return NaN;
  };
  return { p50: at(50), p90: at(90), p99: at(99), max: round((values[values.length - 1] ?? NaN) / 1000) };
}
