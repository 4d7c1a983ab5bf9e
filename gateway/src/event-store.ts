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
 * Where accepted `Event` invocations live until they have run: on disk
 * ({@link SqliteEventStore}, survives restarts and crashes) or in memory
 * ({@link MemoryEventStore}, bounded, lost with the process). Every method is
 * synchronous: {@link add} returning means the event is stored (durably, for a
 * durable store), so the gateway may answer 202.
 */
export interface EventStore {
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

/** Bounds of an {@link EventStore}. */
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
 * An {@link EventStore} in the gateway's memory, for gateways without a disk
 * store (Kubernetes until its shared broker lands): bounded in count and bytes,
 * so a burst of large events cannot grow the process without limit; events are
 * lost if the process dies.
 */
export class MemoryEventStore implements EventStore {
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
