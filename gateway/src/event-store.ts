import { LambdaApiError } from "./lambda-api-error.js";

/** One accepted `Event` invocation as kept until it has run (or failed for good). */
export interface StoredEvent {
  /** Store sequence number: events are delivered in this (acceptance) order. */
  seq: number;
  requestId: string;
  namespace: string;
  name: string;
  /** `X-Amz-Client-Context` as received (base64 JSON), if any. */
  clientContext?: string;
  /** When the 202 was sent (ms since the epoch); MaximumEventAgeInSeconds counts from here. */
  acceptedAt: number;
  /** Attempts that counted against MaximumRetryAttempts so far (function errors). */
  attempts: number;
  /** Bytes charged against the store's bound (payload and client context). */
  bytes: number;
}

/** A new event to store: everything but the sequence number, attempts and size. */
export type NewEvent = Omit<StoredEvent, "seq" | "attempts" | "bytes"> & { payload: Buffer };

/** Why an event was given up on (AWS's on-failure destination conditions). */
export type DeadLetterReason = "RetriesExhausted" | "EventAgeExceeded" | "FunctionNotFound";

/** An event given up on, kept where the user can read and re-drive it. */
export interface DeadLetter extends StoredEvent {
  payload: Buffer;
  reason: DeadLetterReason;
  /** The last error (AWS error type or function errorType). */
  error?: string;
  /** When it was given up on (ms since the epoch). */
  failedAt: number;
}

/** How full the store is. */
export interface EventStoreUsage {
  count: number;
  bytes: number;
}

/**
 * One event handed to a gateway to run. The store keeps it (leased to this
 * gateway) until exactly one of the settling methods is called; a gateway that
 * dies first never settles it, and the event is delivered again (at least once).
 */
export interface EventDelivery {
  readonly event: StoredEvent;
  readonly payload: Buffer;
  /**
   * Throttles and system errors since the event last used a retry attempt (or
   * was accepted): drives the exponential backoff, never the attempt count.
   */
  readonly systemFailures: number;
  /** The invocation finished (succeeded): the event leaves the store. */
  done(): Promise<void>;
  /**
   * Delivers the event again in `delayMs`. `countsAttempt` (a function error)
   * adds one to its durable attempt count; a throttle or system error does not.
   */
  retry(delayMs: number, countsAttempt: boolean): Promise<void>;
  /** Moves the event to the dead letters, with `attempts` (default: the event's) as its attempt count. */
  deadLetter(reason: DeadLetterReason, error: string | undefined, attempts?: number): Promise<void>;
  /** Not run (the gateway is stopping): the event stays stored, due now, for another gateway or the next start. */
  release(): Promise<void>;
}

/**
 * Where accepted `Event` invocations live until they have run, and who hands
 * them out: {@link LocalEventScheduler} over a {@link LocalEventStore} (this
 * process alone: an SQLite file or memory) or the NATS JetStream store (a work
 * queue shared by every gateway replica). Every implementation runs the
 * conformance suite in `event-store-conformance.ts`.
 */
export interface EventStore {
  /** True when events survive the gateway process. */
  readonly durable: boolean;
  /**
   * Stores an event; resolving means it is stored (durably, for a durable
   * store), so the gateway may answer 202. Rejects with TooManyRequestsException
   * when the store is full (count or bytes), ServiceException when it is unreachable.
   */
  add(event: NewEvent): Promise<StoredEvent>;
  /**
   * The next event due to run, oldest first, waiting until one is; each is
   * handed to one caller (one gateway) at a time. Resolves undefined once
   * {@link stopDelivering} or {@link close} was called.
   */
  next(): Promise<EventDelivery | undefined>;
  /** Stops handing out events (pending {@link next} calls resolve undefined); settling still works. */
  stopDelivering(): void;
  /** Dead letters, oldest first (at most `limit`). */
  deadLetters(limit?: number): Promise<DeadLetter[]>;
  /**
   * Moves dead letters back to the stored events (all, or those whose request
   * ids are given) with a fresh age and retry budget; resolves with them in order.
   * Rejects with TooManyRequestsException, moving none, when they do not fit.
   */
  redrive(requestIds?: readonly string[]): Promise<StoredEvent[]>;
  /** Stored (not dead-lettered) events, running ones included, and their bytes. */
  usage(): Promise<EventStoreUsage>;
  /** Releases the store; events not settled stay stored (a durable store) or are lost. */
  close(): Promise<void>;
}

/**
 * A store of events kept by this process alone, synchronous, with no notion of
 * who runs what: {@link SqliteEventStore} (survives restarts and crashes) or
 * {@link MemoryEventStore} (bounded, lost with the process).
 * {@link LocalEventScheduler} makes one an {@link EventStore}.
 */
