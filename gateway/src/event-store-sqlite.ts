import { chmodSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import type { DatabaseSync, StatementSync } from "node:sqlite";
import {
  eventBytes,
  queueFullError,
  type DeadLetter,
  type DeadLetterReason,
  type LocalEventStore,
  type EventStoreLimits,
  type EventStoreUsage,
  type NewEvent,
  type StoredEvent,
} from "./event-store.js";

/** Columns shared by both tables; `dead_letters` adds why and when. */
const EVENT_COLUMNS = `
  request_id TEXT NOT NULL,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  client_context TEXT,
  accepted_at INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  bytes INTEGER NOT NULL,
  payload BLOB NOT NULL`;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,${EVENT_COLUMNS}
);
CREATE TABLE IF NOT EXISTS dead_letters (
  seq INTEGER PRIMARY KEY,${EVENT_COLUMNS},
  reason TEXT NOT NULL,
  error TEXT,
  failed_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_failed_at ON dead_letters (failed_at);
`;

const META = "seq, request_id, namespace, name, client_context, accepted_at, attempts, bytes";
const COPY = "request_id, namespace, name, client_context, accepted_at, attempts, bytes, payload";

type Row = Record<string, unknown>;

/**
 * `node:sqlite`, loaded only when a store is opened: a gateway without one
 * (Kubernetes today) still starts on a Node.js that lacks the module.
 */
function sqlite(): typeof import("node:sqlite") {
  try {
    return createRequire(import.meta.url)("node:sqlite") as typeof import("node:sqlite");
  } catch (err) {
    throw new Error(
      `GATEWAY_EVENT_STORE needs node:sqlite (Node.js 24, as ESB's npm scripts use): ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/**
 * A {@link LocalEventStore} in an SQLite file (`node:sqlite`): accepted events
 * survive gateway restarts and crashes, SIGKILL included. WAL journal with
 * `synchronous=FULL`: every commit (so every 202) is fsynced, because a 202 is
 * a promise that the event will run, and FULL costs ~0.3 ms per event on this
 * kind of machine; NORMAL would survive a process crash but not a power loss
 * or kernel panic. Readers (e.g. `sqlite3` on the dead letters) do not block
 * the gateway in WAL mode. One gateway per file: two would both deliver every
 * event.
 */
export class SqliteEventStore implements LocalEventStore {
  readonly durable = true;
  private readonly db: DatabaseSync;
  private readonly stmt: Record<
    | "insert"
    | "payload"
    | "attempt"
    | "remove"
    | "toDead"
    | "deadCount"
    | "evict"
    | "oldestDead"
    | "dead"
    | "deadOne"
    | "revive"
    | "get"
    | "deleteDead",
    StatementSync
  >;
  private count = 0;
  private bytes = 0;
  private closed = false;

  /**
   * Opens (creating if needed, with owner-only permissions: payloads may hold
   * secrets) the store at `path`.
   */
  constructor(
    readonly path: string,
    private readonly limits: EventStoreLimits,
    private readonly onEvict: (letter: DeadLetter) => void = () => {},
  ) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.db = new (sqlite().DatabaseSync)(path);
    chmodSync(path, 0o600);
    // A reader such as sqlite3 may briefly hold a lock (e.g. during a checkpoint): wait, do not fail.
    this.db.exec("PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;");
    this.db.exec(SCHEMA);
    const s = (sql: string) => this.db.prepare(sql);
    this.stmt = {
      insert: s(`INSERT INTO events (${COPY}) VALUES (?, ?, ?, ?, ?, 0, ?, ?) RETURNING seq`),
      payload: s("SELECT payload FROM events WHERE seq = ?"),
      attempt: s("UPDATE events SET attempts = ? WHERE seq = ?"),
      remove: s("DELETE FROM events WHERE seq = ? RETURNING bytes"),
      toDead: s(
        `INSERT INTO dead_letters (seq, ${COPY}, reason, error, failed_at)
         SELECT seq, ${COPY}, ?, ?, ? FROM events WHERE seq = ?`,
      ),
      deadCount: s("SELECT COUNT(*) AS n FROM dead_letters"),
      oldestDead: s(`SELECT ${META}, payload, reason, error, failed_at FROM dead_letters
                     ORDER BY failed_at, seq LIMIT ?`),
      evict: s("DELETE FROM dead_letters WHERE seq = ?"),
      dead: s(`SELECT ${META}, payload, reason, error, failed_at FROM dead_letters ORDER BY seq LIMIT ?`),
      deadOne: s(`SELECT ${META}, payload FROM dead_letters WHERE request_id = ? ORDER BY seq`),
      revive: s(
        `INSERT INTO events (${COPY}) SELECT request_id, namespace, name, client_context, ?, 0, bytes, payload
         FROM dead_letters WHERE seq = ? RETURNING seq`,
      ),
      get: s(`SELECT ${META} FROM events WHERE seq = ?`),
      deleteDead: s("DELETE FROM dead_letters WHERE seq = ?"),
    };
    const usage = this.db.prepare("SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b FROM events").get()!;
    this.count = Number(usage.n);
    this.bytes = Number(usage.b);
  }

  add(event: NewEvent): StoredEvent {
    const bytes = eventBytes(event.payload, event.clientContext);
    if (this.count + 1 > this.limits.maxCount || this.bytes + bytes > this.limits.maxBytes)
      throw queueFullError(this.usage(), this.limits);
    const row = this.stmt.insert.get(
      event.requestId,
      event.namespace,
      event.name,
      event.clientContext ?? null,
      event.acceptedAt,
      bytes,
      event.payload,
    )!;
    this.count++;
    this.bytes += bytes;
    const { payload: _payload, ...rest } = event;
    return { ...rest, seq: Number(row.seq), attempts: 0, bytes };
  }

  pending(): StoredEvent[] {
    return this.db
      .prepare(`SELECT ${META} FROM events ORDER BY seq`)
      .all()
      .map((r) => toEvent(r));
  }

  payload(seq: number): Buffer | undefined {
    if (this.closed) return undefined;
    const row = this.stmt.payload.get(seq);
    return row ? Buffer.from(row.payload as Uint8Array) : undefined;
  }

  recordAttempt(seq: number, attempts: number): void {
    if (this.closed) return;
    this.stmt.attempt.run(attempts, seq);
  }

  remove(seq: number): void {
    if (this.closed) return;
    const row = this.stmt.remove.get(seq);
    if (!row) return;
    this.count--;
    this.bytes -= Number(row.bytes);
  }

  deadLetter(seq: number, reason: DeadLetterReason, error: string | undefined): void {
    if (this.closed) return;
    this.db.exec("BEGIN IMMEDIATE");
    try {
      this.stmt.toDead.run(reason, error ?? null, Date.now(), seq);
      this.remove(seq);
      const over = Number(this.stmt.deadCount.get()!.n) - this.limits.maxDeadLetters;
      if (over > 0) {
        for (const r of this.stmt.oldestDead.all(over)) {
          this.stmt.evict.run(r.seq as number);
          this.onEvict(toDeadLetter(r));
        }
      }
      this.db.exec("COMMIT");
    } catch (err) {
      this.db.exec("ROLLBACK");
      throw err;
    }
  }

  deadLetters(limit = -1): DeadLetter[] {
    return this.stmt.dead.all(limit).map(toDeadLetter);
  }

  redrive(requestIds?: readonly string[]): StoredEvent[] {
    const letters = requestIds
      ? requestIds.flatMap((id) => this.stmt.deadOne.all(id).map(toEvent))
      : this.deadLetters().map((d) => d as StoredEvent);
    const out: StoredEvent[] = [];
    this.db.exec("BEGIN IMMEDIATE");
    try {
      for (const d of letters) {
        const usage = this.usage();
        if (usage.count + 1 > this.limits.maxCount || usage.bytes + d.bytes > this.limits.maxBytes)
          throw queueFullError(usage, this.limits);
        const row = this.stmt.revive.get(Date.now(), d.seq)!;
        this.stmt.deleteDead.run(d.seq);
        this.count++;
        this.bytes += d.bytes;
        out.push(toEvent(this.stmt.get.get(Number(row.seq))!));
      }
      this.db.exec("COMMIT");
    } catch (err) {
      this.db.exec("ROLLBACK");
      // Counters follow the rolled-back rows.
      const usage = this.db.prepare("SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b FROM events").get()!;
      this.count = Number(usage.n);
      this.bytes = Number(usage.b);
      throw err;
    }
    return out;
  }

  usage(): EventStoreUsage {
    return { count: this.count, bytes: this.bytes };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }
}

function toEvent(r: Row): StoredEvent {
  return {
    seq: Number(r.seq),
    requestId: r.request_id as string,
    namespace: r.namespace as string,
    name: r.name as string,
    clientContext: (r.client_context as string | null) ?? undefined,
    acceptedAt: Number(r.accepted_at),
    attempts: Number(r.attempts),
    bytes: Number(r.bytes),
  };
}

function toDeadLetter(r: Row): DeadLetter {
  return {
    ...toEvent(r),
    payload: Buffer.from(r.payload as Uint8Array),
    reason: r.reason as DeadLetterReason,
    error: (r.error as string | null) ?? undefined,
    failedAt: Number(r.failed_at),
  };
}
