import { describe, it, expect, afterEach } from "@jest/globals";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { DatabaseSync } from "node:sqlite";
import { SqliteEventStore } from "./event-store-sqlite.js";
import { GatewayTestHarness, testFunctionManifest } from "./gateway-test-harness.js";
import { TestWorkerServer } from "./test-worker-server.js";

// Accepted Event invocations against a real gateway (LoopbackTestAgent stand-in,
// real HTTP workers) with its SQLite event store: what survives a stop, a crash
// and a SIGKILL, the bounds, the dead letters and AWS's retry and age rules.
// What ran is counted by TestWorkerServer.calls, a record outside the workers.

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A harness serving `echo`, with a fresh store path (not yet used by any gateway). */
async function setup(env: Record<string, string> = {}, storeEnv = true) {
  const storeDir = await mkdtemp(join(tmpdir(), "esb-event-store-"));
  const store = join(storeDir, "gateway", "events.db");
  const h = new GatewayTestHarness();
  const fullEnv = { ...(storeEnv ? { GATEWAY_EVENT_STORE: store } : {}), ...env };
  await h.start(testFunctionManifest("echo"), fullEnv);
  cleanups.push(async () => {
    await h.stop();
    await rm(storeDir, { recursive: true, force: true });
  });
  return { h, store, env: fullEnv };
}

/** POSTs one Event invocation; returns the status, request id and error type. */
async function sendEvent(endpoint: string, event: unknown, fn = "echo") {
  const res = await fetch(`${endpoint}/2015-03-31/functions/${fn}/invocations`, {
    method: "POST",
    headers: { "x-amz-invocation-type": "Event", "content-type": "application/json" },
    body: JSON.stringify(event),
  });
  const body = await res.text();
  return {
    status: res.status,
    requestId: res.headers.get("x-amzn-requestid") ?? "",
    errorType: res.headers.get("x-amzn-errortype") ?? undefined,
    body,
  };
}

/** Sends `n` events in parallel and expects a 202 for each; returns their request ids. */
async function acceptEvents(endpoint: string, n: number, tag: string): Promise<string[]> {
  const out = await Promise.all(Array.from({ length: n }, (_, i) => sendEvent(endpoint, { tag, i })));
  expect(out.map((o) => o.status)).toEqual(Array(n).fill(202));
  return out.map((o) => o.requestId);
}

/** How many times each of `ids` has run (0 for those that have not). */
function runs(ids: string[]): number[] {
  return ids.map((id) => TestWorkerServer.calls.filter((c) => c.requestId === id).length);
}

