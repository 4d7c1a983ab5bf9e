import type { Logger } from "@esb/common";
import type { FunctionInvoker, InvocationRequest } from "./function-invoker.js";
import type { GatewayMetrics } from "./gateway-metrics.js";
import type { InvocationRecorder, InvocationStatus } from "./invocation-recorder.js";
import { LambdaApiError } from "./lambda-api-error.js";

/**
 * Asynchronous (`Event`) invocations: a bounded in-memory queue worked by
 * `concurrency` runners. A failed invocation (function error, timeout, worker
 * crash, throttle or agent error) is retried twice, after `retryDelaysMs[0]` and
 * `retryDelaysMs[1]`, like AWS; then it is dropped with a log line and
 * `esb_gateway_events_dropped_total`. Events are lost if the gateway stops
 * (AWS keeps them durably; ESB does not).
 */
export class EventInvocationQueue {
  private readonly waiting: { req: InvocationRequest; attempt: number }[] = [];
  private running = 0;
  private delayed = 0;
  private readonly idleWaiters: (() => void)[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;

  constructor(
    private readonly invoker: FunctionInvoker,
    private readonly recorder: InvocationRecorder,
    private readonly metrics: GatewayMetrics,
    private readonly logger: Logger,
    private readonly maxSize: number,
    private readonly concurrency: number,
    private readonly retryDelaysMs: number[],
  ) {}

  /** Events waiting to run (not counting running ones or ones waiting to retry). */
  get depth(): number {
    return this.waiting.length;
  }

  /**
   * Queues one event. Throws TooManyRequestsException when `maxSize` events are
   * already waiting (or the gateway is stopping).
   */
  enqueue(req: InvocationRequest): void {
    if (this.closed || this.waiting.length + this.delayed >= this.maxSize) {
      throw new LambdaApiError(
        "TooManyRequestsException",
        "Rate Exceeded: the gateway's event queue is full.",
        { Reason: "CallerRateLimitExceeded" },
        1,
      );
    }
    this.waiting.push({ req, attempt: 1 });
    this.updateDepth();
    this.pump();
  }

  /** Resolves when nothing is waiting, running or scheduled for retry. */
  async idle(): Promise<void> {
    if (this.isIdle()) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops accepting events and cancels scheduled retries. */
  close(): void {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.delayed = 0;
    if (this.waiting.length)
      this.logger.warn({ dropped: this.waiting.length }, "dropping queued events at shutdown");
    this.waiting.length = 0;
    this.updateDepth();
    this.checkIdle();
  }

  private pump(): void {
    while (this.running < this.concurrency && this.waiting.length > 0) {
      const job = this.waiting.shift()!;
      this.running++;
      this.updateDepth();
      void this.run(job.req, job.attempt).finally(() => {
        this.running--;
        this.pump();
        this.checkIdle();
      });
    }
  }

  private async run(req: InvocationRequest, attempt: number): Promise<void> {
    const started = performance.now();
    const fnLabel = `${req.key.namespace}/${req.key.name}`;
    let status: InvocationStatus = "ok";
    let error: string | undefined;
    let startKind: "cold" | "warm" | "thawed" | "none" = "none";
    try {
      const result = await this.invoker.invoke(req);
      startKind = result.startKind;
      if (result.functionError) {
        status = "function_error";
        error = result.errorType;
      }
    } catch (err) {
      if (err instanceof LambdaApiError) {
        status =
          err.type === "TooManyRequestsException"
            ? "throttled"
            : err.statusCode >= 500
              ? "service_error"
              : "client_error";
        error = err.type;
      } else {
        status = "service_error";
        error = String(err);
      }
    }
    this.recorder.record({
      requestId: req.requestId,
      function: fnLabel,
      type: "Event",
      status,
      startKind,
      durationMs: performance.now() - started,
      error,
      attempt,
    });
    if (status === "ok" || this.closed) return;
    if (attempt > this.retryDelaysMs.length) {
      this.metrics.eventsDropped.inc({ function: fnLabel });
      this.logger.warn(
        { requestId: req.requestId, function: fnLabel, attempts: attempt, error },
        "event dropped after all retries",
      );
      return;
    }
    this.metrics.eventRetries.inc({ function: fnLabel });
    this.delayed++;
    const timer = setTimeout(
      () => {
        this.timers.delete(timer);
        this.delayed--;
        this.waiting.push({ req, attempt: attempt + 1 });
        this.updateDepth();
        this.pump();
      },
      this.retryDelaysMs[attempt - 1],
    );
    this.timers.add(timer);
  }

  private isIdle(): boolean {
    return this.waiting.length === 0 && this.running === 0 && this.delayed === 0;
  }

  private checkIdle(): void {
    if (!this.isIdle()) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  private updateDepth(): void {
    this.metrics.eventQueueDepth.set(this.waiting.length);
  }
}
