import type { Logger } from "@esb/common";
import type { GatewayConfig } from "./gateway-config.js";
import { MemoryEventStore, type EventStore } from "./event-store.js";
import { SqliteEventStore } from "./event-store-sqlite.js";
import { LocalEventScheduler } from "./local-event-scheduler.js";
import { NatsEventStore } from "./nats-event-store.js";

/** Bounds of the dead letters kept: the oldest are evicted beyond (with a log line, where the store can say). */
const MAX_DEAD_LETTERS = 10_000;

/**
 * The gateway's event store as `GATEWAY_EVENT_STORE` says: a `nats://` URL is
 * NATS JetStream (shared by every replica), anything else an SQLite file, and
 * nothing a bounded in-memory store.
 */
export function openEventStore(config: GatewayConfig, logger: Logger): EventStore {
  const limits = {
    maxCount: config.eventQueueSize,
    maxBytes: config.eventQueueBytes,
    maxDeadLetters: MAX_DEAD_LETTERS,
  };
  const onEvict = (d: { requestId: string; namespace: string; name: string; reason: string }) =>
    logger.warn(
      { requestId: d.requestId, function: `${d.namespace}/${d.name}`, reason: d.reason },
      "oldest dead letter evicted (dead-letter limit reached)",
    );
  const where = config.eventStore;
  if (where && /^(nats|tls):\/\//.test(where)) {
    return new NatsEventStore({
      url: where,
      token: config.eventNatsToken,
      stream: config.eventNatsStream,
      replicas: config.eventNatsReplicas,
      ackWaitMs: config.eventAckWaitMs,
      limits,
      logger,
    });
  }
  return new LocalEventScheduler(
    where ? new SqliteEventStore(where, limits, onEvict) : new MemoryEventStore(limits, onEvict),
  );
}
