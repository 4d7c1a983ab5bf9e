import type { WorkerLogLine } from "../runtime/runtime.js";

/**
 * One line of a worker's output with what it belongs to: the fields ESB ships
 * to the log store (VictoriaLogs) and shows in `esb up` and `esb logs`.
 */
export interface FunctionLogRecord {
  /** RFC 3339 time with nanoseconds; strictly increasing within one agent, so lines keep their order. */
  time: string;
  /** The line as the worker wrote it. */
  message: string;
  /** "namespace/name" of the LambdaFunction; empty while the worker is unknown to the agent. */
  function: string;
  /** Node (agent) that runs the worker. */
  node: string;
  /** Worker (container) id: one execution environment, AWS's log stream. */
  worker: string;
  /** Which of the worker's outputs the line came from. */
  stream: "stdout" | "stderr";
  /** The invocation the line belongs to, when known (see {@link FunctionLogRecords}). */
  requestId?: string;
  /** Function version, from the START line of the invocation. */
  version?: string;
  /** Level of a console line of AWS's runtime format (INFO, WARN, ERROR, DEBUG, TRACE, FATAL). */
  level?: string;
}

/** `START RequestId: <id> Version: <version>`, as the emulator and AWS's RIE print it. */
const START = /^START RequestId: (\S+)(?: Version: (\S+))?/;
/** `END RequestId: <id>` and `REPORT RequestId: <id>\t…`. */
const END = /^END RequestId: (\S+)/;
const REPORT = /^REPORT RequestId: (\S+)/;
/** AWS's runtimes prefix console lines with `<ISO time>\t<request id>\t<LEVEL>\t`. */
const CONSOLE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z\t([^\t]+)\t(INFO|WARN|ERROR|DEBUG|TRACE|FATAL)\t/;

interface WorkerContext {
  function: string;
  requestId?: string;
  version?: string;
}

/** Options of {@link FunctionLogRecords}. */
export interface FunctionLogRecordsOptions {
  node: string;
  /** "namespace/name" of the function a worker belongs to, or undefined when the agent does not know it (yet). */
  functionOf: (workerId: string) => string | undefined;
  /** Most workers whose context is remembered; the oldest is forgotten beyond it. Default 10,000. */
  maxWorkers?: number;
}

/**
 * Turns worker output lines into {@link FunctionLogRecord}s. Which invocation a
 * line belongs to is found as AWS does: a console line of AWS's format names
 * its request id (and level); any other line written between an invocation's
 * START and REPORT lines belongs to that invocation (a worker runs one
 * invocation at a time, and the emulator writes the function's output to the
 * same stream in order).
 */
export class FunctionLogRecords {
  private readonly workers = new Map<string, WorkerContext>();
  private readonly maxWorkers: number;
  private lastNs = 0n;

  constructor(private readonly opts: FunctionLogRecordsOptions) {
    this.maxWorkers = opts.maxWorkers ?? 10_000;
  }

  /** The record of one line; keeps the worker's current invocation up to date. */
  record(line: WorkerLogLine): FunctionLogRecord {
    const ctx = this.context(line.id);
    const text = line.line;
    let requestId = ctx.requestId;
    let version = ctx.version;
    let level: string | undefined;
    let m: RegExpExecArray | null;
    if ((m = START.exec(text))) {
      ctx.requestId = requestId = m[1];
      ctx.version = version = m[2] ?? ctx.version;
    } else if ((m = REPORT.exec(text))) {
      // REPORT closes the invocation: later lines belong to none until the next START.
      requestId = m[1];
      ctx.requestId = undefined;
    } else if ((m = END.exec(text))) {
      requestId = m[1];
    } else if ((m = CONSOLE.exec(text))) {
      // "undefined" is what AWS prints for lines written outside an invocation (init).
      requestId = m[1] === "undefined" ? undefined : m[1];
      level = m[2];
    }
    const record: FunctionLogRecord = {
      time: this.nextTime(),
      message: text,
      function: ctx.function,
      node: this.opts.node,
      worker: line.id,
      stream: line.stream,
    };
    if (requestId) record.requestId = requestId;
    if (version) record.version = version;
    if (level) record.level = level;
    return record;
  }

  /** Forgets a worker (it is gone). */
  forget(workerId: string): void {
    this.workers.delete(workerId);
  }

  private context(workerId: string): WorkerContext {
    let ctx = this.workers.get(workerId);
    if (!ctx || !ctx.function) {
      const fn = this.opts.functionOf(workerId) ?? "";
      if (ctx) ctx.function = fn;
      else {
        ctx = { function: fn };
        this.workers.set(workerId, ctx);
        if (this.workers.size > this.maxWorkers) this.workers.delete(this.workers.keys().next().value!);
      }
    }
    return ctx;
  }

  /** Now, in nanoseconds, but never the same as or before the previous record's time. */
  private nextTime(): string {
    let ns = BigInt(Date.now()) * 1_000_000n;
    if (ns <= this.lastNs) ns = this.lastNs + 1n;
    this.lastNs = ns;
    return formatNanoTime(ns);
  }
}

/** RFC 3339 with nine fractional digits, UTC. */
export function formatNanoTime(ns: bigint): string {
  const ms = ns / 1_000_000n;
  const iso = new Date(Number(ms)).toISOString(); // …T18:42:31.123Z
  const frac = (ns % 1_000_000_000n).toString().padStart(9, "0");
  return `${iso.slice(0, 19)}.${frac}Z`;
}
