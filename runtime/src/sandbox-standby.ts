// A generic sandbox's wait for its function: the agent starts workers ahead of demand with
// no function in them (network, container and this emulator already up; for Node runtimes
// the runtime client too, booted but with no handler loaded), and specialises one on
// acquire by mounting the code at /var/task and writing the function's environment to
// the control folder it mounted read-only at ESB_SANDBOX_CONTROL. Nothing listens in the
// worker until then: the control folder is written only by the agent (root on the node).
//
// Runs INSIDE the worker image: Node built-ins only, imports only sibling worker files.
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, fstatSync, readFileSync, watch } from "node:fs";
import { join } from "node:path";
import { commandInCgroup, functionCgroupFromEnv } from "./function-cgroup.js";
import { restoreRuntimeOnlyEnv, RUNTIME_ONLY_ENV_NAME } from "./runtime-only-env.js";

/** Environment variable naming the control folder of a generic sandbox (set by the agent). */
export const SANDBOX_CONTROL_ENV = "ESB_SANDBOX_CONTROL";
/** Environment variable naming the runtime bootstrap to boot ahead of the function (Node runtimes). */
export const SANDBOX_PREBOOT_ENV = "ESB_SANDBOX_PREBOOT";
/** Set in a pre-booted runtime's environment: it reads its real environment from stdin first. */
export const RUNTIME_STANDBY_ENV = "ESB_RUNTIME_STANDBY";
/**
 * Written by a sandbox once it waits for its function (its runtime booted too), in /tmp: the
 * one folder the agent sees (its host folder) that the worker may write. Removed before the
 * function's runtime starts, so the function's /tmp starts empty.
 */
export const SANDBOX_READY_FILE = "/tmp/.esb-sandbox-ready";
/** File the agent writes (atomically) into the control folder to specialise the sandbox. */
export const SPECIALISE_FILE = "specialise.json";

/** What the agent hands a generic sandbox on acquire. */
export interface Specialisation {
  /** The worker's whole environment, as a worker started for the function would have it. */
  env: Record<string, string>;
}

/**
 * Resolves with the specialisation once `<dir>/specialise.json` exists and parses
 * (inotify on the folder, plus a look before waiting, so a file written before the
 * watch started is not missed). Rejects when the file is not a specialisation.
 */
export function waitForSpecialisation(dir: string): Promise<Specialisation> {
  return new Promise((resolve, reject) => {
    let done = false;
    const watcher = watch(dir, () => look());
    const look = (): void => {
      if (done) return;
      let text: string;
      try {
        text = readFileSync(join(dir, SPECIALISE_FILE), "utf8");
      } catch {
        return; // not there yet
      }
      done = true;
      watcher.close();
      try {
        resolve(parseSpecialisation(text));
      } catch (err) {
        reject(err as Error);
      }
    };
    watcher.on("error", (err) => {
      if (done) return;
      done = true;
      reject(err);
    });
    look();
  });
}

/** Parses and checks a specialisation file. Throws on anything but `{env: {name: string}}`. */
export function parseSpecialisation(text: string): Specialisation {
  const parsed = JSON.parse(text) as { env?: unknown };
  const env = parsed.env;
  if (!env || typeof env !== "object" || Array.isArray(env)) throw new Error("specialisation without env");
  for (const [k, v] of Object.entries(env)) {
    if (typeof v !== "string") throw new Error(`specialisation env ${k} is not a string`);
  }
  return { env: env as Record<string, string> };
}

/** A runtime process booted before its function was known; see {@link preBootRuntime}. */
export interface PreBootedRuntime {
  /** The bootstrap command it runs. */
  command: string[];
  child: ChildProcess;
  /** The environment it was started with (after the launcher's runtime-only variables were restored). */
  env: NodeJS.ProcessEnv;
  /** Resolves once it is booted and waits for its environment (or exited). */
  booted: Promise<void>;
  /** Gives it its real environment (it then loads the handler), and lets go of stdin. */
  handOver(env: NodeJS.ProcessEnv): void;
}

