import { chown, mkdir, readdir, readFile, rmdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { WorkerUser } from "./worker-user.js";

/**
 * Memory (MiB) a worker gets on top of its function's memorySize for ESB's own
 * processes in it: the Runtime Interface Emulator (a Node process: ~10 MB
 * anonymous memory, the Node binary's pages it maps, ~35 MB, which the
 * function's Node then shares without being charged for them) and the buffers
 * of a 6 MB request and response it relays. Measured with
 * `make bench` (`memory-platform-peak`) and the function-memory tests.
 */
export const PLATFORM_MEMORY_MB = 96;

/**
 * Where a worker sees its function's memory cgroup (the cgroup v1 memory
 * directory made by {@link FunctionMemoryCgroups.prepare}), and the variable
 * that tells the emulator: it moves the runtime process into it.
 */
export const FUNCTION_CGROUP_PATH = "/run/esb/function-memory";
/** Environment variable naming {@link FUNCTION_CGROUP_PATH} inside a worker. */
export const FUNCTION_CGROUP_ENV = "ESB_FUNCTION_CGROUP";
/** Name of the function's child cgroup under the worker's cgroup. */
const FUNCTION_CGROUP_NAME = "function";

/** The function's memory cgroup of one worker, made on the host. */
export interface FunctionCgroup {
  /** Host path of the cgroup's directory: bind-mount it (read-write) at {@link FUNCTION_CGROUP_PATH}. */
  hostDir: string;
}

/**
 * The memory cgroups of workers' functions on a cgroup v1 host. A worker's
 * cgroup (`<parent>/<id>`) is limited to memorySize + {@link PLATFORM_MEMORY_MB}
 * by the engine; inside it, `function` is limited to memorySize (memory and
 * memory+swap, so no swapping) and the worker's user may write only its
 * `cgroup.procs`/`tasks`: the emulator moves the runtime process (and so
 * everything the function starts) into it before the runtime runs. A process
 * can only move into it (it is the more limited one: the worker's own cgroup
 * files stay root-owned), so the function cannot take more than memorySize,
 * and ESB's processes do not eat into it.
 *
 * On a host without cgroup v1's memory hierarchy (cgroup v2), `prepare`
 * returns undefined and the worker's whole cgroup is the limit (see
 * docs/worker-memory.md).
 */
export class FunctionMemoryCgroups {
  /** @param root where the cgroup hierarchies are mounted (default /sys/fs/cgroup). */
  constructor(private readonly root = "/sys/fs/cgroup") {}

  /** The memory hierarchy of cgroup v1, or undefined (cgroup v2 or no memory controller). */
  async memoryHierarchy(): Promise<string | undefined> {
    const dir = join(this.root, "memory");
    try {
      await stat(join(dir, "memory.limit_in_bytes"));
      return dir;
    } catch {
      return undefined;
    }
  }

  /**
   * Makes `<workerCgroup>/function` (absolute in the hierarchy, e.g. `/esb/<id>`) with
   * a limit of `memoryMb`, its process list writable by `user`, and limits
   * `workerCgroup` to `memoryMb + platformMb` (the engine may write the same limit
   * again, or, as Docker engines do, put the container in a cgroup below it). Call
   * before the worker's processes start. Undefined when the host has no cgroup v1
   * memory hierarchy.
   */
  async prepare(
    workerCgroup: string,
    memoryMb: number,
    platformMb: number,
    user: WorkerUser,
  ): Promise<FunctionCgroup | undefined> {
    const hierarchy = await this.memoryHierarchy();
    if (!hierarchy) return undefined;
    const worker = join(hierarchy, workerCgroup);
    const dir = join(worker, FUNCTION_CGROUP_NAME);
    await mkdir(dir, { recursive: true });
    await setLimit(worker, (memoryMb + platformMb) * 1024 * 1024);
    await setLimit(dir, memoryMb * 1024 * 1024);
    for (const f of ["cgroup.procs", "tasks"]) await chown(join(dir, f), user.uid, user.gid);
    return { hostDir: dir };
  }

  /**
   * True when the kernel OOM-killed a process in `<workerCgroup>/function` (the
   * function's runtime ran out of its memorySize). False when there is no such cgroup.
   */
  async oomKilled(workerCgroup: string): Promise<boolean> {
    const hierarchy = await this.memoryHierarchy();
    if (!hierarchy) return false;
    try {
      const text = await readFile(
        join(hierarchy, workerCgroup, FUNCTION_CGROUP_NAME, "memory.oom_control"),
        "utf8",
      );
      return Number(/^oom_kill (\d+)$/m.exec(text)?.[1] ?? 0) > 0;
    } catch {
      return false;
    }
  }

  /**
   * Removes `workerCgroup` and every cgroup under it in every hierarchy (v1 and
   * the hybrid v2 one), deepest first (the engine leaves the function's child, and Docker engines their own
   * parent). Only empty cgroups can go: call after the worker's processes are gone.
   * Missing ones are skipped; other failures throw.
   */
  async remove(workerCgroup: string): Promise<void> {
    let hierarchies: string[];
    try {
      hierarchies = (await readdir(this.root, { withFileTypes: true }))
        .filter((d) => d.isDirectory())
        .map((d) => join(this.root, d.name));
    } catch {
      return;
    }
    for (const h of hierarchies) await removeTree(join(h, workerCgroup));
  }
}

/** Memory and memory+swap (when swap is accounted) to `bytes`: no swapping past the limit. */
async function setLimit(dir: string, bytes: number): Promise<void> {
  // Memory first: memory+swap may never be below it (both start unlimited in a new cgroup).
  await writeFile(join(dir, "memory.limit_in_bytes"), String(bytes));
  await writeIfPresent(join(dir, "memory.memsw.limit_in_bytes"), String(bytes));
}

async function writeIfPresent(file: string, value: string): Promise<void> {
  try {
    await writeFile(file, value);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}

async function removeTree(dir: string): Promise<void> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  for (const e of entries) if (e.isDirectory()) await removeTree(join(dir, e.name));
  try {
    await rmdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}
