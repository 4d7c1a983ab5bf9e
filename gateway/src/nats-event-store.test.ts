import { describe, it, expect, afterAll, afterEach, beforeAll } from "@jest/globals";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { createLogger } from "@esb/common";
import { describeEventStoreConformance } from "./event-store-conformance.js";
import type { GatewayServer } from "./gateway-server.js";
import { GatewayTestHarness, testFunctionManifest } from "./gateway-test-harness.js";
import { NatsEventStore } from "./nats-event-store.js";
import { NatsTestServer } from "./nats-test-server.js";
import { TestWorkerServer } from "./test-worker-server.js";

// The NATS JetStream event store against a real nats-server (JetStream, file
// storage, token auth) started here: the conformance suite every store runs,
// then real gateways sharing one stream: each event runs once, an event whose
// gateway is SIGKILLed mid-run runs on another, dead letters are readable with
// a plain JetStream client, a full stream is a 429, what was stored survives a
// SIGKILL of NATS, and an unreachable NATS is a 500.

const nats = new NatsTestServer();
beforeAll(() => nats.start());
afterAll(() => nats.stop());
const logger = createLogger("nats-event-store-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });

describeEventStoreConformance("NatsEventStore", {
  shared: true,
  open: (limits, storage) =>
    new NatsEventStore({
      url: nats.url,
      token: nats.token,
      stream: storage,
      limits,
      ackWaitMs: 1000,
      logger,
    }),
});

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
let streams = 0;

/** Gateway settings for a stream of its own (per test), on the test's NATS. */
function natsEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    GATEWAY_EVENT_STORE: nats.url,
    GATEWAY_EVENT_NATS_TOKEN: nats.token,
    GATEWAY_EVENT_NATS_STREAM: `GW${process.pid}x${++streams}`,
    ...extra,
  };
}

/** A harness serving `echo` with a gateway on NATS. */
async function setup(env: Record<string, string>) {
  const h = new GatewayTestHarness();
  await h.start(testFunctionManifest("echo"), env);
  cleanups.push(() => h.stop());
  return h;
}

/** Another gateway on the same agent, functions and settings as `h` (a second replica). */
async function replica(h: GatewayTestHarness, env: Record<string, string>): Promise<GatewayTestHarness> {
  const other = new GatewayTestHarness();
  other.agent = h.agent;
  other.dir = h.dir;
  await other.startGateway(env);
  cleanups.push(() => other.gateway.stop());
  return other;
}

async function sendEvent(endpoint: string, event: unknown) {
  const res = await fetch(`${endpoint}/2015-03-31/functions/echo/invocations`, {
    method: "POST",
    headers: { "x-amz-invocation-type": "Event", "content-type": "application/json" },
    body: JSON.stringify(event),
  });
  return {
    status: res.status,
    requestId: res.headers.get("x-amzn-requestid") ?? "",
    errorType: res.headers.get("x-amzn-errortype") ?? undefined,
    body: await res.text(),
  };
}

function runs(ids: string[]): number[] {
  return ids.map((id) => TestWorkerServer.calls.filter((c) => c.requestId === id).length);
}