export interface LocalEventStore {
  /** True when events survive the gateway process. */
  readonly durable: boolean;
  /**
   * Stores an event. Throws TooManyRequestsException when it would exceed the
   * store's count or byte bound.
   */
  add(event: NewEvent): StoredEvent;
  /** Every stored (not dead-lettered) event, oldest first, without payloads. */
  pending(): StoredEvent[];
  /** The payload of a stored event, or undefined if it is gone. */
  payload(seq: number): Buffer | undefined;
  /** Records that an attempt counted against the retry budget failed. */
  recordAttempt(seq: number, attempts: number): void;
  /** Forgets an event whose invocation finished. */
  remove(seq: number): void;
  /** Moves an event to the dead letters. */
  deadLetter(seq: number, reason: DeadLetterReason, error: string | undefined): void;
  /** Dead letters, oldest first (at most `limit`). */
  deadLetters(limit?: number): DeadLetter[];
  /**
   * Moves dead letters back to the stored events (all, or those whose request
   * ids are given) with a fresh age and retry budget; returns them in order.
   */
  redrive(requestIds?: readonly string[]): StoredEvent[];
  /** Stored (not dead-lettered) events and their bytes. */
  usage(): EventStoreUsage;
  /** Releases the store; further calls throw or do nothing. */
  close(): void;
}

/** Bounds of an event store. */
export interface EventStoreLimits {
  /** Most stored events. */
  maxCount: number;
  /** Most stored bytes (payloads and client contexts). */
  maxBytes: number;
  /** Most dead letters kept; the oldest are evicted (with a log line) beyond it. */
  maxDeadLetters: number;
}

/** Bytes an event is charged: what the store must keep of it. */
export function eventBytes(payload: Buffer, clientContext: string | undefined): number {
  return payload.length + (clientContext?.length ?? 0);
}

/** The 429 for a full store: the caller (the AWS SDKs retry 429s) should try again later. */
export function queueFullError(usage: EventStoreUsage, limits: EventStoreLimits): LambdaApiError {
  return new LambdaApiError(
    "TooManyRequestsException",
    `Rate Exceeded: the gateway's event queue is full (${usage.count} events, ${usage.bytes} bytes; ` +
      `limits ${limits.maxCount} events, ${limits.maxBytes} bytes).`,
    { Reason: "CallerRateLimitExceeded" },
    1,
  );
}

/**
 * A {@link LocalEventStore} in the gateway's memory, for gateways without a
 * durable store (`events.store: memory` in the chart): bounded in count and bytes,
 * so a burst of large events cannot grow the process without limit; events are
 * lost if the process dies.
 */
export class MemoryEventStore implements LocalEventStore {
  readonly durable = false;
  private readonly events = new Map<number, StoredEvent & { payload: Buffer }>();
  private readonly dead: DeadLetter[] = [];
  private nextSeq = 1;
  private bytes = 0;

  constructor(
    private readonly limits: EventStoreLimits,
    private readonly onEvict: (letter: DeadLetter) => void = () => {},
  ) {}

  add(event: NewEvent): StoredEvent {
    const bytes = eventBytes(event.payload, event.clientContext);
    const usage = this.usage();
    if (usage.count + 1 > this.limits.maxCount || usage.bytes + bytes > this.limits.maxBytes)
      throw queueFullError(usage, this.limits);
    const stored = { ...event, seq: this.nextSeq++, attempts: 0, bytes };
    this.events.set(stored.seq, stored);
    this.bytes += bytes;
    return withoutPayload(stored);
  }

  pending(): StoredEvent[] {
    return [...this.events.values()].map(withoutPayload);
  }

  payload(seq: number): Buffer | undefined {
    return this.events.get(seq)?.payload;
  }

  recordAttempt(seq: number, attempts: number): void {
    const e = this.events.get(seq);
    if (e) e.attempts = attempts;
  }

  remove(seq: number): void {
    const e = this.events.get(seq);
    if (!e) return;
    this.events.delete(seq);
    this.bytes -= e.bytes;
  }

  deadLetter(seq: number, reason: DeadLetterReason, error: string | undefined): void {
    const e = this.events.get(seq);
    if (!e) return;
    this.remove(seq);
    this.dead.push({ ...e, reason, error, failedAt: Date.now() });
    while (this.dead.length > this.limits.maxDeadLetters) this.onEvict(this.dead.shift()!);
  }

  deadLetters(limit = Number.MAX_SAFE_INTEGER): DeadLetter[] {
    return this.dead.slice(0, limit);
  }

  redrive(requestIds?: readonly string[]): StoredEvent[] {
    const wanted = requestIds && new Set(requestIds);
    const out: StoredEvent[] = [];
    for (let i = 0; i < this.dead.length;) {
      const d = this.dead[i];
      if (wanted && !wanted.has(d.requestId)) {
        i++;
        continue;
      }
      // Added first: a full store throws and the dead letter stays.
      out.push(
        this.add({
          requestId: d.requestId,
          namespace: d.namespace,
          name: d.name,
          clientContext: d.clientContext,
          payload: d.payload,
          acceptedAt: Date.now(),
        }),
      );
      this.dead.splice(i, 1);
    }
    return out;
  }

  usage(): EventStoreUsage {
    return { count: this.events.size, bytes: this.bytes };
  }

  close(): void {}
}

function withoutPayload(e: StoredEvent & { payload?: Buffer }): StoredEvent {
  const { payload: _payload, ...rest } = e;
  return rest;
}
