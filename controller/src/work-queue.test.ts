// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect } from "@jest/globals";
import { WorkQueue } from "./work-queue.js";

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

describe("WorkQueue", () => {
  it("never runs the same key twice at once and runs it again when re-added meanwhile", async () => {
    const gate = deferred();
    let active = 0;
    let maxActive = 0;
    const runs: string[] = [];
    const q = new WorkQueue(async (key) => {
      active++;
      maxActive = Math.max(maxActive, active);
      runs.push(key);
      if (runs.length === 1) await gate.promise;
      active--;
    });
    q.start();
    q.add("a");
    await until(() => runs.length === 1);
    q.add("a");
    q.add("a");
    expect(runs).toEqual(["a"]);
    gate.resolve();
    await until(() => runs.length === 2);
    await q.stop();
    expect(maxActive).toBe(1);
    expect(runs).toEqual(["a", "a"]);
  });

  it("handles different keys concurrently and de-duplicates queued keys", async () => {
    const gate = deferred();
    const runs: string[] = [];
    const q = new WorkQueue(
      async (key) => {
        runs.push(key);
        await gate.promise;
      },
      { concurrency: 2 },
    );
    q.add("a");
    q.add("b");
    q.add("c");
    q.add("c");
    q.start();
    await until(() => runs.length === 2);
    expect(runs).toEqual(["a", "b"]);
    gate.resolve();
    await until(() => runs.length === 3);
    await q.stop();
    expect(runs).toEqual(["a", "b", "c"]);
  });

  it("retries failures with exponential backoff and resets it on success", async () => {
    let calls = 0;
    const q = new WorkQueue(
      async () => {
        calls++;
        if (calls < 4) throw new Error("boom");
      },
      { baseDelayMs: 1, maxDelayMs: 10 },
    );
    q.start();
    q.add("k");
    await until(() => calls === 4);
    await until(() => q.failuresOf("k") === 0);
    await q.stop();
    expect(calls).toBe(4);
  });

  it("runs a key again when the handler asks for a requeue", async () => {
    let calls = 0;
    const q = new WorkQueue(async () => {
      calls++;
      return calls < 3 ? { requeueAfterMs: 1 } : undefined;
    });
    q.start();
    q.add("k");
    await until(() => calls === 3);
    await q.stop();
    expect(calls).toBe(3);
  });

  it("aborts handlers in flight on stop({ abort: true }) and neither retries nor reports them", async () => {
    const results: string[] = [];
    let calls = 0;
    let abortedWith: unknown;
    const q = new WorkQueue(
      (_key, signal) => {
        calls++;
        // A handler that would run for a long time unless its signal fires.
        return new Promise<void>((_resolve, reject) => {
          signal.addEventListener("abort", () => {
            abortedWith = signal.reason;
            reject(new Error("aborted"));
          });
        });
      },
      { baseDelayMs: 1, onResult: (key, outcome) => results.push(`${key} ${outcome}`) },
    );
    q.start();
    q.add("k");
    await until(() => calls === 1);
    const reason = new Error("leadership lost");
    const started = Date.now();
    await q.stop({ abort: true, reason });
    expect(Date.now() - started).toBeLessThan(1000);
    expect(abortedWith).toBe(reason);
    expect(q.signal.aborted).toBe(true);
    q.add("k");
    await new Promise((r) => setTimeout(r, 50));
    expect(calls).toBe(1);
    expect(results).toEqual([]);
  });
});