async function until(check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Makes cold starts take `ms`; the agent finishes a cold start even for a
 * caller that is gone, so the test waits that long before the agent closes.
 */
function slowColdStarts(h: GatewayTestHarness, ms: number): void {
  h.agent.coldStartDelayMs = ms;
  cleanups.push(() => new Promise((r) => setTimeout(r, ms + 200)));
}

const limits = { maxCount: 1000, maxBytes: 1 << 20, maxDeadLetters: 100 };

describe("durable Event invocations", () => {
  it("events accepted before an abrupt stop all run on the next gateway", async () => {
    const { h, store, env } = await setup();
    // Cold starts that outlast the stop: nothing runs before it (accepting 30 takes ~0.7 s on a loaded machine).
    slowColdStarts(h, 3000);
    const ids = await acceptEvents(h.endpoint, 30, "abrupt");
    await h.gateway.stop(0); // no grace: the store is closed under the running deliveries
    const stopped = new SqliteEventStore(store, limits);
    expect(stopped.usage().count).toBe(30);
    stopped.close();
    h.agent.coldStartDelayMs = 0;
    await h.startGateway(env);
    await until(() => runs(ids).every((n) => n >= 1));
    await h.gateway.eventQueue.idle();
    expect(await h.gateway.eventQueue.deadLetters()).toEqual([]);
  });

  it("events accepted by a gateway killed with SIGKILL right after the 202s all run on the next one", async () => {
    const { h, store, env } = await setup({}, false);
    slowColdStarts(h, 2000);
    const child = spawn(process.execPath, [fileURLToPath(new URL("./main.js", import.meta.url))], {
      env: {
        ...process.env,
        GATEWAY_PORT: "0",
        GATEWAY_HOST: "127.0.0.1",
        AGENT_URLS: h.agent.url,
        FUNCTIONS_DIR: h.dir,
        GATEWAY_HEARTBEAT_MS: "200",
        GATEWAY_EVENT_STORE: store,
        ESB_LOG_LEVEL: "info",
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once("exit", (_c, s) => resolve(s)));
    cleanups.push(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    });
    const port = await new Promise<number>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on("line", (line) => {
        if (!line.includes('"gateway listening"')) return;
        resolve((JSON.parse(line) as { port: number }).port);
      });
      child.once("exit", () => reject(new Error("the gateway exited before listening")));
    });
    const ids = await acceptEvents(`http://127.0.0.1:${port}`, 30, "sigkill");
    child.kill("SIGKILL");
    expect(await exited).toBe("SIGKILL");
    expect(runs(ids).every((n) => n === 0)).toBe(true);
    h.agent.coldStartDelayMs = 0;
    await h.gateway.stop();
    await h.startGateway({ ...env, GATEWAY_EVENT_STORE: store });
    await until(() => runs(ids).every((n) => n >= 1));
    await h.gateway.eventQueue.idle();
    expect(await h.gateway.eventQueue.deadLetters()).toEqual([]);
  });

  it("a stop lets running deliveries finish within the grace period and keeps queued ones stored", async () => {
    const { h, store, env } = await setup({ GATEWAY_EVENT_CONCURRENCY: "1" });
    const first = await sendEvent(h.endpoint, { sleepMs: 400 });
    const second = await sendEvent(h.endpoint, { queued: true });
    await until(() => runs([first.requestId])[0] === 1);
    await h.gateway.stop(5000);
    expect(runs([first.requestId, second.requestId])).toEqual([1, 0]);
    const left = new SqliteEventStore(store, limits);
    expect(left.pending().map((e) => e.requestId)).toEqual([second.requestId]);
    left.close();
    await h.startGateway(env);
    await until(() => runs([second.requestId])[0] === 1);
  });

  it("stored events run oldest first, and one older than MaximumEventAgeInSeconds is dead-lettered unrun", async () => {
    const storeDir = await mkdtemp(join(tmpdir(), "esb-event-store-"));
    const path = join(storeDir, "events.db");
    const seed = new SqliteEventStore(path, limits);
    const now = Date.now();
    const ids = ["e1", "e2", "stale", "e3", "e4"].map((tag) => `${tag}-${now}`);
    for (const id of ids) {
      seed.add({
        requestId: id,
        namespace: "default",
        name: "echo",
        payload: Buffer.from(JSON.stringify({ id })),
        acceptedAt: id.startsWith("stale") ? now - 21_601_000 : now,
      });
    }
    seed.close();
    const { h } = await setup({ GATEWAY_EVENT_STORE: path, GATEWAY_EVENT_CONCURRENCY: "1" });
    cleanups.push(() => rm(storeDir, { recursive: true, force: true }));
    const fresh = ids.filter((id) => !id.startsWith("stale"));
    await until(() => runs(fresh).every((n) => n === 1));
    const order = TestWorkerServer.calls.filter((c) => ids.includes(c.requestId)).map((c) => c.requestId);
    expect(order).toEqual(fresh);
    const dead = await h.gateway.eventQueue.deadLetters();
    expect(dead.map((d) => [d.requestId, d.reason])).toEqual([[ids[2], "EventAgeExceeded"]]);
  });

  it("an event whose retries run out lands in the dead letters, readable with SQL, and can be re-driven", async () => {
    const { h, store } = await setup();
    const sent = await sendEvent(h.endpoint, { fail: "always" });
    expect(sent.status).toBe(202);
    await until(async () => (await h.gateway.eventQueue.deadLetters()).length === 1);
    expect(runs([sent.requestId])).toEqual([3]); // the first try and MaximumRetryAttempts (2) retries
    const [letter] = await h.gateway.eventQueue.deadLetters();
    expect(letter).toMatchObject({ requestId: sent.requestId, reason: "RetriesExhausted", attempts: 3 });
    expect(JSON.parse(letter.payload.toString("utf8"))).toEqual({ fail: "always" });
    // What a user does with sqlite3 (docs/event-invocations.md), while the gateway runs.
    const reader = new DatabaseSync(store, { readOnly: true });
    const rows = reader
      .prepare("SELECT request_id, reason, error, CAST(payload AS TEXT) AS event FROM dead_letters")
      .all();
    reader.close();
    expect(rows).toEqual([
      { request_id: sent.requestId, reason: "RetriesExhausted", error: "Error", event: '{"fail":"always"}' },
    ]);
    expect(await h.gateway.eventQueue.redrive([sent.requestId])).toBe(1);
    expect(await h.gateway.eventQueue.deadLetters()).toEqual([]);
    await until(
      async () => runs([sent.requestId])[0] === 6 && (await h.gateway.eventQueue.deadLetters()).length === 1,
    );
  });

  it("MaximumRetryAttempts 0 dead-letters after the first failure", async () => {
    const { h } = await setup({ GATEWAY_EVENT_MAX_RETRY_ATTEMPTS: "0" });
    const sent = await sendEvent(h.endpoint, { fail: "once" });
    await until(async () => (await h.gateway.eventQueue.deadLetters()).length === 1);
    expect(runs([sent.requestId])).toEqual([1]);
  });

  it("throttles do not use up retry attempts: the event runs once the function has capacity", async () => {
    const { h } = await setup();
    h.agent.setConcurrencyLimit("default/echo", 0);
    const sent = await sendEvent(h.endpoint, { after: "throttles" });
    await until(() => h.agent.acquireCalls >= 5);
    expect(runs([sent.requestId])).toEqual([0]);
    h.agent.setConcurrencyLimit("default/echo", 10);
    await until(() => runs([sent.requestId])[0] === 1);
    expect(await h.gateway.eventQueue.deadLetters()).toEqual([]);
  });
});

