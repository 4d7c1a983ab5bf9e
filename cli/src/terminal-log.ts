import { Writable } from "node:stream";

/** pino's numeric levels, as people read them. */
const LEVEL_NAMES: Record<number, string> = {
  10: "trace",
  20: "debug",
  30: "info",
  40: "warn",
  50: "error",
  60: "fatal",
};

/** Fields every line has, or that the line's prefix already says. */
const SKIPPED = new Set(["level", "time", "pid", "hostname", "component", "msg"]);

/**
 * Turns one JSON log line (pino's) into a line for people:
 * `esb up: warn controller: lease update failed (function=default/hello, err=…)`.
 * Returns undefined for a line that is not JSON.
 */
export function humanLogLine(json: string, prefix = "esb up"): string | undefined {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const level = LEVEL_NAMES[entry.level as number] ?? String(entry.level);
  const msg = String(entry.msg ?? "");
  const fields = Object.entries(entry)
    .filter(([k, v]) => !SKIPPED.has(k) && v !== undefined && !saidIn(msg, v))
    .map(([k, v]) => `${k}=${fieldText(v)}`);
  const component = typeof entry.component === "string" ? `${entry.component}: ` : "";
  return `${prefix}: ${level} ${component}${msg}${fields.length ? ` (${fields.join(", ")})` : ""}`;
}

/** True when the message already says `v` (a string, or every string of an array). */
function saidIn(msg: string, v: unknown): boolean {
  if (typeof v === "string") return v.length > 0 && msg.includes(v);
  return Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === "string" && msg.includes(x));
}

function fieldText(v: unknown): string {
  if (typeof v === "string") return v.length > 300 ? `${v.slice(0, 300)}…` : v;
  if (v && typeof v === "object" && "message" in v) return String((v as { message: unknown }).message);
  const text = JSON.stringify(v);
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}

/**
 * A log destination that writes each JSON line it receives to `out` as a
 * readable line ({@link humanLogLine}); lines that are not JSON pass unchanged.
 */
export class TerminalLogStream extends Writable {
  private rest = "";

  constructor(private readonly out: NodeJS.WritableStream) {
    super();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    const lines = (this.rest + chunk.toString("utf8")).split("\n");
    this.rest = lines.pop() ?? "";
    for (const line of lines) if (line) this.out.write(`${humanLogLine(line) ?? line}\n`);
    done();
  }
}

/**
 * A worker's line for `esb up`'s terminal: `hello | <line>`, the function's
 * name (namespace/name outside `default`) before what the worker wrote.
 */
export function functionLogText(record: { function: string; message: string }): string {
  const name = record.function.startsWith("default/") ? record.function.slice(8) : record.function || "?";
  return `${name} | ${record.message.replace(/\r$/, "")}`;
}
