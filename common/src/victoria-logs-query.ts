import { createInterface } from "node:readline";
import { Readable } from "node:stream";

/** A function log line as stored in VictoriaLogs by the agent. */
export interface StoredLogLine {
  /** RFC 3339 with nanoseconds. */
  time: string;
  message: string;
  /** "namespace/name". */
  function: string;
  node: string;
  worker: string;
  stream: string;
  requestId?: string;
  version?: string;
  level?: string;
}

/** What to read. */
export interface FunctionLogQuery {
  /** "namespace/name" of the function. */
  function: string;
  /** Only lines newer than this LogsQL duration, e.g. `10m`, `1h`, `2d`. Default `1h`. */
  since?: string;
  /** Only the lines of one invocation. */
  requestId?: string;
  /** Most lines returned (the newest). Default 1,000. */
  limit?: number;
}

/** A LogsQL duration ESB accepts (`--since`). */
export const LOGSQL_DURATION = /^\d+(ms|s|m|h|d|w)$/;

/** The LogsQL filter of a query (without the time range). */
export function functionLogFilter(q: Pick<FunctionLogQuery, "function" | "requestId">): string {
  // JSON string quoting is what LogsQL's quoted strings accept.
  let filter = `{function=${JSON.stringify(q.function)}}`;
  if (q.requestId) filter += ` request_id:=${JSON.stringify(q.requestId)}`;
  return filter;
}

/** Options of {@link VictoriaLogsClient}. */
export interface VictoriaLogsClientOptions {
  /** Base URL, e.g. `http://127.0.0.1:9428`. */
  url: string;
  /** HTTP Basic credentials, when the store asks for them. */
  username?: string;
  password?: string;
}

/** Failure to read the log store; the message says what to check. */
export class LogStoreError extends Error {
  override name = "LogStoreError";
}

/**
 * Reads function logs from VictoriaLogs' LogsQL HTTP API
 * (`/select/logsql/query`, `/select/logsql/tail`).
 */
export class VictoriaLogsClient {
  private readonly base: string;
  private readonly headers: Record<string, string> = {};

  constructor(opts: VictoriaLogsClientOptions) {
    this.base = opts.url.replace(/\/+$/, "");
    if (opts.username)
      this.headers.authorization = `Basic ${Buffer.from(`${opts.username}:${opts.password ?? ""}`).toString("base64")}`;
  }

  /** The newest `limit` lines matching `q`, oldest first. */
  async query(q: FunctionLogQuery): Promise<StoredLogLine[]> {
    const since = q.since ?? "1h";
    if (!LOGSQL_DURATION.test(since))
      throw new LogStoreError(`"${since}" is not a duration such as 10m, 2h or 1d`);
    const limit = q.limit ?? 1000;
    const query = `_time:${since} ${functionLogFilter(q)} | sort by (_time desc) | limit ${limit}`;
    const res = await this.post("/select/logsql/query", { query });
    const lines: StoredLogLine[] = [];
    for (const text of (await res.text()).split("\n")) if (text) lines.push(storedLine(text));
    return lines.sort((a, b) => compareTimes(a.time, b.time));
  }

  /**
   * Lines matching `q` as they arrive (live tailing), until `signal` aborts;
   * lines not newer than `after` (an RFC 3339 time) are skipped.
   */
  async *tail(q: FunctionLogQuery, signal: AbortSignal, after?: string): AsyncGenerator<StoredLogLine> {
    const res = await this.post("/select/logsql/tail", { query: functionLogFilter(q) }, signal);
    const body = Readable.fromWeb(res.body as import("node:stream/web").ReadableStream<Uint8Array>);
    signal.addEventListener("abort", () => body.destroy(), { once: true });
    let last = after;
    try {
      for await (const text of createInterface({ input: body })) {
        if (!text) continue;
        const line = storedLine(text);
        if (last && compareTimes(line.time, last) <= 0) continue;
        last = line.time;
        yield line;
      }
    } catch (err) {
      if (!signal.aborted) throw err;
    }
  }

  private async post(path: string, params: Record<string, string>, signal?: AbortSignal): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, {
        method: "POST",
        headers: { ...this.headers, "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(params).toString(),
        signal,
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
      throw new LogStoreError(`cannot reach the log store at ${this.base} (${cause}): is esb up running?`);
    }
    if (res.status === 401 || res.status === 403) {
      await res.arrayBuffer();
      throw new LogStoreError(`the log store at ${this.base} refused the credentials (HTTP ${res.status})`);
    }
    if (!res.ok) {
      const text = (await res.text()).slice(0, 500);
      throw new LogStoreError(`the log store at ${this.base} answered HTTP ${res.status}: ${text}`);
    }
    return res;
  }
}

function storedLine(text: string): StoredLogLine {
  const r = JSON.parse(text) as Record<string, string | undefined>;
  const line: StoredLogLine = {
    time: r._time ?? "",
    message: r._msg ?? "",
    function: r.function ?? "",
    node: r.node ?? "",
    worker: r.worker ?? "",
    stream: r.stream ?? "",
  };
  if (r.request_id) line.requestId = r.request_id;
  if (r.version) line.version = r.version;
  if (r.level) line.level = r.level;
  return line;
}

/** Orders RFC 3339 times with up to nine fractional digits. */
export function compareTimes(a: string, b: string): number {
  const ns = (t: string): bigint => {
    const m = /^(.*?T\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(t);
    if (!m) return 0n;
    const seconds = BigInt(Math.floor(Date.parse(`${m[1]}${m[3]}`) / 1000));
    return seconds * 1_000_000_000n + BigInt((m[2] ?? "").padEnd(9, "0"));
  };
  const d = ns(a) - ns(b);
  return d < 0n ? -1 : d > 0n ? 1 : 0;
}
