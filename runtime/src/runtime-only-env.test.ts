// @esb-test unit: needs no test environment (`make test-unit` runs it).
// The emulator's launcher as a worker starts it (a real shell, the real emulator-main and the Node
// runtime client as child processes): the function's NODE_OPTIONS & co. reach its runtime, never
// the emulator, so a broken value is the function's init error and not a dead worker.
import { describe, it, expect, afterEach } from "@jest/globals";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { NODE_CLIENT_MAIN, invoke, makeTaskDir } from "./emulator-test-kit.js";
import { PARKED_ENV_PREFIX, emulatorLauncherScript, restoreRuntimeOnlyEnv } from "./runtime-only-env.js";

const EMULATOR_MAIN = fileURLToPath(new URL("./emulator-main.js", import.meta.url));

const INDEX_MJS = `
export const handler = async () => ({
  nodeOptions: process.env.NODE_OPTIONS,
  nodePath: process.env.NODE_PATH,
  uv: process.env.UV_THREADPOOL_SIZE,
  parked: Object.keys(process.env).filter((k) => k.startsWith("${PARKED_ENV_PREFIX}")),
  preloaded: globalThis.preloaded ?? null,
});
`;

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

const started: { child: ChildProcess; dir: string }[] = [];

/** Starts `shell launcher node node-client-main.js` as a container would, with `fnEnv` from the function. */
async function launch(
  shell: string[],
  fnEnv: Record<string, string>,
): Promise<{ url: string; output: () => string }> {
  const dir = makeTaskDir({ "index.mjs": INDEX_MJS, "preload.cjs": "globalThis.preloaded = 'yes';\n" });
  const launcher = join(dir, "start-emulator");
  writeFileSync(launcher, emulatorLauncherScript(process.execPath, EMULATOR_MAIN), { mode: 0o755 });
  const port = await freePort();
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    ESB_EMULATOR_HOST: "127.0.0.1",
    ESB_EMULATOR_PORT: String(port),
    ESB_RUNTIME_API_PORT: "0",
    ESB_EMULATOR_MEMORY_SOURCE: "process",
    LAMBDA_TASK_ROOT: dir,
    _HANDLER: "index.handler",
    ...fnEnv,
  };
  for (const [k, v] of Object.entries(env)) env[k] = v.replaceAll("{dir}", dir);
  const child = spawn(shell[0], [...shell.slice(1), launcher, process.execPath, NODE_CLIENT_MAIN], {
    env,
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
  });
  started.push({ child, dir });
  let out = "";
  child.stdout.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr.on("data", (c: Buffer) => (out += c.toString()));
  for (let i = 0; i < 250 && !out.includes("esb emulator: invoke on"); i++) {
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  expect({ listening: out.includes("esb emulator: invoke on"), out }).toMatchObject({ listening: true });
  return { url: `http://127.0.0.1:${port}/2015-03-31/functions/function/invocations`, output: () => out };
}

afterEach(() => {
  for (const { child } of started.splice(0)) child.kill("SIGKILL");
});

const shells: [string, string[]][] = [["sh", ["/bin/sh"]]];
// Runtime images run the launcher with busybox ash.
if (existsSync("/bin/busybox")) shells.push(["busybox ash", ["/bin/busybox", "sh"]]);

describe.each(shells)("emulator launcher under %s", (_name, shell) => {
  it("keeps a broken NODE_OPTIONS away from the emulator: the function's init fails as Runtime.ExitError", async () => {
    const w = await launch(shell, { NODE_OPTIONS: "--require=/nonexistent.js" });
    const r = await invoke(w.url, {}, { "X-Amz-Request-Id": "bad-node-options" });
    expect(r.status).toBe(200);
    expect(r.headers.get("x-amz-function-error")).toBe("Unhandled");
    expect(r.json).toEqual({
      errorType: "Runtime.ExitError",
      errorMessage: "RequestId: bad-node-options Error: Runtime exited with error: exit status 1",
    });
    // The function's log says why, as Node printed it.
    expect(w.output()).toContain("Cannot find module '/nonexistent.js'");
    // The worker stays up and answers the next call the same way.
    const again = await invoke(w.url, {});
    expect(again.headers.get("x-amz-function-error")).toBe("Unhandled");
  }, 20_000);

  it("hands the function's NODE_OPTIONS, NODE_PATH and UV_* to its runtime unchanged", async () => {
    const w = await launch(shell, {
      NODE_OPTIONS: "--require={dir}/preload.cjs",
      NODE_PATH: "/opt/x:/var/task",
      UV_THREADPOOL_SIZE: 'it\'s "quoted" $HOME',
    });
    const r = await invoke(w.url, {});
    expect(r.status).toBe(200);
    expect(r.headers.get("x-amz-function-error")).toBeNull();
    expect(r.json).toMatchObject({
      nodePath: "/opt/x:/var/task",
      uv: 'it\'s "quoted" $HOME',
      parked: [],
      preloaded: "yes",
    });
    expect((r.json as { nodeOptions: string }).nodeOptions).toMatch(/^--require=.*\/preload\.cjs$/);
  }, 20_000);
});

describe("restoreRuntimeOnlyEnv", () => {
  it("puts parked variables back under their names and drops the parked names", () => {
    const env = {
      A: "1",
      [`${PARKED_ENV_PREFIX}NODE_OPTIONS`]: "--x",
      NODE_OPTIONS: "emulator's own",
      [`${PARKED_ENV_PREFIX}LD_PRELOAD`]: "",
      [`${PARKED_ENV_PREFIX}HOME`]: "/not-runtime-only",
    };
    expect(restoreRuntimeOnlyEnv(env)).toEqual({ A: "1", NODE_OPTIONS: "--x", LD_PRELOAD: "" });
    expect(env.NODE_OPTIONS).toBe("emulator's own");
  });
});
