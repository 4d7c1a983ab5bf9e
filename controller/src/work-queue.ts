import type { Logger } from "@esb/common";

/** What a work-queue handler may ask for after a successful run. */
export type WorkResult = void | { requeueAfterMs?: number };

/** Options of {@link WorkQueue}. */
export interface WorkQueueOptions {
  /** Keys handled at the same time (different keys only). Default 2. */
  concurrency?: number;
  /** First retry delay after a failure; doubles per consecutive failure. Default 200 ms. */
  baseDelayMs?: number;
  /** Upper bound of the retry delay. Default 60 s. */
  maxDelayMs?: number;
  /** Called after every run, for metrics. */
  onResult?: (key: string, outcome: "success" | "error", durationMs: number) => void;
  logger?: Logger;
}

/**
 * A queue of keys (`namespace/name`) handled by one async handler, like
 * client-go's rate-limited work queue: a key is queued at most once, the same
 * key is never handled twice at the same time (adding it while it is handled
 * runs it again afterwards), a handler that throws is retried after an
 * exponential backoff (reset on success), and a handler may ask to be run again
 * later (`requeueAfterMs`). Every handler gets the queue's AbortSignal, which
 * `stop({ abort: true })` fires so that work in flight ends at once.
 */
export class WorkQueue {
  private readonly queue = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly failures = new Map<string, number>();
  private readonly inFlight = new Set<Promise<void>>();
  private running = false;
  private stopped = false;
  /** Shared by every handler run: one abort cancels all the work in flight. */
  private readonly abortController = new AbortController();
  private readonly concurrency: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;

  constructor(
    private readonly handler: (key: string, signal: AbortSignal) => Promise<WorkResult>,
    private readonly options: WorkQueueOptions = {},
  ) {
    this.concurrency = options.concurrency ?? 2;
    this.baseDelayMs = options.baseDelayMs ?? 200;
    this.maxDelayMs = options.maxDelayMs ?? 60_000;
  }

  /** Keys waiting to be handled (not counting delayed ones). */
  get length(): number {
    return this.queue.size;
  }

  /** Starts handling keys (keys added before are kept). */
  start(): void {
    this.running = true;
    this.pump();
  }

  /**
   * Stops taking keys, cancels delayed ones and waits for running handlers.
   * With `abort`, the handlers' signal fires first (synchronously, before this
   * returns its promise), so they are asked to end now rather than finish; their
   * failures are then neither retried nor reported.
   */
  async stop(options: { abort?: boolean; reason?: unknown } = {}): Promise<void> {
    this.running = false;
    this.stopped = true;
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    if (options.abort) this.abortController.abort(options.reason ?? new Error("work queue stopped"));
    await Promise.allSettled([...this.inFlight]);
  }

  /** The signal every handler gets; aborted by `stop({ abort: true })`. */
  get signal(): AbortSignal {
    return this.abortController.signal;
  }

  /** Queues `key` now. */
  add(key: string): void {
    if (this.processing.has(key)) this.dirty.add(key);
    else this.queue.add(key);
    this.pump();
  }

  /** Queues `key` after `delayMs`, unless it is already due earlier. */
  addAfter(key: string, delayMs: number): void {
    if (this.stopped) return;
    const at = Date.now() + delayMs;
    const existing = this.timers.get(key);
    if (existing && existing.at <= at) return;
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, delayMs);
    timer.unref();
    this.timers.set(key, { at, timer });
  }

  /** Consecutive failures of `key` (0 after a success). */
  failuresOf(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  private pump(): void {
    if (!this.running) return;
    while (this.processing.size < this.concurrency && this.queue.size > 0) {
      const key = this.queue.values().next().value as string;
      this.queue.delete(key);
      this.processing.add(key);
      const p = this.runOne(key).finally(() => {
        this.inFlight.delete(p);
        this.processing.delete(key);
        if (this.dirty.delete(key)) this.queue.add(key);
        this.pump();
      });
      this.inFlight.add(p);
    }
  }

  private async runOne(key: string): Promise<void> {
    const started = Date.now();
    const signal = this.abortController.signal;
    try {
      const result = await this.handler(key, signal);
      this.failures.delete(key);
      this.options.onResult?.(key, "success", Date.now() - started);
      if (result && result.requeueAfterMs !== undefined) this.addAfter(key, result.requeueAfterMs);
    } catch (err) {
      if (signal.aborted) {
        // Cancelled on purpose (e.g. leadership lost): not a failure, and not retried here.
        this.options.logger?.debug({ key, err: String((err as Error)?.message ?? err) }, "handler aborted");
        return;
      }
      const n = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, n);
      const delay = Math.min(this.baseDelayMs * 2 ** (n - 1), this.maxDelayMs);
      this.options.onResult?.(key, "error", Date.now() - started);
      this.options.logger?.warn({ key, err, attempt: n, retryInMs: delay }, "reconcile failed; retrying");
      this.addAfter(key, delay);
    }
  }
}
