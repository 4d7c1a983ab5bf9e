// The function's own memory cgroup, as the emulator inside a worker sees it: the agent
// makes it on the host (limited to memorySize, its process list writable by the worker's
// user) and mounts it at the path in ESB_FUNCTION_CGROUP. The emulator starts the runtime
// in it, so the function gets its whole memorySize and ESB's emulator is accounted apart.
//
// Runs INSIDE the worker image: Node built-ins only.
import { existsSync } from "node:fs";
import { join } from "node:path";

/** Environment variable naming the mounted function cgroup (set by the agent). */
export const FUNCTION_CGROUP_ENV = "ESB_FUNCTION_CGROUP";

/** The function's memory cgroup: where to join it and what to read. */
export interface FunctionCgroup {
  /** Directory of the cgroup inside the worker. */
  dir: string;
  /** File the runtime process writes its pid to, before it execs the bootstrap. */
  procsFile: string;
  /** High-water mark of the function's memory (bytes), if the kernel has one. */
  peakFile: string | undefined;
  /** File with the `oom_kill N` counter of the function's cgroup, if any. */
  oomFile: string | undefined;
}

/**
 * The function cgroup named by `env[ESB_FUNCTION_CGROUP]`, or undefined when the
 * variable is unset or its directory has no `cgroup.procs` (then the runtime runs
 * in the worker's own cgroup). cgroup v1 (`memory.max_usage_in_bytes`,
 * `memory.oom_control`) and v2 (`memory.peak`, `memory.events`) file names.
 */
export function functionCgroupFromEnv(env: NodeJS.ProcessEnv): FunctionCgroup | undefined {
  const dir = env[FUNCTION_CGROUP_ENV];
  if (!dir || !existsSync(join(dir, "cgroup.procs"))) return undefined;
  const first = (names: string[]) => names.map((n) => join(dir, n)).find((f) => existsSync(f));
  return {
    dir,
    procsFile: join(dir, "cgroup.procs"),
    peakFile: first(["memory.max_usage_in_bytes", "memory.peak"]),
    oomFile: first(["memory.oom_control", "memory.events"]),
  };
}

/**
 * `command` wrapped so that its process joins `cgroup` before it execs: a POSIX
 * shell writes its own pid (kept by exec) to cgroup.procs, so every page the
 * bootstrap and its children allocate is charged to the function's cgroup.
 * If the cgroup cannot be joined the runtime does not start (exit 126), rather
 * than run without its memory limit.
 */
export function commandInCgroup(cgroup: FunctionCgroup, command: string[]): string[] {
  const script =
    'echo $$ > "$0" || { echo "esb: cannot join the function memory cgroup $0" >&2; exit 126; }; exec "$@"';
  return ["/bin/sh", "-c", script, cgroup.procsFile, ...command];
}
