import { afterAll, beforeAll, describe, expect, it } from "@jest/globals";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { request } from "node:http";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { cpusGiven } from "./gateway-cluster.js";
import { GatewayConfigError, loadGatewayConfig } from "./gateway-config.js";
import { GatewayTestHarness, testFunctionManifest } from "./gateway-test-harness.js";

// A multi-process gateway (GATEWAY_PROCESSES) as its users run it: dist/main.js
// in front of the loopback agent stand-in, real HTTP workers.

describe("GATEWAY_PROCESSES", () => {
  const base = { AGENT_URLS: "http://127.0.0.1:1" };

  it("defaults to auto: the CPUs given, and 1 with an SQLite Event store (it has one owner)", () => {
    expect(loadGatewayConfig(base).processes).toBe(Math.min(cpusGiven(), 64));
    expect(loadGatewayConfig({ ...base, GATEWAY_EVENT_STORE: "/tmp/events.db" }).processes).toBe(1);
    const nats = { ...base, GATEWAY_EVENT_STORE: "nats://127.0.0.1:4222" };
    expect(loadGatewayConfig({ ...nats, GATEWAY_PROCESSES: "3" }).processes).toBe(3);
  });

  it("refuses more than one process on an SQLite store, and values that are not auto or 1-64", () => {
    const sqlite = { ...base, GATEWAY_EVENT_STORE: "/tmp/events.db", GATEWAY_PROCESSES: "2" };
    expect(() => loadGatewayConfig(sqlite)).toThrow(/one owner/);
    for (const v of ["0", "65", "1.5", "many"])
      expect(() => loadGatewayConfig({ ...base, GATEWAY_PROCESSES: v })).toThrow(GatewayConfigError);
    expect(cpusGiven()).toBeGreaterThanOrEqual(1);
  });
});

describe("a gateway of two processes", () => {
  const h = new GatewayTestHarness();
  let primary: ChildProcess | undefined;
  let port = 0;
  /** "gateway listening" lines so far (one per process start). */
  let listening = 0;

  beforeAll(async () => {
    await h.start(testFunctionManifest("echo"));
    primary = spawn(process.execPath, [fileURLToPath(new URL("./main.js", import.meta.url))], {
      env: {
        ...process.env,
        GATEWAY_PROCESSES: "2",
        GATEWAY_PORT: "0",
        GATEWAY_HOST: "127.0.0.1",
        AGENT_URLS: h.agent.url,
        FUNCTIONS_DIR: h.dir,
        GATEWAY_HEARTBEAT_MS: "200",
        ESB_LOG_LEVEL: "info",
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    // Both processes share one port (listen(0) in a cluster gives every member the same one).
    port = await new Promise<number>((resolve, reject) => {
      createInterface({ input: primary!.stdout! }).on("line", (line) => {
        const m = /"port":(\d+).*"msg":"gateway listening"/.exec(line);
        if (m && ++listening >= 2) resolve(Number(m[1]));
      });
      primary!.once("exit", (code) => reject(new Error(`gateway exited with ${code}`)));
    });
  });

  afterAll(async () => {
    if (primary && primary.exitCode === null) primary.kill("SIGKILL");
    await h.stop();
  });

  it("serves calls from both processes and /metrics sums them", async () => {
    expect(children(primary!.pid!)).toHaveLength(2);
    // A new connection per call: the primary hands connections to its processes in turn.
    for (let i = 0; i < 20; i++) {
      const res = await call(port, "POST", "/2015-03-31/functions/echo/invocations", `{"i":${i}}`);
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body)).toMatchObject({ event: { i } });
    }
    const metrics = await call(port, "GET", "/metrics");
    expect(metrics.status).toBe(200);
    expect(metrics.body).toContain(
      'esb_gateway_invocations_total{function="default/echo",type="RequestResponse",status="ok"} 20',
    );
    // Both processes know the one agent: the gauge is not summed.
    expect(metrics.body).toMatch(/^esb_gateway_agents 1$/m);
  });

  it("replaces a process that dies, and stops every process on SIGTERM", async () => {
    const [victim] = children(primary!.pid!);
    // Processes that die in their first 5 s stop the gateway instead (a start-up failure).
    await new Promise((r) => setTimeout(r, 5500));
    process.kill(victim, "SIGKILL");
    // The replacement logs its own "gateway listening".
    for (let i = 0; i < 200 && listening < 3; i++) await new Promise((r) => setTimeout(r, 100));
    expect(listening).toBe(3);
    const now = children(primary!.pid!);
    expect(now).not.toContain(victim);
    expect(now).toHaveLength(2);
    for (let i = 0; i < 4; i++) {
      const res = await call(port, "POST", "/2015-03-31/functions/echo/invocations", "{}");
      expect(res.status).toBe(200);
    }
    const members = children(primary!.pid!);
    const exited = new Promise<number | null>((resolve) => primary!.once("exit", (code) => resolve(code)));
    primary!.kill("SIGTERM");
    expect(await exited).toBe(0);
    for (const pid of members) expect(alive(pid)).toBe(false);
  });
});

/** Pids of the direct children of `pid`. */
function children(pid: number): number[] {
  try {
    return execFileSync("pgrep", ["-P", String(pid)], { encoding: "utf8" })
      .split("\n")
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** One request on a connection of its own. */
function call(
  port: number,
  method: string,
  path: string,
  body?: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, method, path, agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}
