import { describe, it, expect, afterEach } from "@jest/globals";
import type { EventDelivery, EventStore, EventStoreLimits, NewEvent } from "./event-store.js";

/** One {@link EventStore} implementation as the conformance suite opens it. */
export interface EventStoreUnderTest {
  /**
   * Opens a store. The same `storage` key names the same stored events: a
   * durable store opened again on it finds them; a shared one opened twice
   * shares them.
   */
  open(limits: EventStoreLimits, storage: string): EventStore;
  /** Whether several stores open on one storage at once share its events (a work queue for replicas). */
  shared: boolean;
}

const limits: EventStoreLimits = { maxCount: 100, maxBytes: 1 << 20, maxDeadLetters: 10 };

const event = (requestId: string, payload = "{}"): NewEvent => ({
  requestId,
  namespace: "default",
  name: "echo",
  payload: Buffer.from(payload),
  acceptedAt: 1_000,
});

/**
 * TEST SUPPORT: the contract every {@link EventStore} keeps (the SQLite,
 * in-memory and NATS JetStream stores run it): order, payloads, settling,
 * durable attempt counts, dead letters and re-driving, bounds, what a durable
 * store keeps across a close, and for shared stores that one event goes to one
 * store at a time.
 */
export function describeEventStoreConformance(name: string, impl: EventStoreUnderTest): void {
  describe(`${name} (EventStore conformance)`, () => {
    const opened: EventStore[] = [];
    let n = 0;
    let storage = "";
    const open = (l: EventStoreLimits = limits, where = storage) => {
      const s = impl.open(l, where);
      opened.push(s);
      return s;
    };
    const fresh = () => (storage = `S${process.pid}x${++n}`);
    afterEach(async () => {
      for (const s of opened.splice(0)) await s.close();
    });

    it("hands out events oldest first with their payloads, and done removes them", async () => {
      fresh();
      const s = open();
      await s.add({ ...event("a", '{"a":1}'), clientContext: "e30=" });
      await s.add(event("b"));
      expect((await s.usage()).count).toBe(2);
      const a = (await s.next())!;
      expect(a.event).toMatchObject({
        requestId: "a",
        clientContext: "e30=",
        acceptedAt: 1_000,
        attempts: 0,
      });
      expect(a.payload.toString()).toBe('{"a":1}');
      expect(a.systemFailures).toBe(0);
      const b = (await s.next())!;
      expect(b.event.requestId).toBe("b");
      await a.done();
      await a.done(); // twice is harmless
      expect((await s.usage()).count).toBe(1);
      await b.done();
      expect(await s.usage()).toEqual({ count: 0, bytes: 0 });
    });

    it("a released event is handed out again; one being run is not handed to anyone else", async () => {
      fresh();
      const s = open();
      await s.add(event("a"));
      await s.add(event("b"));
      const a = (await s.next())!;
      const b = (await s.next())!;
      expect([a.event.requestId, b.event.requestId]).toEqual(["a", "b"]);
      await a.release();
      const again = (await s.next())!;
      expect(again.event.requestId).toBe("a");
      expect(again.event.attempts).toBe(0);
      await again.done();
      await b.done();
    });

    it("a function-error retry counts an attempt; a throttle retry counts a system failure instead", async () => {
      fresh();
      const s = open();
      await s.add(event("a", '"x"'));
      await (await s.next())!.retry(0, true);
      const second = (await s.next())!;
      expect([second.event.attempts, second.systemFailures]).toEqual([1, 0]);
      expect(second.payload.toString()).toBe('"x"');
      await second.retry(0, false);
      const third = (await s.next())!;
      expect(third.event.attempts).toBe(1);
      expect(third.systemFailures).toBe(1);
      await third.done();
      expect((await s.usage()).count).toBe(0);
    });

    it("an event waiting for its retry delay is not handed out before it; later ones are", async () => {
      fresh();
      const s = open();
      await s.add(event("a"));
      await (await s.next())!.retry(600_000, true);
      await s.add(event("b"));
      const b = (await s.next())!;
      expect(b.event.requestId).toBe("b");
      await b.done();
      expect((await s.usage()).count).toBe(1); // a, waiting
    });

    it("dead letters keep reason, error, attempts and payload, the newest kept, and can be re-driven", async () => {
      fresh();
      const s = open({ ...limits, maxDeadLetters: 2 });
      for (const id of ["a", "b", "c"]) {
        await s.add(event(id, `"${id}"`));
        await (await s.next())!.deadLetter("RetriesExhausted", "Error", 3);
      }
      expect((await s.usage()).count).toBe(0);
      const letters = await s.deadLetters();
      expect(letters.map((d) => [d.requestId, d.reason, d.error, d.attempts, d.payload.toString()])).toEqual([
        ["b", "RetriesExhausted", "Error", 3, '"b"'],
        ["c", "RetriesExhausted", "Error", 3, '"c"'],
      ]);
      expect(letters[0].failedAt).toBeGreaterThan(1_000);
      expect((await s.deadLetters(1)).map((d) => d.requestId)).toEqual(["b"]);
      const revived = await s.redrive(["c"]);
      expect(revived.map((e) => [e.requestId, e.attempts])).toEqual([["c", 0]]);
      expect(revived[0].acceptedAt).toBeGreaterThan(1_000);
      expect((await s.deadLetters()).map((d) => d.requestId)).toEqual(["b"]);
      expect((await s.redrive()).map((e) => e.requestId)).toEqual(["b"]);
      expect(await s.deadLetters()).toEqual([]);
      const c = (await s.next())!;
      const b = (await s.next())!;
      expect([c.event.requestId, c.event.attempts, c.payload.toString()]).toEqual(["c", 0, '"c"']);
      expect(b.event.requestId).toBe("b");
      await c.done();
      await b.done();
    });

    it("refuses beyond its count bound with TooManyRequestsException", async () => {
      fresh();
      const s = open({ ...limits, maxCount: 2 });
      await s.add(event("a"));
      await s.add(event("b"));
      await expect(s.add(event("c"))).rejects.toMatchObject({
        type: "TooManyRequestsException",
        message: expect.stringMatching(/queue is full/),
      });
      await (await s.next())!.done();
      await s.add(event("d")); // room again
    });

    it("refuses beyond its byte bound with TooManyRequestsException; smaller events still fit", async () => {
      fresh();
      const s = open({ ...limits, maxBytes: 4000 });
      await s.add(event("a", "x".repeat(1500)));
      await expect(s.add(event("b", "x".repeat(3000)))).rejects.toMatchObject({
        type: "TooManyRequestsException",
      });
      await s.add(event("c", "small"));
      expect((await s.usage()).count).toBe(2);
    });

    it("a re-drive that does not fit leaves the dead letters where they are", async () => {
      fresh();
      const s = open({ ...limits, maxCount: 1 });
      await s.add(event("a"));
      await (await s.next())!.deadLetter("EventAgeExceeded", undefined);
      await s.add(event("b"));
      await expect(s.redrive()).rejects.toThrow(/queue is full/);
      expect((await s.deadLetters()).map((d) => [d.requestId, d.reason, d.error])).toEqual([
        ["a", "EventAgeExceeded", undefined],
      ]);
      expect((await s.usage()).count).toBe(1);
    });

    it("after stopDelivering, next resolves undefined and settling still works", async () => {
      fresh();
      const s = open();
      await s.add(event("a"));
      const a = (await s.next())!;
      s.stopDelivering();
      expect(await s.next()).toBeUndefined();
      await a.done();
      expect((await s.usage()).count).toBe(0);
    });

    it("a durable store opened again hands out every event not settled, with its attempts", async () => {
      fresh();
      const first = open();
      if (!first.durable) return; // nothing survives an in-memory store
      await first.add(event("a", '"a"'));
      await first.add(event("b"));
      await (await first.next())!.retry(0, true); // a: one attempt used
      const running: EventDelivery = (await first.next())!; // b, left unsettled (its gateway stopped)
      expect(running.event.requestId).toBe("b");
      await first.close();
      const again = open();
      const got = [(await again.next())!, (await again.next())!];
      expect(got.map((d) => [d.event.requestId, d.event.attempts]).sort()).toEqual([
        ["a", 1],
        ["b", 0],
      ]);
      for (const d of got) await d.done();
    });

    it("stores shared by several gateways hand each event to one of them", async () => {
      fresh();
      if (!impl.shared) return;
      const one = open();
      const two = open();
      for (const id of ["a", "b", "c", "d"]) await one.add(event(id));
      const got: EventDelivery[] = [];
      for (const s of [two, one, two, one]) got.push((await s.next())!);
      expect(got.map((d) => d.event.requestId)).toEqual(["a", "b", "c", "d"]);
      for (const d of got) await d.done();
      expect((await two.usage()).count).toBe(0);
    });
  });
}
