// The shipper against a REAL VictoriaLogs (built by hack/build-victorialogs.sh): lines arrive and
// are found by request id; while the store is down lines wait in the bounded buffer, the overflow
// is counted as dropped, and the rest arrives once the store is back; the store's Basic auth.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, expect, afterAll } from "@jest/globals";
import { createLogger } from "@esb/common";
import { VictoriaLogsClient } from "@esb/common/victoria-logs-query";
import { VictoriaLogsServer } from "@esb/common/victoria-logs-server";
import { Registry } from "prom-client";
import { FunctionLogRecords } from "./function-log-records.js";
import { VictoriaLogsShipper } from "./victoria-logs-shipper.js";

const log = createLogger("shipper-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });
const dirs: string[] = [];
const servers: VictoriaLogsServer[] = [];

async function store(auth?: { username: string; password: string }): Promise<VictoriaLogsServer> {
  const dir = mkdtempSync(join(tmpdir(), "esb-vl-test-"));
  dirs.push(dir);
  let serverAuth: { username: string; passwordFile: string } | undefined;
  if (auth) {
    writeFileSync(join(dir, "password"), auth.password, { mode: 0o600 });
    serverAuth = { username: auth.username, passwordFile: join(dir, "password") };
  }
  const server = new VictoriaLogsServer({ dataDir: join(dir, "data"), auth: serverAuth });
  servers.push(server);
  await server.start();
  return server;
}

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function metric(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  const v = (m?.values ?? []).find((x) =>
    Object.entries(labels).every(([k, want]) => (x.labels as Record<string, unknown>)[k] === want),
  );
  return v?.value ?? 0;
}

afterAll(async () => {
  for (const s of servers) await s.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("VictoriaLogsShipper (real VictoriaLogs)", () => {
  it("stores every line with its fields, found by function and request id", async () => {
    const server = await store();
    const registry = new Registry();
    const shipper = new VictoriaLogsShipper({ url: server.url, registry, logger: log, flushIntervalMs: 50 });
    const records = new FunctionLogRecords({ node: "node-a", functionOf: () => "default/hello" });
    const lines = [
      "START RequestId: 5f0c7a1e-0000-4000-8000-000000000001 Version: $LATEST",
      "2026-12-03T10:00:00.000Z\t5f0c7a1e-0000-4000-8000-000000000001\tINFO\thello from the handler",
      "END RequestId: 5f0c7a1e-0000-4000-8000-000000000001",
      "REPORT RequestId: 5f0c7a1e-0000-4000-8000-000000000001\tDuration: 1.00 ms",
      "START RequestId: 5f0c7a1e-0000-4000-8000-000000000002 Version: $LATEST",
      "another invocation",
    ];
    for (const line of lines) shipper.push(records.record({ id: "worker-1", stream: "stdout", line }));
    const client = new VictoriaLogsClient({ url: server.url });
    const found = await until("the first invocation's lines in the store", async () => {
      const got = await client.query({
        function: "default/hello",
        requestId: "5f0c7a1e-0000-4000-8000-000000000001",
      });
      return got.length === 4 && got;
    });
    expect(found.map((l) => l.message)).toEqual(lines.slice(0, 4));
    expect(found[1]).toMatchObject({
      function: "default/hello",
      node: "node-a",
      worker: "worker-1",
      stream: "stdout",
      version: "$LATEST",
      level: "INFO",
    });
    expect(await client.query({ function: "default/other" })).toEqual([]);
    await until(
      "the second invocation's lines",
      async () => (await client.query({ function: "default/hello" })).length === 6,
    );
    expect(await metric(registry, "esb_agent_log_lines_shipped_total")).toBe(6);
    await shipper.close();
  });

  it("keeps lines while the store is down, counts the overflow as dropped, and ships the rest once it is back", async () => {
    const server = await store();
    const registry = new Registry();
    const shipper = new VictoriaLogsShipper({
      url: server.url,
      registry,
      logger: log,
      maxBufferedLines: 5,
      flushIntervalMs: 20,
      minBackoffMs: 50,
      maxBackoffMs: 200,
    });
    const records = new FunctionLogRecords({ node: "node-a", functionOf: () => "default/down" });
    await server.kill();
    for (let i = 1; i <= 8; i++)
      shipper.push(records.record({ id: "w", stream: "stdout", line: `line ${i}` }));
    expect(await metric(registry, "esb_agent_log_lines_dropped_total", { reason: "buffer_full" })).toBe(3);
    expect(shipper.size).toBe(5);
    await until(
      "failed POSTs retried",
      async () => (await metric(registry, "esb_agent_log_ship_failures_total")) >= 2,
    );
    expect(await metric(registry, "esb_agent_log_lines_shipped_total")).toBe(0);

    await server.start(); // same port and data folder
    const client = new VictoriaLogsClient({ url: server.url });
    const found = await until("the buffered lines in the store", async () => {
      const got = await client.query({ function: "default/down" });
      return got.length === 5 && got;
    });
    // The oldest went when the buffer was full; the newest five arrive, in order.
    expect(found.map((l) => l.message)).toEqual(["line 4", "line 5", "line 6", "line 7", "line 8"]);
    expect(await metric(registry, "esb_agent_log_lines_shipped_total")).toBe(5);
    expect(shipper.size).toBe(0);
    await shipper.close();
  });

  it("bounds the buffer by characters too: long lines push the oldest out", async () => {
    const registry = new Registry();
    const server = await store();
    await server.kill(); // down: everything stays buffered
    const shipper = new VictoriaLogsShipper({
      url: server.url,
      registry,
      logger: log,
      maxBufferedChars: 1_500,
      minBackoffMs: 60_000,
    });
    const records = new FunctionLogRecords({ node: "n", functionOf: () => "default/long" });
    for (let i = 0; i < 10; i++)
      shipper.push(records.record({ id: "w", stream: "stdout", line: `${i}`.repeat(500) }));
    // Each entry is ~650 characters with its fields: two fit in 1,500.
    expect(shipper.size).toBe(2);
    expect(await metric(registry, "esb_agent_log_lines_dropped_total", { reason: "buffer_full" })).toBe(8);
    await shipper.close(0);
    expect(await metric(registry, "esb_agent_log_lines_dropped_total", { reason: "shutdown" })).toBe(2);
  });

  it("reaches a store with Basic auth only with its credentials (and says so when refused)", async () => {
    const auth = { username: "esb", password: "s3cret-pw" };
    const server = await store(auth);
    const anonymous = await fetch(`${server.url}/select/logsql/query`, { method: "POST", body: "query=*" });
    expect(anonymous.status).toBe(401);
    await anonymous.arrayBuffer();

    const registry = new Registry();
    const shipper = new VictoriaLogsShipper({
      url: server.url,
      ...auth,
      registry,
      logger: log,
      flushIntervalMs: 20,
    });
    shipper.push(
      new FunctionLogRecords({ node: "n", functionOf: () => "default/auth" }).record({
        id: "w",
        stream: "stderr",
        line: "secret line",
      }),
    );
    const client = new VictoriaLogsClient({ url: server.url, ...auth });
    const found = await until("the line in the store", async () => {
      const got = await client.query({ function: "default/auth" });
      return got.length === 1 && got;
    });
    expect(found[0]).toMatchObject({ message: "secret line", stream: "stderr" });
    await expect(
      new VictoriaLogsClient({ url: server.url, username: "esb", password: "wrong" }).query({
        function: "default/auth",
      }),
    ).rejects.toThrow(/refused the credentials \(HTTP 401\)/);
    await shipper.close();
  });
});
