import { headers, type MsgHdrs } from "@nats-io/transport-node";
import { eventBytes, type DeadLetter, type DeadLetterReason, type StoredEvent } from "./event-store.js";

/**
 * Headers of an event message in the NATS event store: what the SQLite store
 * keeps in columns. Users read them with `nats stream view` (docs/event-invocations.md).
 */
export const H = {
  requestId: "Esb-Request-Id",
  namespace: "Esb-Namespace",
  name: "Esb-Name",
  clientContext: "Esb-Client-Context",
  acceptedAt: "Esb-Accepted-At",
  attempts: "Esb-Attempts",
  notBefore: "Esb-Not-Before",
  reason: "Esb-Reason",
  error: "Esb-Error",
  failedAt: "Esb-Failed-At",
} as const;

/** The headers of a pending event with `attempts` used. */
export function eventHeaders(e: Omit<StoredEvent, "seq" | "attempts" | "bytes">, attempts: number): MsgHdrs {
  const h = headers();
  h.set(H.requestId, e.requestId);
  h.set(H.namespace, e.namespace);
  h.set(H.name, e.name);
  if (e.clientContext) h.set(H.clientContext, e.clientContext);
  h.set(H.acceptedAt, String(e.acceptedAt));
  h.set(H.attempts, String(attempts));
  return h;
}

/** The event a message of the pending stream carries. */
export function toEvent(seq: number, h: MsgHdrs | undefined, data: Uint8Array): StoredEvent {
  const get = (k: string) => h?.get(k) ?? "";
  const clientContext = get(H.clientContext) || undefined;
  return {
    seq,
    requestId: get(H.requestId),
    namespace: get(H.namespace),
    name: get(H.name),
    clientContext,
    acceptedAt: Number(get(H.acceptedAt)),
    attempts: Number(get(H.attempts) || 0),
    bytes: eventBytes(Buffer.from(data), clientContext),
  };
}

/** The dead letter a message of the dead-letter stream carries. */
export function toDeadLetter(seq: number, h: MsgHdrs | undefined, data: Uint8Array): DeadLetter {
  return {
    ...toEvent(seq, h, data),
    payload: Buffer.from(data),
    reason: (h?.get(H.reason) ?? "RetriesExhausted") as DeadLetterReason,
    error: h?.get(H.error) || undefined,
    failedAt: Number(h?.get(H.failedAt) || 0),
  };
}

/** A dead letter's event fields. */
export function withoutLetter(d: DeadLetter): StoredEvent {
  const { payload: _p, reason: _r, error: _e, failedAt: _f, ...rest } = d;
  return rest;
}