async function until(check: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Event invocations a gateway ran (its own metrics). */
async function eventRuns(g: GatewayServer): Promise<number> {
  const text = await g.metrics.registry.getSingleMetricAsString("esb_gateway_invocations_total");
  return text
    .split("\n")
    .filter((l) => l.includes('type="Event"'))
    .reduce((sum, l) => sum + Number(l.split(" ").pop()), 0);
}

describe("gateways sharing a NATS JetStream event store", () => {
  it("two gateways each run a share of the events, and every event runs exactly once", async () => {
    const env = natsEnv({ GATEWAY_EVENT_CONCURRENCY: "2" });
    const h = await setup(env);
    const other = await replica(h, env);
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      const sent = await sendEvent(i % 2 ? h.endpoint : other.endpoint, { sleepMs: 50, i });
      expect(sent.status).toBe(202);
      ids.push(sent.requestId);
    }
    await until(() => runs(ids).every((n) => n >= 1));
    await h.gateway.eventQueue.idle();
    expect(runs(ids)).toEqual(Array(20).fill(1));
    const [a, b] = [await eventRuns(h.gateway), await eventRuns(other.gateway)];
    expect(a + b).toBe(20);
    // Each holds at most 2 events at once, so neither can take all 20.
    expect(a).toBeGreaterThan(0);
    expect(b).toBeGreaterThan(0);
  });

  it("an event whose gateway is SIGKILLed while running it runs on another gateway", async () => {
    const env = natsEnv({ GATEWAY_EVENT_ACK_WAIT_SECONDS: "2" });
    const h = await setup(env);
    await h.gateway.stop(); // the in-process gateway joins only after the kill
    const child = spawn(process.execPath, [fileURLToPath(new URL("./main.js", import.meta.url))], {
      env: {
        ...process.env,
        ...env,
        GATEWAY_PORT: "0",
        GATEWAY_HOST: "127.0.0.1",
        AGENT_URLS: h.agent.url,
        FUNCTIONS_DIR: h.dir,
        GATEWAY_HEARTBEAT_MS: "200",
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
        if (line.includes('"gateway listening"')) resolve((JSON.parse(line) as { port: number }).port);
      });
      child.once("exit", () => reject(new Error("the gateway exited before listening")));
    });
    const sent = await sendEvent(`http://127.0.0.1:${port}`, { sleepMs: 1500 });
    expect(sent.status).toBe(202);
    await until(() => runs([sent.requestId])[0] === 1); // the killed gateway's worker has it
    child.kill("SIGKILL");
    expect(await exited).toBe("SIGKILL");
    await h.startGateway(env);
    await until(() => runs([sent.requestId])[0] === 2);
    await h.gateway.eventQueue.idle();
    expect(await eventRuns(h.gateway)).toBe(1);
    expect(await h.gateway.eventQueue.deadLetters()).toEqual([]);
  });

  it("dead letters are readable with a plain JetStream client and can be re-driven", async () => {
    const env = natsEnv();
    const h = await setup(env);
    const sent = await sendEvent(h.endpoint, { fail: "always" });
    expect(sent.status).toBe(202);
    await until(async () => (await h.gateway.eventQueue.deadLetters()).length === 1);
    expect(runs([sent.requestId])).toEqual([3]); // the first try and 2 retries
    const [letter] = await h.gateway.eventQueue.deadLetters();
    expect(letter).toMatchObject({ requestId: sent.requestId, reason: "RetriesExhausted", attempts: 3 });
    // What `nats stream view <stream>_DEAD` shows a user.
    const nc = await connect({ servers: nats.url, token: nats.token });
    try {
      const jsm = await jetstreamManager(nc);
      const dead = `${env.GATEWAY_EVENT_NATS_STREAM}_DEAD`;
      const m = await jsm.streams.getMessage(dead, { seq: letter.seq });
      expect(m?.header.get("Esb-Request-Id")).toBe(sent.requestId);
      expect(m?.header.get("Esb-Reason")).toBe("RetriesExhausted");
      expect(m?.header.get("Esb-Error")).toBe("Error");
      expect(m?.header.get("Esb-Name")).toBe("echo");
      expect(Buffer.from(m!.data).toString()).toBe('{"fail":"always"}');
    } finally {
      await nc.close();
    }
    expect(await h.gateway.eventQueue.redrive([sent.requestId])).toBe(1);
    await until(
      async () => runs([sent.requestId])[0] === 6 && (await h.gateway.eventQueue.deadLetters()).length === 1,
    );
  });

  it("a full stream answers 429 TooManyRequestsException", async () => {
    const h = await setup(natsEnv({ GATEWAY_EVENT_QUEUE_SIZE: "2" }));
    h.agent.coldStartDelayMs = 2000; // keeps the accepted events stored while the test fills the bound
    cleanups.push(() => new Promise((r) => setTimeout(r, 2200)));
    expect((await sendEvent(h.endpoint, {})).status).toBe(202);
    expect((await sendEvent(h.endpoint, {})).status).toBe(202);
    const refused = await sendEvent(h.endpoint, {});
    expect(refused.status).toBe(429);
    expect(refused.errorType).toBe("TooManyRequestsException");
    expect(JSON.parse(refused.body)).toMatchObject({ Reason: "CallerRateLimitExceeded" });
  });

  it("events stored before NATS is SIGKILLed all run once it is back on its store", async () => {
    const own = new NatsTestServer();
    await own.start();
    cleanups.push(() => own.stop());
    const h = await setup({
      ...natsEnv(),
      GATEWAY_EVENT_STORE: own.url,
      GATEWAY_EVENT_NATS_TOKEN: own.token,
    });
    h.agent.coldStartDelayMs = 3000; // nothing finishes before the kill
    cleanups.push(() => new Promise((r) => setTimeout(r, 3200)));
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      const sent = await sendEvent(h.endpoint, { i });
      expect(sent.status).toBe(202);
      ids.push(sent.requestId);
    }
    await own.kill();
    expect(runs(ids).every((n) => n === 0)).toBe(true);
    await own.start();
    h.agent.coldStartDelayMs = 0;
    await until(() => runs(ids).every((n) => n >= 1), 60_000);
    await h.gateway.eventQueue.idle();
    expect(await h.gateway.eventQueue.deadLetters()).toEqual([]);
  });

  it("an unreachable NATS is a 500 ServiceException naming it, not a 202", async () => {
    const h = await setup({ ...natsEnv(), GATEWAY_EVENT_STORE: "nats://127.0.0.1:9" });
    const sent = await sendEvent(h.endpoint, { lost: "never" });
    expect(sent.status).toBe(500);
    expect(sent.errorType).toBe("ServiceException");
    expect(sent.body).toMatch(/event store \(NATS JetStream at nats:\/\/127\.0\.0\.1:9\) is unavailable/);
  });
});
