import { createLogger, type Logger } from "@esb/common";
import { Counter, Gauge, type Registry } from "prom-client";
import type { FunctionLogRecord } from "./function-log-records.js";

/** Fields that make a VictoriaLogs stream: one per worker (AWS's log stream), findable by function and node. */
export const LOG_STREAM_FIELDS = ["function", "node", "worker"] as const;

/** Options of {@link VictoriaLogsShipper}. */
export interface VictoriaLogsShipperOptions {
  /** Base URL of VictoriaLogs, e.g. `http://127.0.0.1:9428`. */
  url: string;
  /** HTTP Basic credentials (VictoriaLogs' `-httpAuth.username` / `-httpAuth.password`). */
  username?: string;
  password?: string;
  /** Most lines held while the store is slow or down; beyond it the oldest are dropped (counted). Default 20,000. */
  maxBufferedLines?: number;
  /** Most characters held (long lines count for what they weigh); beyond it the oldest are dropped. Default 32 Mi. */
  maxBufferedChars?: number;
  /** Most lines per POST. Default 1,000. */
  batchLines?: number;
  /** How long a line may wait for more to fill a batch. Default 500 ms. */
  flushIntervalMs?: number;
  /** First and longest wait before retrying a failed POST (doubling in between). Defaults 500 ms and 30 s. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** One warning per period at most about dropped lines. Default 60 s. */
  dropReportIntervalMs?: number;
  /** Timeout of one POST. Default 10 s. */
  requestTimeoutMs?: number;
  /** Where the shipping metrics are registered (the agent's /metrics registry). */
  registry?: Registry;
  logger?: Logger;
}

/**
 * Ships {@link FunctionLogRecord}s to VictoriaLogs' JSON-lines API
 * (`/insert/jsonline`, `Content-Type: application/stream+json`: without it
 * VictoriaLogs answers 200 and stores nothing). Lines wait in a bounded buffer
 * and go in batches, one POST at a time; a failed POST is retried with
 * exponential backoff and the lines are kept meanwhile. Nothing is lost
 * silently: when the buffer is full the oldest lines are dropped, counted in
 * `esb_agent_log_lines_dropped_total{reason}` and reported in one warning per
 * period; a batch the store rejects (HTTP 400) is counted as `rejected`.
 */
export class VictoriaLogsShipper {
  private readonly opts: Required<
    Omit<VictoriaLogsShipperOptions, "username" | "password" | "registry" | "logger">
  >;
  private readonly endpoint: string;
  private readonly headers: Record<string, string>;
  private readonly log: Logger;
  private buffer: string[] = [];
  /** Characters of the lines from head on. */
  private chars = 0;
  private head = 0;
  private sending = false;
  private timer: NodeJS.Timeout | undefined;
  private backoffMs = 0;
  private failingSince: number | undefined;
  private lastError = "";
  private droppedSinceReport = 0;
  private dropReport: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly shipped: Counter<never>;
  private readonly dropped: Counter<"reason">;
  private readonly failures: Counter<never>;
  private readonly buffered: Gauge<never>;

  constructor(options: VictoriaLogsShipperOptions) {
    this.opts = {
      url: options.url.replace(/\/+$/, ""),
      maxBufferedLines: options.maxBufferedLines ?? 20_000,
      maxBufferedChars: options.maxBufferedChars ?? 32 * 1024 * 1024,
      batchLines: options.batchLines ?? 1_000,
      flushIntervalMs: options.flushIntervalMs ?? 500,
      minBackoffMs: options.minBackoffMs ?? 500,
      maxBackoffMs: options.maxBackoffMs ?? 30_000,
      dropReportIntervalMs: options.dropReportIntervalMs ?? 60_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
    };
    const query = new URLSearchParams({
      _stream_fields: LOG_STREAM_FIELDS.join(","),
      _msg_field: "_msg",
      _time_field: "_time",
    });
    this.endpoint = `${this.opts.url}/insert/jsonline?${query.toString()}`;
    this.headers = { "content-type": "application/stream+json" };
    if (options.username)
      this.headers.authorization = `Basic ${Buffer.from(`${options.username}:${options.password ?? ""}`).toString("base64")}`;
    this.log = options.logger ?? createLogger("log-shipper");
    const registers = options.registry ? [options.registry] : [];
    this.shipped = new Counter({
      name: "esb_agent_log_lines_shipped_total",
      help: "Worker log lines stored in the log store (VictoriaLogs).",
      registers,
    });
    this.dropped = new Counter({
      name: "esb_agent_log_lines_dropped_total",
      help: "Worker log lines lost (reason: buffer_full while the store was down or slow, rejected by the store, shutdown).",
      labelNames: ["reason"],
      registers,
    });
    this.failures = new Counter({
      name: "esb_agent_log_ship_failures_total",
      help: "POSTs to the log store that failed and were retried.",
      registers,
    });
    this.buffered = new Gauge({
      name: "esb_agent_log_buffer_lines",
      help: "Worker log lines waiting to be shipped.",
      registers,
      collect: () => this.buffered.set(this.size),
    });
  }

  /** Lines waiting to be shipped. */
  get size(): number {
    return this.buffer.length - this.head;
  }

