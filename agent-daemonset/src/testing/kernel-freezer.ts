import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";

/** What the kernel says of one process of a worker (tests read it from outside, not through a runtime). */
export interface KernelProcessState {
  pid: number;
  /** Freezer state of the process's freezer cgroup: FROZEN, FREEZING or THAWED. */
  freezer: string;
  /** `State:` letter of /proc/<pid>/status (a frozen task shows D under the v1 freezer, S under v2's). */
  state: string;
  /**
   * The letter every frozen task shows under this host's freezer: D (cgroup v1); undefined
   * on cgroup v2, whose frozen tasks show S, though one sometimes read R right after a freeze
   * in the freezer's tests (its cgroup.events `frozen 1`, read into `freezer`, is what counts).
   */
  frozenState?: "D";
  /** The process's memory cgroup (cgroup v1), e.g. `/esb/<id>/function`; "" on cgroup v2. */
  memoryCgroup: string;
}

const ROOT = "/sys/fs/cgroup";

/** The cgroup path of `pid` in hierarchy `controller` (v1), or its unified (v2, "0::") path. */
async function cgroupOf(pid: number, controller: string): Promise<{ path: string; v1: boolean } | undefined> {
  const lines = (await readFile(`/proc/${pid}/cgroup`, "utf8")).trim().split("\n");
  for (const l of lines) {
    const [, controllers, path] = l.split(":");
    if (controllers.split(",").includes(controller)) return { path, v1: true };
  }
  const unified = lines.find((l) => l.startsWith("0::"));
  // Hybrid hosts also list "0::" (no controllers there): only a pure v2 host uses it.
  return unified && !lines.some((l) => !l.startsWith("0::"))
    ? { path: unified.slice(3), v1: false }
    : undefined;
}

/** Every pid in `dir`'s cgroup.procs and those of the cgroups below it. */
async function procsBelow(dir: string): Promise<number[]> {
  const pids = (await readFile(join(dir, "cgroup.procs"), "utf8")).split("\n").filter(Boolean).map(Number);
  for (const e of await readdir(dir, { withFileTypes: true }))
    if (e.isDirectory()) pids.push(...(await procsBelow(join(dir, e.name))));
  return pids;
}

/**
 * The kernel's view of every process of the worker whose init process is
 * `initPid`: all processes of its freezer cgroup (v1) or of its cgroup and the
 * ones below (v2), each with its cgroup's freezer state and its scheduler state.
 */
export async function kernelFreezerStates(initPid: number): Promise<KernelProcessState[]> {
  const cg = await cgroupOf(initPid, "freezer");
  if (!cg) throw new Error(`process ${initPid} has no freezer cgroup`);
  const dir = cg.v1 ? join(ROOT, "freezer", cg.path) : join(ROOT, cg.path);
  const out: KernelProcessState[] = [];
  for (const pid of await procsBelow(dir)) {
    const own = await cgroupOf(pid, "freezer");
    let freezer: string;
    if (cg.v1) freezer = (await readFile(join(ROOT, "freezer", own!.path, "freezer.state"), "utf8")).trim();
    else {
      const events = await readFile(join(ROOT, own!.path, "cgroup.events"), "utf8");
      freezer = /^frozen 1$/m.test(events) ? "FROZEN" : "THAWED";
    }
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const memory = cg.v1 ? ((await cgroupOf(pid, "memory"))?.path ?? "") : "";
    out.push({
      pid,
      freezer,
      state: /^State:\s+(\S)/m.exec(status)?.[1] ?? "?",
      frozenState: cg.v1 ? "D" : undefined,
      memoryCgroup: memory,
    });
  }
  return out;
}
