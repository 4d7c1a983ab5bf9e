import type { Logger } from "@esb/common";
import type { DeadLetter, DeadLetterReason, EventStore, StoredEvent } from "./event-store.js";
import type { FunctionInvoker, InvocationRequest } from "./function-invoker.js";
import type { FunctionRegistry } from "./function-registry.js";
import type { GatewayMetrics } from "./gateway-metrics.js";
import type { InvocationRecorder, InvocationStatus } from "./invocation-recorder.js";
import { LambdaApiError } from "./lambda-api-error.js";

/** AWS's EventInvokeConfig and how the queue works it. */
export interface EventQueueSettings {
  /** Event invocations run at once. */
  concurrency: number;
  /** Delays before the retries of a function error, in order (AWS: about 1 min, then 2 min). */
  retryDelaysMs: number[];
  /** MaximumRetryAttempts (0–2): function errors retried before the event is dead-lettered. */
  maxRetryAttempts: number;
  /** MaximumEventAgeInSeconds: an event older than this is dead-lettered instead of run. */
  maxEventAgeSeconds: number;
}

/** Longest wait between tries after throttles or system errors (AWS: 5 minutes). */
const MAX_BACKOFF_MS = 5 * 60_000;

interface Job {
  event: StoredEvent;
  /** Throttles and system errors so far (they do not use up retry attempts, as on AWS). */
  systemFailures: number;
}

/**
 * Asynchronous (`Event`) invocations. Each accepted event is put in an
 * {@link EventStore} before the caller gets its 202 and leaves it only once
 * its invocation has finished: succeeded, or failed for good and moved to the
 * dead letters. With a durable store, events still stored when the gateway
 * stops or crashes run after {@link start} (at least once: one that was
 * running when the gateway died runs again).
 *
 * Failures follow AWS: a function error (including a crash or timeout) uses
 * one of `maxRetryAttempts` retries, after `retryDelaysMs`; a throttle or
 * system error (no worker, no agent, function not ready) is retried with
 * exponential backoff until the event is `maxEventAgeSeconds` old. An event
 * whose retries or age run out, or whose function is gone, is dead-lettered
 * (`esb_gateway_events_dropped_total` counts them).
 */