  /** Queues one record; never blocks and never throws. */
  push(record: FunctionLogRecord): void {
    if (this.closed) return;
    const line = JSON.stringify(toStoreFields(record));
    let dropped = 0;
    // The oldest lines go first, until the new one fits both bounds.
    while (
      this.size > 0 &&
      (this.size >= this.opts.maxBufferedLines || this.chars + line.length > this.opts.maxBufferedChars)
    ) {
      this.chars -= this.buffer[this.head].length;
      this.head++;
      dropped++;
    }
    if (dropped > 0) this.drop("buffer_full", dropped);
    this.buffer.push(line);
    this.chars += line.length;
    if (this.head > 4096 && this.head * 2 > this.buffer.length) {
      this.buffer = this.buffer.slice(this.head);
      this.head = 0;
    }
    this.schedule(this.size >= this.opts.batchLines ? 0 : this.opts.flushIntervalMs);
  }

  /**
   * Ships what is buffered, waiting at most `timeoutMs`; lines still unsent then
   * are counted as dropped (`shutdown`) and reported. Later pushes are ignored.
   */
  async close(timeoutMs = 5_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.size > 0 && Date.now() < until) {
      if (!this.sending && !(await this.sendBatch())) {
        await new Promise((r) => setTimeout(r, Math.min(200, Math.max(0, until - Date.now()))));
      } else if (this.sending) {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    if (this.size > 0) this.drop("shutdown", this.size);
    this.buffer = [];
    this.head = 0;
    this.chars = 0;
    clearTimeout(this.dropReport);
    this.reportDrops();
  }

  private schedule(delayMs: number): void {
    if (this.closed || this.sending) return;
    if (this.timer) {
      // A batch-full push must not cut a retry backoff short (the store is down).
      if (delayMs > 0 || this.failingSince !== undefined) return;
      clearTimeout(this.timer);
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.sendBatch().then((ok) => {
        if (this.size === 0) return;
        this.schedule(
          ok ? (this.size >= this.opts.batchLines ? 0 : this.opts.flushIntervalMs) : this.backoffMs,
        );
      });
    }, delayMs);
    // Pending logs must not keep a stopping process alive; close() ships them.
    this.timer.unref();
  }

  /** POSTs one batch; true when the store took it (or rejected it for good). */
  private async sendBatch(): Promise<boolean> {
    if (this.sending || this.size === 0) return true;
    this.sending = true;
    const n = Math.min(this.size, this.opts.batchLines);
    const lines = this.buffer.slice(this.head, this.head + n);
    try {
      const res = await fetch(this.endpoint, {
        method: "POST",
        headers: this.headers,
        body: `${lines.join("\n")}\n`,
        signal: AbortSignal.timeout(this.opts.requestTimeoutMs),
      });
      const text = await res.text().catch(() => "");
      if (res.status === 400) {
        // The store will never take these lines: retrying would block every later one.
        this.take(lines);
        this.drop("rejected", lines.length);
        this.lastError = `HTTP 400: ${text.slice(0, 200)}`;
        return true;
      }
      if (!res.ok) throw new Error(`HTTP ${res.status}${text ? `: ${text.slice(0, 200)}` : ""}`);
      this.take(lines);
      this.shipped.inc(lines.length);
      if (this.failingSince !== undefined) {
        this.log.info(
          { url: this.opts.url, downSeconds: Math.round((Date.now() - this.failingSince) / 1000) },
          "log store reachable again; shipping the buffered worker logs",
        );
        this.failingSince = undefined;
      }
      this.backoffMs = 0;
      return true;
    } catch (err) {
      this.failures.inc();
      this.lastError = (err as Error).message;
      if (this.failingSince === undefined) {
        this.failingSince = Date.now();
        this.log.warn(
          { url: this.opts.url, err: this.lastError },
          "log store unreachable: worker logs are buffered and retried",
        );
      }
      this.backoffMs = Math.min(this.opts.maxBackoffMs, Math.max(this.opts.minBackoffMs, this.backoffMs * 2));
      return false;
    } finally {
      this.sending = false;
    }
  }

  /** Removes the shipped lines from the buffer's front, unless they were dropped meanwhile. */
  private take(lines: string[]): void {
    // Lines pushed out by a full buffer during the POST moved head past some of them.
    let i = 0;
    while (i < lines.length && this.head < this.buffer.length && this.buffer[this.head] === lines[i]) {
      this.chars -= lines[i].length;
      this.head++;
      i++;
    }
  }

  private drop(reason: "buffer_full" | "rejected" | "shutdown", n: number): void {
    this.dropped.inc({ reason }, n);
    this.droppedSinceReport += n;
    if (!this.dropReport && !this.closed) {
      // One warning per period, however many lines go.
      this.dropReport = setTimeout(() => {
        this.dropReport = undefined;
        this.reportDrops();
      }, this.opts.dropReportIntervalMs);
      this.dropReport.unref();
      if (this.droppedSinceReport === n) this.reportDrops();
    }
  }

  private reportDrops(): void {
    if (this.droppedSinceReport === 0) return;
    this.log.warn(
      { url: this.opts.url, dropped: this.droppedSinceReport, err: this.lastError || undefined },
      "worker log lines dropped (log store down or rejecting); see esb_agent_log_lines_dropped_total",
    );
    this.droppedSinceReport = 0;
  }
}

/** The record as VictoriaLogs stores it (snake_case fields, `_msg`, `_time`). */
function toStoreFields(r: FunctionLogRecord): Record<string, string> {
  const out: Record<string, string> = {
    _time: r.time,
    _msg: r.message,
    function: r.function,
    node: r.node,
    worker: r.worker,
    stream: r.stream,
  };
  if (r.requestId) out.request_id = r.requestId;
  if (r.version) out.version = r.version;
  if (r.level) out.level = r.level;
  return out;
}
