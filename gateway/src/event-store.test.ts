// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect, afterAll } from "@jest/globals";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  MemoryEventStore,
  type DeadLetter,
  type EventStoreLimits,
  type LocalEventStore,
} from "./event-store.js";
import { SqliteEventStore } from "./event-store-sqlite.js";
import { describeEventStoreConformance } from "./event-store-conformance.js";
import { LocalEventScheduler } from "./local-event-scheduler.js";

// The contract every EventStore keeps, run against both implementations, and
// what only the SQLite one promises (reopening, permissions).

const dir = mkdtempSync(join(tmpdir(), "esb-event-store-unit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;

const stores: [string, (limits: EventStoreLimits, onEvict?: (d: DeadLetter) => void) => LocalEventStore][] = [
  ["MemoryEventStore", (limits, onEvict) => new MemoryEventStore(limits, onEvict)],
  [
    "SqliteEventStore",
    (limits, onEvict) => new SqliteEventStore(join(dir, `s${files++}`, "events.db"), limits, onEvict),
  ],
];

const event = (requestId: string, payload = "{}") => ({
  requestId,
  namespace: "default",
  name: "echo",
  payload: Buffer.from(payload),
  acceptedAt: 1_000,
});

describe.each(stores)("%s", (_name, open) => {
  it("keeps events in order with their payloads and charges their bytes", () => {
    const s = open({ maxCount: 10, maxBytes: 100, maxDeadLetters: 10 });
    const a = s.add({ ...event("a", '{"a":1}'), clientContext: "e30=" });
    const b = s.add(event("b"));
    expect(s.pending().map((e) => e.requestId)).toEqual(["a", "b"]);
    expect(s.payload(a.seq)?.toString()).toBe('{"a":1}');
    expect(s.pending()[0]).toMatchObject({
      clientContext: "e30=",
      acceptedAt: 1_000,
      attempts: 0,
      bytes: 11,
    });
    expect(s.usage()).toEqual({ count: 2, bytes: 13 });
    s.remove(a.seq);
    s.remove(a.seq); // twice is harmless
    expect(s.usage()).toEqual({ count: 1, bytes: 2 });
    expect(s.payload(a.seq)).toBeUndefined();
    s.recordAttempt(b.seq, 2);
    expect(s.pending()[0].attempts).toBe(2);
    s.close();
  });

  it("refuses beyond its count or byte bound with TooManyRequestsException", () => {
    const s = open({ maxCount: 2, maxBytes: 10, maxDeadLetters: 10 });
    s.add(event("a", "12345678"));
    expect(() => s.add(event("b", "123"))).toThrow(
      expect.objectContaining({ type: "TooManyRequestsException" }),
    );
    s.add(event("c", "12"));
    expect(() => s.add(event("d", ""))).toThrow(/queue is full/);
    s.close();
  });

  it("moves events to the dead letters, evicts the oldest beyond the limit and re-drives", () => {
    const evicted: string[] = [];
    const s = open({ maxCount: 10, maxBytes: 100, maxDeadLetters: 2 }, (d) => evicted.push(d.requestId));
    for (const id of ["a", "b", "c"]) {
      const e = s.add(event(id, `"${id}"`));
      s.recordAttempt(e.seq, 3);
      s.deadLetter(e.seq, "RetriesExhausted", "Error");
    }
    expect(evicted).toEqual(["a"]);
    expect(s.usage()).toEqual({ count: 0, bytes: 0 });
    const letters = s.deadLetters();
    expect(letters.map((d) => [d.requestId, d.reason, d.error, d.attempts, d.payload.toString()])).toEqual([
      ["b", "RetriesExhausted", "Error", 3, '"b"'],
      ["c", "RetriesExhausted", "Error", 3, '"c"'],
    ]);
    const revived = s.redrive(["c"]);
    expect(revived.map((e) => [e.requestId, e.attempts])).toEqual([["c", 0]]);
    expect(revived[0].acceptedAt).toBeGreaterThan(1_000);
    expect(s.payload(revived[0].seq)?.toString()).toBe('"c"');
    expect(s.deadLetters().map((d) => d.requestId)).toEqual(["b"]);
    expect(s.redrive().map((e) => e.requestId)).toEqual(["b"]);
    expect(s.pending().map((e) => e.requestId)).toEqual(["c", "b"]);
    s.close();
  });

  it("a re-drive that does not fit leaves the dead letters where they are", () => {
    const s = open({ maxCount: 1, maxBytes: 100, maxDeadLetters: 10 });
    const a = s.add(event("a"));
    s.deadLetter(a.seq, "EventAgeExceeded", undefined);
    s.add(event("b"));
    expect(() => s.redrive()).toThrow(/queue is full/);
    expect(s.deadLetters().map((d) => d.requestId)).toEqual(["a"]);
    expect(s.usage().count).toBe(1);
    s.close();
  });
});

describe("SqliteEventStore on disk", () => {
  it("finds its events, attempts and usage again when reopened, in a file only its owner reads", () => {
    const path = join(dir, "reopen", "events.db");
    const limits = { maxCount: 10, maxBytes: 100, maxDeadLetters: 10 };
    const first = new SqliteEventStore(path, limits);
    const a = first.add(event("a", '"x"'));
    first.add(event("b"));
    first.recordAttempt(a.seq, 1);
    first.close();
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const again = new SqliteEventStore(path, limits);
    expect(again.pending().map((e) => [e.requestId, e.attempts])).toEqual([
      ["a", 1],
      ["b", 0],
    ]);
    expect(again.usage()).toEqual({ count: 2, bytes: 5 });
    // Sequence numbers are never reused (the newest event removed, a new one comes after it).
    const b = again.pending()[1];
    again.remove(b.seq);
    expect(again.add(event("c")).seq).toBe(b.seq + 1);
    again.close();
  });
});

describeEventStoreConformance("MemoryEventStore", {
  shared: false,
  open: (limits) => new LocalEventScheduler(new MemoryEventStore(limits)),
});

describeEventStoreConformance("SqliteEventStore", {
  shared: false,
  open: (limits, storage) =>
    new LocalEventScheduler(new SqliteEventStore(join(dir, storage, "events.db"), limits)),
});