export class EventInvocationQueue {
  private readonly waiting: Job[] = [];
  private running = 0;
  private delayed = 0;
  private readonly idleWaiters: (() => void)[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;
  /** Set once {@link close} has given up waiting: nothing starts any more. */
  private stopped = false;

  constructor(
    private readonly store: EventStore,
    private readonly invoker: FunctionInvoker,
    private readonly registry: FunctionRegistry,
    private readonly recorder: InvocationRecorder,
    private readonly metrics: GatewayMetrics,
    private readonly logger: Logger,
    private readonly settings: EventQueueSettings,
  ) {}

  /** Events waiting to run (not counting running ones or ones waiting to retry). */
  get depth(): number {
    return this.waiting.length;
  }

  /**
   * Queues every event the store holds, oldest first (those a previous gateway
   * accepted and did not finish). Call once the function registry is synced.
   */
  start(): void {
    const stored = this.store.pending();
    if (stored.length > 0) {
      const usage = this.store.usage();
      this.logger.info({ events: stored.length, bytes: usage.bytes }, "re-queued stored events");
    }
    for (const event of stored) this.waiting.push({ event, systemFailures: 0 });
    this.updateDepth();
    this.pump();
  }

  /**
   * Stores one event and queues it; returning means it is stored, so the
   * caller may answer 202. Throws TooManyRequestsException when the store is
   * full (count or bytes) or the gateway is stopping.
   */
  enqueue(req: InvocationRequest): void {
    if (this.closed) {
      throw new LambdaApiError(
        "TooManyRequestsException",
        "Rate Exceeded: the gateway is stopping.",
        { Reason: "CallerRateLimitExceeded" },
        1,
      );
    }
    const event = this.store.add({
      requestId: req.requestId,
      namespace: req.key.namespace,
      name: req.key.name,
      clientContext: req.clientContext,
      payload: req.payload,
      acceptedAt: Date.now(),
    });
    this.waiting.push({ event, systemFailures: 0 });
    this.updateDepth();
    this.pump();
  }

  /** Dead letters, oldest first. */
  deadLetters(limit?: number): DeadLetter[] {
    return this.store.deadLetters(limit);
  }

  /** Queues dead letters again (all, or those with these request ids); returns how many. */
  redrive(requestIds?: readonly string[]): number {
    const events = this.store.redrive(requestIds);
    for (const event of events) this.waiting.push({ event, systemFailures: 0 });
    this.updateDepth();
    this.pump();
    return events.length;
  }

  /** Resolves when nothing is waiting, running or scheduled for retry. */
  async idle(): Promise<void> {
    if (this.isIdle()) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Stops accepting events and lets invocations in progress finish for at most
   * `graceMs`, then closes the store. A durable store keeps every event not
   * finished by then (queued, waiting to retry or still running) for the next
   * start; an in-memory store has nowhere to keep them, so the queue keeps
   * working it during the grace period and says how many are lost.
   */
  async close(graceMs: number): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.delayed = 0;
    if (this.store.durable) this.waiting.length = 0;
    this.updateDepth();
    this.checkIdle();
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      this.idle().then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), graceMs))),
    ]);
    clearTimeout(timer);
    const left = this.store.usage();
    if (this.store.durable) {
      if (left.count > 0)
        this.logger.info(
          { stored: left.count, bytes: left.bytes, running: this.running, drained },
          "events left in the store for the next start",
        );
    } else if (left.count > 0) {
      this.logger.warn(
        { lost: left.count, running: this.running },
        "events not run before shutdown are lost: this gateway has no event store (GATEWAY_EVENT_STORE)",
      );
    }
    this.stopped = true;
    this.store.close();
  }

  private pump(): void {
    // A durable store keeps what has not started; an in-memory one is drained while it can be.
    if (this.stopped || (this.closed && this.store.durable)) return;
    while (this.running < this.settings.concurrency && this.waiting.length > 0) {
      const job = this.waiting.shift()!;
      this.running++;
      this.updateDepth();
      void this.run(job)
        .catch((err: unknown) =>
          this.logger.error({ err, requestId: job.event.requestId }, "event delivery failed unexpectedly"),
        )
        .finally(() => {
          this.running--;
          this.pump();
          this.checkIdle();
        });
    }
  }

  private async run(job: Job): Promise<void> {
    const { event } = job;
    const fnLabel = `${event.namespace}/${event.name}`;
    if (Date.now() - event.acceptedAt > this.settings.maxEventAgeSeconds * 1000)
      return this.giveUp(job, "EventAgeExceeded", undefined);
    const fn = this.registry.get(event.namespace, event.name);
    if (!fn) return this.giveUp(job, "FunctionNotFound", "ResourceNotFoundException");
    const payload = this.store.payload(event.seq);
    if (!payload) return; // gone from the store (closed, or re-driven twice)
    const started = performance.now();
    let status: InvocationStatus = "ok";
    let error: string | undefined;
    let startKind: "cold" | "warm" | "thawed" | "none" = "none";
    let systemFailure = false;
    try {
      const result = await this.invoker.invoke({
        key: { namespace: event.namespace, name: event.name },
        fn,
        payload,
        requestId: event.requestId,
        clientContext: event.clientContext,
      });
      startKind = result.startKind;
      if (result.functionError) {
        status = "function_error";
        error = result.errorType;
      }
    } catch (err) {
      systemFailure = true;
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
      requestId: event.requestId,
      function: fnLabel,
      type: "Event",
      status,
      startKind,
      durationMs: performance.now() - started,
      error,
      attempt: event.attempts + job.systemFailures + 1,
    });
    if (status === "ok") return this.store.remove(event.seq);
    if (systemFailure) {
      job.systemFailures++;
      const base = Math.max(this.settings.retryDelaysMs[0] ?? 1000, 1);
      return this.retryLater(job, Math.min(MAX_BACKOFF_MS, base * 2 ** (job.systemFailures - 1)));
    }
    event.attempts++;
    this.store.recordAttempt(event.seq, event.attempts);
    if (event.attempts > this.settings.maxRetryAttempts) return this.giveUp(job, "RetriesExhausted", error);
    this.retryLater(job, this.settings.retryDelaysMs[event.attempts - 1] ?? 0);
  }

  private retryLater(job: Job, delayMs: number): void {
    if (this.closed) return; // stays in a durable store for the next start
    this.metrics.eventRetries.inc({ function: `${job.event.namespace}/${job.event.name}` });
    this.delayed++;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      this.delayed--;
      this.waiting.push(job);
      this.updateDepth();
      this.pump();
    }, delayMs);
    this.timers.add(timer);
  }

  private giveUp(job: Job, reason: DeadLetterReason, error: string | undefined): void {
    const { event } = job;
    const fnLabel = `${event.namespace}/${event.name}`;
    this.store.deadLetter(event.seq, reason, error);
    this.metrics.eventsDropped.inc({ function: fnLabel });
    this.logger.warn(
      {
        requestId: event.requestId,
        function: fnLabel,
        reason,
        attempts: event.attempts,
        ageSeconds: Math.round((Date.now() - event.acceptedAt) / 1000),
        error,
      },
      "event moved to the dead letters",
    );
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
