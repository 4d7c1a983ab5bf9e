import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type Consumer,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import { connect, nanos, type MsgHdrs, type NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "@esb/common";
import {
  eventBytes,
  queueFullError,
  type DeadLetter,
  type EventDelivery,
  type EventStore,
  type EventStoreLimits,
  type EventStoreUsage,
  type NewEvent,
  type StoredEvent,
} from "./event-store.js";
import { LambdaApiError } from "./lambda-api-error.js";
import { eventHeaders, H, toDeadLetter, toEvent, withoutLetter } from "./nats-event-headers.js";

/** Where and how to reach NATS, and the names of the streams. */
export interface NatsEventStoreOptions {
  /** `nats://host:4222` (user and password may be in the URL: `nats://user:pass@host:4222`). */
  url: string;
  /** The server's authorization token, if it uses one. */
  token?: string;
  /** Stream of pending events (default `ESB_EVENTS`); the dead letters go to `<stream>_DEAD`. */
  stream?: string;
  limits: EventStoreLimits;
  /**
   * AckWait: a delivered event not settled (nor marked in progress) for this
   * long is delivered again, to any gateway: how long a dead gateway's events wait.
   */
  ackWaitMs: number;
  /** Stream replicas (a NATS cluster), default 1. */
  replicas?: number;
  logger: Logger;
}

/** Durable consumer every gateway pulls from: one work queue for all replicas. */
const CONSUMER = "gateways";
/** How long one pull waits for an event before asking again (bounds how late a stop is noticed). */
const PULL_EXPIRES_MS = 1000;
/** How long an add or settle waits for NATS before it fails (the caller gets a 500, nothing is lost). */
const REQUEST_TIMEOUT_MS = 5000;

interface Ctx {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
}

/**
 * An {@link EventStore} on NATS JetStream, shared by every gateway replica that
 * names the same server and stream. Pending events are messages of a
 * work-queue stream (file storage, `max_msgs`/`max_bytes` with discard=new, so
 * a full stream refuses instead of dropping); one durable pull consumer hands
 * each to one gateway at a time, which marks it in progress while it runs and
 * acknowledges it (removing it) only once it succeeded or went to the dead
 * letters. A gateway that dies leaves its events unacknowledged: after AckWait
 * another gateway gets them. Retries of function errors are republished with
 * a higher `Esb-Attempts` header and an `Esb-Not-Before` time (so the count is
 * durable); throttles and system errors are negatively acknowledged with a
 * delay. Dead letters are messages of `<stream>_DEAD` (limits retention, the
 * newest `maxDeadLetters` kept), readable with the `nats` CLI.
 */
export class NatsEventStore implements EventStore {
  readonly durable = true;
  private readonly stream: string;
  private readonly dead: string;
  private readonly subject: string;
  private readonly deadSubject: string;
  /** The connection and streams, set up on first use and again after a failed setup. */
  private ready: Promise<Ctx> | undefined;
  private connection: Promise<NatsConnection> | undefined;
  private consumer: Consumer | undefined;
  private nc: NatsConnection | undefined;
  private delivering = true;
  private closed = false;
  /** Deliveries not settled yet: released (due again at once, for another gateway) at close. */
  private readonly unsettled = new Set<EventDelivery>();

  constructor(private readonly options: NatsEventStoreOptions) {
    this.stream = options.stream ?? "ESB_EVENTS";
    this.dead = `${this.stream}_DEAD`;
    this.subject = `${this.stream}.pending`;
    this.deadSubject = `${this.stream}.dead`;
  }

  async add(event: NewEvent): Promise<StoredEvent> {
    const bytes = eventBytes(event.payload, event.clientContext);
    const h = eventHeaders(event, 0);
    const seq = await this.publish(this.subject, event.payload, h, event.requestId);
    const { payload: _payload, ...rest } = event;
    return { ...rest, seq, attempts: 0, bytes };
  }

  async next(): Promise<EventDelivery | undefined> {
    while (this.delivering) {
      const { js } = await this.ctx();
      let m: JsMsg | null;
      try {
        this.consumer ??= await js.consumers.get(this.stream, CONSUMER);
        m = await this.consumer.next({ expires: PULL_EXPIRES_MS });
      } catch (err) {
        this.setUpAgain();
        throw err;
      }
      if (!m) continue;
      if (!this.delivering) {
        m.nak();
        break;
      }
      const notBefore = Number(m.headers?.get(H.notBefore) || 0);
      if (notBefore > Date.now()) {
        m.nak(notBefore - Date.now()); // a function-error retry whose delay has not passed
        continue;
      }
      return this.delivery(m, notBefore > m.time.getTime());
    }
    return undefined;
  }

  stopDelivering(): void {
    this.delivering = false;
  }

  async deadLetters(limit = Number.MAX_SAFE_INTEGER): Promise<DeadLetter[]> {
    const { js, jsm } = await this.ctx();
    const count = (await jsm.streams.info(this.dead)).state.messages;
    const want = Math.min(limit, count);
    if (want === 0) return [];
    // An ordered consumer: an ephemeral, unacknowledged read of the stream from its start.
    const reader = await js.consumers.get(this.dead, { deliver_policy: DeliverPolicy.All });
    const out: DeadLetter[] = [];
    const messages = await reader.fetch({ max_messages: want, expires: REQUEST_TIMEOUT_MS });
    for await (const m of messages) {
      out.push(toDeadLetter(m.seq, m.headers, m.data));
      if (out.length >= want || m.info.pending === 0) break;
    }
    await reader.delete().catch(() => {});
    return out;
  }

  async redrive(requestIds?: readonly string[]): Promise<StoredEvent[]> {
    const wanted = requestIds && new Set(requestIds);
    const letters = (await this.deadLetters()).filter((d) => !wanted || wanted.has(d.requestId));
    const usage = await this.usage();
    const bytes = letters.reduce((sum, d) => sum + d.bytes, 0);
    const { maxCount, maxBytes } = this.options.limits;
    // All or nothing, like the other stores (the stream would refuse one by one).
    if (usage.count + letters.length > maxCount || usage.bytes + bytes > maxBytes)
      throw queueFullError(usage, this.options.limits);
    const { jsm } = await this.ctx();
    const out: StoredEvent[] = [];
    for (const d of letters) {
      const event = { ...d, acceptedAt: Date.now() };
      const seq = await this.publish(
        this.subject,
        d.payload,
        eventHeaders(event, 0),
        `${d.requestId}:r${d.seq}`,
      );
      await jsm.streams.deleteMessage(this.dead, d.seq, false);
      out.push({ ...withoutLetter(d), seq, acceptedAt: event.acceptedAt, attempts: 0 });
    }
    return out;
  }

  async usage(): Promise<EventStoreUsage> {
    const { jsm } = await this.ctx();
    const { state } = await jsm.streams.info(this.stream);
    return { count: state.messages, bytes: state.bytes };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.delivering = false;
    for (const d of [...this.unsettled]) await d.release();
    if (this.nc) {
      await this.nc.flush().catch(() => {});
      await this.nc.close();
    } else {
      // Still connecting: close it whenever it connects.
      void this.connection?.then(
        (nc) => nc.close(),
        () => {},
      );
    }
  }

  private async setUp(): Promise<Ctx> {
    const { url, token, limits, ackWaitMs, replicas = 1 } = this.options;
    // One connection for the store's life once made; it reconnects by itself (forever) when NATS restarts.
    this.connection ??= connect({
      servers: url,
      token,
      name: "esb-gateway",
      maxReconnectAttempts: -1,
      timeout: REQUEST_TIMEOUT_MS,
    });
    const nc = await this.connection.catch((err: unknown) => {
      this.connection = undefined; // NATS down, or refused credentials: connect again on the next use
      throw err;
    });
    if (this.closed) {
      await nc.close();
      throw new Error("the event store is closed");
    }
    this.nc = nc;
    const jsm = await jetstreamManager(nc, { timeout: REQUEST_TIMEOUT_MS });
    const pending = {
      name: this.stream,
      subjects: [this.subject],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      num_replicas: replicas,
      max_msgs: limits.maxCount,
      max_bytes: limits.maxBytes,
      discard: DiscardPolicy.New,
      duplicate_window: nanos(120_000),
    };
    const dead = {
      name: this.dead,
      subjects: [this.deadSubject],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      num_replicas: replicas,
      max_msgs: limits.maxDeadLetters,
      discard: DiscardPolicy.Old,
    };
    // Every gateway applies the same configuration: the first creates, the others update (limits may change).
    for (const cfg of [pending, dead]) {
      const exists = await jsm.streams.info(cfg.name).then(
        () => true,
        () => false,
      );
      if (exists) await jsm.streams.update(cfg.name, cfg);
      else await jsm.streams.add(cfg).catch(() => jsm.streams.update(cfg.name, cfg)); // another gateway won the race
    }
    const consumer = {
      durable_name: CONSUMER,
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(ackWaitMs),
      max_deliver: -1,
      max_ack_pending: -1,
    };
    await jsm.consumers
      .add(this.stream, consumer)
      .catch(() => jsm.consumers.update(this.stream, CONSUMER, consumer));
    this.options.logger.info({ url: redact(url), stream: this.stream }, "event store: NATS JetStream ready");
    return { nc, js: jetstream(nc, { timeout: REQUEST_TIMEOUT_MS }), jsm };
  }

  /**
   * Makes the next use create the streams and consumer again (on the same
   * connection): a NATS that restarted without its store (an emptyDir) has lost them.
   */
  private setUpAgain(): void {
    this.ready = undefined;
    this.consumer = undefined;
  }

  /** The connection, or ServiceException when NATS has not answered within the request timeout. */
  private async ctx(): Promise<Ctx> {
    if (this.closed) throw this.unavailable(new Error("the event store is closed"));
    if (!this.ready) {
      const ready = this.setUp();
      this.ready = ready;
      // A failed setup (JetStream not ready yet, NATS down) is tried again on the next use.
      ready.catch(() => {
        if (this.ready === ready) this.ready = undefined;
      });
    }
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        this.ready,
        new Promise<never>(
          (_, reject) => (timer = setTimeout(() => reject(new Error("not connected")), REQUEST_TIMEOUT_MS)),
        ),
      ]);
    } catch (err) {
      throw this.unavailable(err);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Publishes and waits for JetStream's acknowledgement (stored on disk); returns the stream sequence. */
  private async publish(subject: string, data: Uint8Array, h: MsgHdrs, msgID: string): Promise<number> {
    const { js } = await this.ctx();
    try {
      return (await js.publish(subject, data, { headers: h, msgID, timeout: REQUEST_TIMEOUT_MS })).seq;
    } catch (err) {
      if (/maximum (messages|bytes)/i.test(String((err as Error).message)))
        throw queueFullError(
          await this.usage().catch(() => ({ count: NaN, bytes: NaN })),
          this.options.limits,
        );
      this.setUpAgain();
      throw this.unavailable(err);
    }
  }

  private unavailable(err: unknown): LambdaApiError {
    return new LambdaApiError(
      "ServiceException",
      `The gateway's event store (NATS JetStream at ${redact(this.options.url)}) is unavailable: ${(err as Error).message}`,
    );
  }

  private delivery(m: JsMsg, deferred: boolean): EventDelivery {
    const event = toEvent(m.seq, m.headers, m.data);
    // In progress: the message's AckWait restarts, so a long invocation is not delivered twice.
    const beat = setInterval(() => m.working(), Math.max(100, this.options.ackWaitMs / 3));
    let settled = false;
    const settle = (): boolean => {
      clearInterval(beat);
      this.unsettled.delete(delivery);
      if (settled) return false;
      settled = true;
      return true;
    };
    const ack = async () => {
      if (!(await m.ackAck({ timeout: REQUEST_TIMEOUT_MS })))
        this.options.logger.warn(
          { requestId: event.requestId },
          "event acknowledgement not confirmed; it may run again",
        );
    };
    // Deliveries since the event last used an attempt; a deferred retry's first delivery was only its wait.
    const systemFailures = Math.max(0, m.info.deliveryCount - 1 - (deferred ? 1 : 0));
    const delivery: EventDelivery = {
      event,
      payload: Buffer.from(m.data),
      systemFailures,
      done: async () => {
        if (settle()) await ack();
      },
      retry: async (delayMs, countsAttempt) => {
        if (!settle()) return;
        if (!countsAttempt) return m.nak(delayMs);
        const attempts = event.attempts + 1;
        const h = eventHeaders(event, attempts);
        h.set(H.notBefore, String(Date.now() + delayMs));
        try {
          // Published before the original is acknowledged: a crash in between runs it twice, never zero times.
          // The id dedupes a second copy of this delivery's retry (its gateway died before the ack below).
          await this.publish(this.subject, m.data, h, `${event.requestId}:${m.seq}:a${attempts}`);
        } catch (err) {
          this.options.logger.warn(
            { err, requestId: event.requestId },
            "retry not stored; retrying uncounted",
          );
          return m.nak(delayMs);
        }
        await ack();
      },
      deadLetter: async (reason, error, attempts = event.attempts) => {
        if (!settle()) return;
        const h = eventHeaders(event, attempts);
        h.set(H.reason, reason);
        if (error) h.set(H.error, error);
        h.set(H.failedAt, String(Date.now()));
        const { js } = await this.ctx();
        const msgID = `${event.requestId}:${m.seq}:dead`;
        await js.publish(this.deadSubject, m.data, { headers: h, msgID, timeout: REQUEST_TIMEOUT_MS });
        await ack();
      },
      release: () => {
        if (settle()) m.nak();
        return Promise.resolve();
      },
    };
    this.unsettled.add(delivery);
    return delivery;
  }
}

/** The URL without a password, for logs and error messages. */
function redact(url: string): string {
  return url.replace(/\/\/[^@/]*@/, "//***@");
}
