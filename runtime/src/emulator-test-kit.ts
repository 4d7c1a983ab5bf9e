// Test helpers for the emulator suites: a task folder on disk, an in-process emulator on
// loopback with free ports, and an invoke call that returns status, headers and body.
// (Test-only: not one of WORKER_FILES.)
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Emulator, type EmulatorOptions } from "./emulator.js";

/** Absolute path of the compiled Node runtime client entry point. */
export const NODE_CLIENT_MAIN = fileURLToPath(new URL("./node-client-main.js", import.meta.url));

/** Writes `files` (path → content; paths ending in "bootstrap" or ".sh" are made executable) into a new temp folder. */
export function makeTaskDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "esb-rt-task-"));
  for (const [name, content] of Object.entries(files)) {
    const path = join(dir, name);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, content);
    if (name.endsWith("bootstrap") || name.endsWith(".sh")) chmodSync(path, 0o755);
  }
  return dir;
}

/** A running emulator plus what it logged. */
export interface TestEmulator {
  emulator: Emulator;
  url: string;
  logs: () => string;
  /** Resolves with all logs once `text` appears in them (END/REPORT are written just after the reply). */
  waitForLog: (text: string) => Promise<string>;
  close: () => Promise<void>;
}

/** Starts an emulator on 127.0.0.1 with free ports; `env` is added to process.env for the runtime. */
export async function startEmulator(
  taskDir: string,
  env: Record<string, string>,
  options: EmulatorOptions = {},
): Promise<TestEmulator> {
  const chunks: string[] = [];
  const emulator = new Emulator({
    invokeHost: "127.0.0.1",
    invokePort: 0,
    runtimeApiPort: 0,
    command: [process.execPath, NODE_CLIENT_MAIN],
    timeoutSeconds: 3,
    memorySource: "process",
    log: (chunk) => void chunks.push(chunk.toString()),
    ...options,
    env: {
      ...process.env,
      NODE_OPTIONS: "",
      LAMBDA_TASK_ROOT: taskDir,
      AWS_LAMBDA_FUNCTION_NAME: "test-fn",
      ...env,
    },
  });
  const addr = await emulator.start();
  return {
    emulator,
    url: `http://127.0.0.1:${addr.invoke.port}/2015-03-31/functions/function/invocations`,
    logs: () => chunks.join(""),
    waitForLog: async (text) => {
      for (let i = 0; i < 100; i++) {
        const all = chunks.join("");
        if (all.includes(text)) return all;
        await new Promise((r) => setTimeout(r, 20));
      }
      return chunks.join("");
    },
    close: async () => {
      await emulator.close();
      rmSync(taskDir, { recursive: true, force: true });
    },
  };
}

/** Result of one invoke call. */
export interface InvokeResult {
  status: number;
  headers: Headers;
  text: string;
  json: unknown;
}

/** POSTs `body` (a string, or JSON-encoded otherwise) to the emulator's Invoke endpoint. */
export async function invoke(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<InvokeResult> {
  const res = await fetch(url, {
    method: "POST",
    body: typeof body === "string" ? body : JSON.stringify(body),
    headers,
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}
