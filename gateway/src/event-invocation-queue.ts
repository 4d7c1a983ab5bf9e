import type { Logger } from "@esb/common";
import type { DeadLetter, DeadLetterReason, EventDelivery, EventStore } from "./event-store.js";
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

/** How long a pull loop waits after the store failed to hand out an event (e.g. NATS unreachable). */
const STORE_RETRY_MS = 1000;

/**
 * Asynchronous (`Event`) invocations. Each accepted event is put in an
 * {@link EventStore} before the caller gets its 202 and leaves it only once
 * its invocation has finished: succeeded, or failed for good and moved to the
 * dead letters. The store hands out the events to run ({@link EventStore.next}):
 * a local store only to this gateway, a shared one (NATS JetStream) to whichever
 * replica asks first. With a durable store, events still stored when a gateway
 * stops or crashes run later (at least once: one that was running when its
 * gateway died runs again).
 *
 * Failures follow AWS: a function error (including a crash or timeout) uses
 * one of `maxRetryAttempts` retries, after `retryDelaysMs`; a throttle or
 * system error (no worker, no agent, function not ready) is retried with
 * exponential backoff until the event is `maxEventAgeSeconds` old. An event
 * whose retries or age run out, or whose function is gone, is dead-lettered
 * (`esb_gateway_events_dropped_total` counts them).
 */
export class EventInvocationQueue {
  private running = 0;
  private readonly loops: Promise<void>[] = [];
  private closed = false;
  /** Set once no new invocation may start (a durable store at close, any store after the grace). */
  private stopped = false;
  private depthTimer: NodeJS.Timeout | undefined;
  private depthDirty = false;
  private lastStoreWarning = 0;

  constructor(
    private readonly store: EventStore,
    private readonly invoker: FunctionInvoker,
    private readonly registry: FunctionRegistry,
    private readonly recorder: InvocationRecorder,
    private readonly metrics: GatewayMetrics,
    private readonly logger: Logger,
    private readonly settings: EventQueueSettings,
  ) {}

  /** Invocations this gateway is running now. */
  get runningCount(): number {
    return this.running;
  }

  /**
   * Starts running stored events (those a previous gateway accepted and did
   * not finish first). Call once the function registry is synced.
   */
  start(): void {
    void this.store.usage().then(
      (usage) => {
        if (usage.count > 0)
          this.logger.info({ events: usage.count, bytes: usage.bytes }, "re-queued stored events");
      },
      (err: unknown) => this.logger.warn({ err }, "event store unavailable; retrying"),
    );
    for (let i = 0; i < this.settings.concurrency; i++) this.loops.push(this.loop());
    this.refreshDepth();
  }

  /**
   * Stores one event; resolving means it is stored, so the caller may answer
   * 202. Rejects with TooManyRequestsException when the store is full (count
   * or bytes) or the gateway is stopping, ServiceException when the store is unreachable.
   */
  async enqueue(req: InvocationRequest): Promise<void> {
    if (this.closed) {
      throw new LambdaApiError(
        "TooManyRequestsException",
        "Rate Exceeded: the gateway is stopping.",
        { Reason: "CallerRateLimitExceeded" },
        1,
      );
    }
    await this.store.add({
      requestId: req.requestId,
      namespace: req.key.namespace,
      name: req.key.name,
      clientContext: req.clientContext,
      payload: req.payload,
      acceptedAt: Date.now(),
    });
    this.refreshDepth();
  }

  /** Dead letters, oldest first. */
  deadLetters(limit?: number): Promise<DeadLetter[]> {
    return this.store.deadLetters(limit);
  }

  /** Queues dead letters again (all, or those with these request ids); resolves with how many. */
  async redrive(requestIds?: readonly string[]): Promise<number> {
    const events = await this.store.redrive(requestIds);
    this.refreshDepth();
    return events.length;
  }

  /**
   * Resolves when this gateway runs nothing and the store holds no event
   * (waiting, retrying or running anywhere). Polls the store: for tests and shutdown.
   */
  async idle(): Promise<void> {
    while (this.running > 0 || (await this.store.usage()).count > 0) await sleep(20);
  }

