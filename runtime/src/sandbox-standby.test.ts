// @esb-test unit: needs no test environment (`make test-unit` runs it).
// A generic sandbox as a worker runs it (the real emulator-main and Node runtime client as child
// processes): nothing listens until the agent writes the specialisation; then the function gets
// its own environment and code, served by the runtime booted ahead of it when that fits, and by a
// fresh one when the function's start-up variables differ.
import { describe, it, expect, afterEach } from "@jest/globals";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { NODE_CLIENT_MAIN, invoke, makeTaskDir } from "./emulator-test-kit.js";
import {
  parseSpecialisation,
  SANDBOX_CONTROL_ENV,
  SANDBOX_PREBOOT_ENV,
  SPECIALISE_FILE,
} from "./sandbox-standby.js";

const EMULATOR_MAIN = fileURLToPath(new URL("./emulator-main.js", import.meta.url));

const INDEX_MJS = `
export const handler = async () => ({
  pid: process.pid,
  cwd: process.cwd(),
  greeting: process.env.GREETING ?? null,
  standby: process.env.ESB_RUNTIME_STANDBY ?? null,
  sandboxOnly: process.env.SANDBOX_ONLY ?? null,
  nodeOptions: process.env.NODE_OPTIONS ?? null,
});
`;

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: "127.0.0.1", port });
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
  });
}

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

interface Sandbox {
  child: ChildProcess;
  control: string;
  root: string;
  port: number;
  /** Pid of the pre-booted runtime (written by its bootstrap before it execs node). */
  preBootPid: () => number;
  output: () => string;
}

/** Starts emulator-main as a generic sandbox whose pre-boot bootstrap records its pid. */
async function startSandbox(): Promise<Sandbox> {
  const root = mkdtempSync(join(tmpdir(), "esb-sbx-"));
  const control = join(root, "control");
  const pidFile = join(root, "preboot.pid");
  const bootstrap = join(root, "bootstrap");
  // Runtime images run their bootstrap with busybox ash.
  const shell = existsSync("/bin/busybox") ? "/bin/busybox sh" : "/bin/sh";
  writeFileSync(
    bootstrap,
    `#!${shell}\necho $$ > ${pidFile}\nexec ${process.execPath} ${NODE_CLIENT_MAIN}\n`,
    { mode: 0o755 },
  );
  mkdirSync(control);
  const port = await freePort();
  const child = spawn(process.execPath, [EMULATOR_MAIN], {
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      [SANDBOX_CONTROL_ENV]: control,
      [SANDBOX_PREBOOT_ENV]: bootstrap,
      SANDBOX_ONLY: "from the sandbox",
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE: "128",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (out += c.toString()));
  cleanups.push(() => {
    child.kill("SIGTERM");
    rmSync(root, { recursive: true, force: true });
  });
  // The pre-booted runtime is up (its bootstrap wrote its pid) before the function is known.
  for (let i = 0; i < 500; i++) {
    try {
      if (readFileSync(pidFile, "utf8").trim()) break;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    child,
    control,
    root,
    port,
    preBootPid: () => Number(readFileSync(pidFile, "utf8").trim()),
    output: () => out,
  };
}

/** Writes the specialisation as the agent does: a temp file renamed into place. */
function specialise(sbx: Sandbox, env: Record<string, string>): void {
  const tmp = join(sbx.control, `.${SPECIALISE_FILE}.tmp`);
  writeFileSync(tmp, JSON.stringify({ env }));
  renameSync(tmp, join(sbx.control, SPECIALISE_FILE));
}

function functionEnv(
  sbx: Sandbox,
  taskDir: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    ESB_EMULATOR_HOST: "127.0.0.1",
    ESB_EMULATOR_PORT: String(sbx.port),
    ESB_RUNTIME_API_PORT: "0",
    ESB_EMULATOR_MEMORY_SOURCE: "process",
    ESB_BOOTSTRAP_PATHS: join(sbx.root, "bootstrap"),
    LAMBDA_TASK_ROOT: taskDir,
    AWS_LAMBDA_FUNCTION_NAME: "specialised-fn",
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: "128",
    _HANDLER: "index.handler",
    GREETING: "hello from the function",
    ...extra,
  };
}

async function waitListening(sbx: Sandbox): Promise<void> {
  for (let i = 0; i < 500 && !(await listening(sbx.port)); i++) await new Promise((r) => setTimeout(r, 10));
}

describe("generic sandbox (emulator-main with ESB_SANDBOX_CONTROL)", () => {
  it("listens only once specialised, then serves the function with its env and code from the pre-booted runtime", async () => {
    const sbx = await startSandbox();
    expect(await listening(sbx.port)).toBe(false);
    const task = makeTaskDir({ "index.mjs": INDEX_MJS });
    cleanups.push(() => rmSync(task, { recursive: true, force: true }));
    // Read now: a fresh runtime would run the same bootstrap and write its own pid.
    const preBoot = sbx.preBootPid();
    specialise(sbx, functionEnv(sbx, task));
    await waitListening(sbx);
    const url = `http://127.0.0.1:${sbx.port}/2015-03-31/functions/function/invocations`;
    const r = await invoke(url, {});
    expect({ status: r.status, body: r.json }).toEqual({
      status: 200,
      body: {
        pid: preBoot,
        cwd: task,
        greeting: "hello from the function",
        standby: null,
        sandboxOnly: null,
        nodeOptions: null,
      },
    });
    // Init Duration is reported for the first invocation (from the hand-over to the first /next).
    for (let i = 0; i < 200 && !sbx.output().includes("REPORT"); i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(sbx.output()).toMatch(/REPORT RequestId: \S+\tDuration: [\d.]+ ms\t.*Init Duration: [\d.]+ ms/);
  }, 30_000);

  it("starts a fresh runtime (and kills the pre-booted one) when the function sets NODE_OPTIONS", async () => {
    const sbx = await startSandbox();
    const task = makeTaskDir({ "index.mjs": INDEX_MJS });
    cleanups.push(() => rmSync(task, { recursive: true, force: true }));
    const preBoot = sbx.preBootPid();
    specialise(sbx, functionEnv(sbx, task, { NODE_OPTIONS: "--no-warnings" }));
    await waitListening(sbx);
    const r = await invoke(`http://127.0.0.1:${sbx.port}/2015-03-31/functions/function/invocations`, {});
    const body = r.json as { pid: number; nodeOptions: string };
    expect(body.nodeOptions).toBe("--no-warnings");
    expect(body.pid).not.toBe(preBoot);
    let alive = true;
    for (let i = 0; i < 200 && alive; i++) {
      try {
        process.kill(preBoot, 0);
        await new Promise((r) => setTimeout(r, 10));
      } catch {
        alive = false;
      }
    }
    expect(alive).toBe(false);
  }, 30_000);

  it("rejects a specialisation that is not {env: {name: string}}", () => {
    expect(() => parseSpecialisation("{}")).toThrow("specialisation without env");
    expect(() => parseSpecialisation('{"env":{"A":1}}')).toThrow("specialisation env A is not a string");
    expect(parseSpecialisation('{"env":{"A":"1"}}')).toEqual({ env: { A: "1" } });
  });
});