describe("Event queue bounds", () => {
  for (const durable of [true, false]) {
    it(`${durable ? "the disk store" : "the in-memory queue"} answers 429 TooManyRequestsException beyond its byte bound`, async () => {
      const { h } = await setup({ GATEWAY_EVENT_QUEUE_BYTES: "3000" }, durable);
      h.agent.coldStartDelayMs = 2000; // keeps the accepted events stored while the test fills the bound
      const big = { pad: "x".repeat(980) }; // 991 bytes of JSON
      for (let i = 0; i < 3; i++) expect((await sendEvent(h.endpoint, big)).status).toBe(202);
      const refused = await sendEvent(h.endpoint, big);
      expect(refused.status).toBe(429);
      expect(refused.errorType).toBe("TooManyRequestsException");
      expect(JSON.parse(refused.body)).toMatchObject({ Reason: "CallerRateLimitExceeded" });
      // Small events still fit.
      expect((await sendEvent(h.endpoint, { small: 1 })).status).toBe(202);
    });
  }

  it("the count bound holds too", async () => {
    const { h } = await setup({ GATEWAY_EVENT_QUEUE_SIZE: "2" });
    h.agent.coldStartDelayMs = 2000;
    expect((await sendEvent(h.endpoint, {})).status).toBe(202);
    expect((await sendEvent(h.endpoint, {})).status).toBe(202);
    expect((await sendEvent(h.endpoint, {})).errorType).toBe("TooManyRequestsException");
  });
});
