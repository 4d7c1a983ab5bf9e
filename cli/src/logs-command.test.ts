// `esb logs` as people run it (the built CLI, a child process) against the embedded log store
// esb up starts: a REAL VictoriaLogs on loopback with Basic auth, lines shipped by the agent's shipper.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { createLogger } from "@esb/common";
import { FunctionLogRecords } from "@esb/agent/logs/function-log-records";
import { VictoriaLogsShipper } from "@esb/agent/logs/victoria-logs-shipper";
import { LogStore, logStoreConnectionFile, readLogStoreConnection } from "./log-store.js";
import { formatLogLine } from "./logs-command.js";
import { functionLogText } from "./terminal-log.js";

const log = createLogger("logs-command-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });
const MAIN = fileURLToPath(new URL("./main.js", import.meta.url));
const REQ = "7d6c2b0e-1111-4a2b-9c3d-000000000001";

function esb(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, ...args], { env: { ...process.env, ...env } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
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

describe("esb logs (real VictoriaLogs, embedded as esb up runs it)", () => {
  const stateDir = mkdtempSync(join(tmpdir(), "esb-logs-cli-"));
  const store = new LogStore(stateDir, { kind: "embedded", port: 0 });
  let shipper: VictoriaLogsShipper;
  const records = new FunctionLogRecords({
    node: "node-a",
    functionOf: (id) => (id === "w1" ? "default/hello" : "team/api"),
  });
  const ship = (id: string, line: string) => shipper.push(records.record({ id, stream: "stdout", line }));

  beforeAll(async () => {
    await store.start();
    const env = store.agentEnv();
    shipper = new VictoriaLogsShipper({
      url: env.AGENT_LOGS_URL!,
      username: env.AGENT_LOGS_USERNAME,
      password: env.AGENT_LOGS_PASSWORD,
      logger: log,
      flushIntervalMs: 20,
    });
    ship("w1", `START RequestId: ${REQ} Version: $LATEST`);
    ship("w1", `2026-12-03T10:00:00.000Z\t${REQ}\tINFO\thello ESB`);
    ship("w1", `END RequestId: ${REQ}`);
    ship("w1", `REPORT RequestId: ${REQ}\tDuration: 2.00 ms`);
    ship("w1", "START RequestId: other-request Version: $LATEST");
    ship("w2", "a line of another namespace's function");
  });

  afterAll(async () => {
    await shipper?.close();
    await store.stop();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it("runs the store on loopback with a password only root reads, and refuses anonymous callers", async () => {
    const c = readLogStoreConnection(stateDir)!;
    expect(new URL(c.url).hostname).toBe("127.0.0.1");
    expect(statSync(logStoreConnectionFile(stateDir)).mode & 0o077).toBe(0);
    const res = await fetch(`${c.url}/select/logsql/query`, {
      method: "POST",
      body: new URLSearchParams({ query: "*" }),
    });
    expect(res.status).toBe(401);
    await res.arrayBuffer();
  });

  it("prints a function's lines, one invocation's with --request-id, JSON with --json", async () => {
    const all = await until("the lines in the store", async () => {
      const r = await esb(["logs", "hello", "--state-dir", stateDir, "--since", "10m"]);
      return r.stdout.split("\n").filter(Boolean).length === 5 && r;
    });
    expect(all.code).toBe(0);
    const lines = all.stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z START RequestId: 7d6c2b0e-/);
    expect(lines[1]).toMatch(/Z 2026-12-03T10:00:00.000Z\t7d6c2b0e-\S+\tINFO\thello ESB$/);
    expect(lines[4]).toMatch(/START RequestId: other-request/);

    const one = await esb(["logs", "default/hello", "--state-dir", stateDir, "--request-id", REQ]);
    expect(
      one.stdout
        .trim()
        .split("\n")
        .map((l) => l.replace(/^\S+ /, "").split("\t")[0]),
    ).toEqual([
      `START RequestId: ${REQ} Version: $LATEST`,
      "2026-12-03T10:00:00.000Z",
      `END RequestId: ${REQ}`,
      `REPORT RequestId: ${REQ}`,
    ]);

    const json = await esb(["logs", "team/api", "--state-dir", stateDir, "--json"]);
    expect(
      json.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as unknown),
    ).toEqual([
      expect.objectContaining({
        function: "team/api",
        message: "a line of another namespace's function",
        node: "node-a",
        worker: "w2",
        stream: "stdout",
      }),
    ]);
  });

  it("--follow prints lines written after it started, once", async () => {
    const child = spawn(process.execPath, [MAIN, "logs", "team/api", "--state-dir", stateDir, "--follow"]);
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    try {
      await until("the history", async () => out.includes("another namespace"));
      ship("w2", "a new line while following");
      await until("the new line", async () => out.includes("a new line while following"));
      expect(out.split("\n").filter((l) => l.includes("another namespace"))).toHaveLength(1);
    } finally {
      child.kill("SIGINT");
    }
  });

  it("says what is wrong: no esb up there, a bad --since, a wrong password", async () => {
    const none = await esb(["logs", "hello", "--state-dir", join(stateDir, "nothing")]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/esb logs: no log store found in .*nothing: is esb up running there/);
    const since = await esb(["logs", "hello", "--state-dir", stateDir, "--since", "yesterday"]);
    expect(since.code).toBe(2);
    expect(since.stderr).toContain('--since "yesterday" is not a duration');
    const url = readLogStoreConnection(stateDir)!.url;
    const wrong = await esb(["logs", "hello", "--logs-url", url], {
      ESB_LOGS_USERNAME: "esb",
      ESB_LOGS_PASSWORD: "x",
    });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain("refused the credentials (HTTP 401)");
  });

  it("prints times with milliseconds whatever fraction the store returns", () => {
    const line = { function: "default/a", node: "n", worker: "w", stream: "stdout", message: "m" };
    expect(formatLogLine({ ...line, time: "2026-12-03T18:54:04.16Z" })).toBe("2026-12-03T18:54:04.160Z m");
    expect(formatLogLine({ ...line, time: "2026-12-03T18:54:04Z" })).toBe("2026-12-03T18:54:04.000Z m");
    expect(formatLogLine({ ...line, time: "2026-12-03T18:54:04.123456789Z" })).toBe(
      "2026-12-03T18:54:04.123Z m",
    );
  });

  it("shows worker lines on esb up's terminal with the function's name", () => {
    expect(
      functionLogText({ function: "default/hello", message: "START RequestId: 1 Version: $LATEST" }),
    ).toBe("hello | START RequestId: 1 Version: $LATEST");
    expect(functionLogText({ function: "team/api", message: "line\r" })).toBe("team/api | line");
  });
});