  /**
   * Stops accepting events and lets invocations in progress finish for at most
   * `graceMs`, then closes the store. A durable store keeps every event not
   * finished by then (queued, waiting to retry or still running) for another
   * gateway or the next start; an in-memory store has nowhere to keep them, so
   * the queue keeps working it during the grace period and says how many are lost.
   */
  async close(graceMs: number): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.depthTimer);
    // A durable store keeps what has not started; an in-memory one is drained while it can be.
    if (this.store.durable) this.stopDelivering();
    let timer: NodeJS.Timeout | undefined;
    let waiting = true; // ends the polling below once the grace period is over
    const finished = (async () => {
      // A durable store keeps what has not started: only running invocations are waited for.
      while (waiting && (this.running > 0 || (!this.store.durable && (await this.store.usage()).count > 0)))
        await sleep(20);
    })().catch(() => {});
    const drained = await Promise.race([
      finished.then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), graceMs))),
    ]);
    waiting = false;
    clearTimeout(timer);
    this.stopDelivering();
    const left = await this.store.usage().catch(() => undefined);
    if (this.store.durable) {
      if (left && left.count > 0)
        this.logger.info(
          { stored: left.count, bytes: left.bytes, running: this.running, drained },
          "events left in the store for the next start",
        );
    } else if (left && left.count > 0) {
      this.logger.warn(
        { lost: left.count, running: this.running },
        "events not run before shutdown are lost: this gateway has no event store (GATEWAY_EVENT_STORE)",
      );
    }
    await this.store.close();
  }

  private stopDelivering(): void {
    this.stopped = true;
    this.store.stopDelivering();
  }

  /** One of `concurrency` loops: takes the next due event from the store and runs it. */
  private async loop(): Promise<void> {
    while (!this.stopped) {
      let delivery: EventDelivery | undefined;
      try {
        delivery = await this.store.next();
      } catch (err) {
        if (this.stopped) return;
        // One line per outage and loop would flood the log: at most one every 30 s.
        if (Date.now() - this.lastStoreWarning > 30_000) {
          this.lastStoreWarning = Date.now();
          this.logger.warn({ err }, "event store unavailable; retrying");
        }
        await sleep(STORE_RETRY_MS);
        continue;
      }
      if (!delivery) continue;
      if (this.stopped) {
        await delivery.release().catch(() => {});
        return;
      }
      this.running++;
      try {
        await this.run(delivery);
      } catch (err) {
        // The event stays leased and is delivered again (the store's lease or the next start).
        this.logger.error({ err, requestId: delivery.event.requestId }, "event delivery failed unexpectedly");
      } finally {
        this.running--;
        this.refreshDepth();
      }
    }
  }

  private async run(d: EventDelivery): Promise<void> {
    const { event } = d;
    const fnLabel = `${event.namespace}/${event.name}`;
    if (Date.now() - event.acceptedAt > this.settings.maxEventAgeSeconds * 1000)
      return this.giveUp(d, "EventAgeExceeded", undefined, event.attempts);
    const fn = this.registry.get(event.namespace, event.name);
    if (!fn) return this.giveUp(d, "FunctionNotFound", "ResourceNotFoundException", event.attempts);
    const started = performance.now();
    let status: InvocationStatus = "ok";
    let error: string | undefined;
    let startKind: "cold" | "warm" | "thawed" | "none" = "none";
    let systemFailure = false;
    try {
      const result = await this.invoker.invoke({
        key: { namespace: event.namespace, name: event.name },
        fn,
        payload: d.payload,
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
      attempt: event.attempts + d.systemFailures + 1,
    });
    if (status === "ok") return d.done();
    if (systemFailure) {
      const base = Math.max(this.settings.retryDelaysMs[0] ?? 1000, 1);
      return this.retryLater(d, Math.min(MAX_BACKOFF_MS, base * 2 ** d.systemFailures), false);
    }
    const attempts = event.attempts + 1;
    if (attempts > this.settings.maxRetryAttempts) return this.giveUp(d, "RetriesExhausted", error, attempts);
    return this.retryLater(d, this.settings.retryDelaysMs[attempts - 1] ?? 0, true);
  }

  private async retryLater(d: EventDelivery, delayMs: number, countsAttempt: boolean): Promise<void> {
    await d.retry(delayMs, countsAttempt);
    if (!this.closed) this.metrics.eventRetries.inc({ function: `${d.event.namespace}/${d.event.name}` });
  }

  private async giveUp(
    d: EventDelivery,
    reason: DeadLetterReason,
    error: string | undefined,
    attempts: number,
  ): Promise<void> {
    const { event } = d;
    const fnLabel = `${event.namespace}/${event.name}`;
    await d.deadLetter(reason, error, attempts);
    this.metrics.eventsDropped.inc({ function: fnLabel });
    this.logger.warn(
      {
        requestId: event.requestId,
        function: fnLabel,
        reason,
        attempts,
        ageSeconds: Math.round((Date.now() - event.acceptedAt) / 1000),
        error,
      },
      "event moved to the dead letters",
    );
  }

  /** Updates the depth gauge from the store, at most every 500 ms (a shared store answers over the network). */
  private refreshDepth(): void {
    if (this.depthTimer) {
      this.depthDirty = true;
      return;
    }
    this.depthTimer = setTimeout(() => {
      this.depthTimer = undefined;
      if (this.depthDirty) {
        this.depthDirty = false;
        this.refreshDepth();
      }
    }, 500);
    this.depthTimer.unref();
    void this.store.usage().then(
      (u) => this.metrics.eventQueueDepth.set(Math.max(0, u.count - this.running)),
      () => {},
    );
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