/**
 * Starts `bootstrap` (in the function's memory cgroup when there is one) with
 * `RUNTIME_STANDBY_ENV=1` and a pipe on stdin, from which the runtime client
 * reads its real environment ({@link readStandbyEnvironment}) before it loads
 * the handler.
 */
export function preBootRuntime(bootstrap: string, baseEnv: NodeJS.ProcessEnv): PreBootedRuntime {
  const env = { ...restoreRuntimeOnlyEnv(baseEnv), [RUNTIME_STANDBY_ENV]: "1" };
  const command = [bootstrap];
  const cgroup = functionCgroupFromEnv(baseEnv);
  const argv = cgroup ? commandInCgroup(cgroup, command) : command;
  // fd 3: the runtime closes it once it is booted and waits for its environment.
  const child = spawn(argv[0], argv.slice(1), {
    env,
    stdio: ["pipe", "pipe", "pipe", "pipe"],
    detached: true,
  });
  // A sandbox removed before it was used kills the group; nothing to report then.
  child.stdin!.on("error", () => undefined);
  const booted = new Promise<void>((resolve) => {
    const signal = child.stdio[3] as NodeJS.ReadableStream | null;
    if (!signal) return resolve();
    signal.on("data", () => undefined);
    signal.on("end", () => resolve());
    signal.on("error", () => resolve());
    child.once("exit", () => resolve());
  });
  return {
    command,
    child,
    env,
    booted,
    handOver(real) {
      child.stdin!.end(JSON.stringify(real));
    },
  };
}

/**
 * True when the pre-booted runtime can serve a function whose runtime would be
 * `command` with `env`: the same bootstrap, and every variable that changes how a
 * process starts (NODE_OPTIONS & co., and the memory size the bootstrap sizes the
 * heap from) the same as when it booted. Otherwise a fresh runtime must start.
 */
export function preBootFits(pre: PreBootedRuntime, command: string[], env: NodeJS.ProcessEnv): boolean {
  if (command.length !== pre.command.length || command.some((c, i) => c !== pre.command[i])) return false;
  const startNames = new Set(
    [...Object.keys(env), ...Object.keys(pre.env)].filter((k) => RUNTIME_ONLY_ENV_NAME.test(k)),
  );
  startNames.add("AWS_LAMBDA_FUNCTION_MEMORY_SIZE");
  for (const k of startNames) if ((env[k] ?? "") !== (pre.env[k] ?? "")) return false;
  return true;
}

/**
 * In a pre-booted runtime (`RUNTIME_STANDBY_ENV` set): says it is booted (closes fd 3), reads the real environment
 * from stdin and makes it `process.env` (the standby one is dropped), then changes to
 * LAMBDA_TASK_ROOT (mounted after this process started: its old working folder is
 * the empty one under the mount). No-op otherwise.
 */
export async function readStandbyEnvironment(): Promise<void> {
  // Only a runtime the standby emulator started has pipes on stdin and fd 3 (a fresh runtime's
  // stdin is /dev/null, and fd 3 may then be one of Node's own).
  if (process.env[RUNTIME_STANDBY_ENV] !== "1" || !isPipe(0) || !isPipe(3)) return;
  // Tell the emulator this runtime is booted: close fd 3, its pipe.
  closeSync(3);
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const env = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, string>;
  for (const k of Object.keys(process.env)) delete process.env[k];
  Object.assign(process.env, env);
  try {
    process.chdir(env.LAMBDA_TASK_ROOT || "/var/task");
  } catch {
    // no task root: the handler load reports it
  }
}

/** A pipe or socket (Node gives a child's "pipe" stdio as a socket pair). */
function isPipe(fd: number): boolean {
  try {
    const st = fstatSync(fd);
    return st.isFIFO() || st.isSocket();
  } catch {
    return false;
  }
}
