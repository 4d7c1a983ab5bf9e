import type { Logger } from "@esb/common";
import type { WorkerSpec } from "../runtime/runtime.js";
import { FUNCTION_CGROUP_ENV, FUNCTION_CGROUP_PATH, FunctionMemoryCgroups } from "./function-memory.js";
import { WorkerTmpFolders } from "./worker-tmp.js";
import { workerUser } from "./worker-user.js";

/** What a worker gets from the host before its container is made. */
export interface PreparedWorkerResources {
  /** Host folder to bind-mount read-write at /tmp. */
  tmpHostPath: string;
  /** Host directory of the function's memory cgroup to mount for the emulator, when the worker has one. */
  functionCgroupDir?: string;
}

/**
 * The host-side parts of a worker that every `Runtime` prepares the same way
 * before the engine creates the container, and removes with it: the /tmp folder
 * on disk ({@link WorkerTmpFolders}) and, for workers with
 * `platformMemoryMb`, the function's memory cgroup under the worker's cgroup
 * ({@link FunctionMemoryCgroups}).
 */
export class WorkerHostResources {
  private readonly tmp: WorkerTmpFolders;
  private readonly cgroups: FunctionMemoryCgroups;
  /** The /tmp folders' file system was looked at (once: it does not change under a running agent). */
  private checked = false;

  /**
   * @param tmpDir folder of the per-worker /tmp folders (on disk).
   * @param log where a /tmp folder on tmpfs is reported once.
   * @param cgroupRoot where the cgroup hierarchies are mounted (default /sys/fs/cgroup).
   */
  constructor(
    tmpDir: string,
    private readonly log: Logger,
    cgroupRoot?: string,
  ) {
    this.tmp = new WorkerTmpFolders(tmpDir);
    this.cgroups = new FunctionMemoryCgroups(cgroupRoot);
  }

  /**
   * Makes worker `spec.id`'s /tmp folder and, when `spec.platformMemoryMb` is set, its
   * function's memory cgroup at `<workerCgroup>/function` (workerCgroup: the worker's
   * cgroup path in the hierarchy, e.g. `/esb/<id>`). On failure what was made is removed.
   */
  async prepare(spec: WorkerSpec, workerCgroup: string): Promise<PreparedWorkerResources> {
    const user = workerUser(spec.image.config.user);
    if (!this.checked) {
      this.checked = true;
      if (await this.tmp.onTmpfs())
        this.log.warn(
          { dir: this.tmp.dir },
          "worker /tmp folders are on a tmpfs: files in /tmp are charged to the workers' memory",
        );
    }
    const tmpHostPath = await this.tmp.create(spec.id, user);
    try {
      if (!spec.platformMemoryMb) return { tmpHostPath };
      const cgroup = await this.cgroups.prepare(workerCgroup, spec.memoryMb, spec.platformMemoryMb, user);
      return { tmpHostPath, functionCgroupDir: cgroup?.hostDir };
    } catch (err) {
      await this.release(spec.id, workerCgroup).catch(() => undefined);
      throw err;
    }
  }

  /** True when the kernel OOM-killed the function of the worker in `workerCgroup` (see {@link FunctionMemoryCgroups.oomKilled}). */
  functionOomKilled(workerCgroup: string): Promise<boolean> {
    return this.cgroups.oomKilled(workerCgroup);
  }

  /** Removes worker `id`'s /tmp folder and what is left of its cgroup tree. Call once its processes are gone. */
  async release(id: string, workerCgroup: string): Promise<void> {
    await this.tmp.remove(id);
    await this.cgroups.remove(workerCgroup);
  }
}

/** A worker's memory, /tmp and function cgroup as the Docker API spells them. */
export interface DockerWorkerResources {
  /** `HostConfig` fields: Memory, MemorySwap, Binds (/tmp, function cgroup) and CgroupParent. */
  hostConfig: { Memory: number; MemorySwap: number; Binds: string[]; CgroupParent?: string };
  /** Variables to add to the worker's environment. */
  env: Record<string, string>;
}

/**
 * The Docker spelling of {@link PreparedWorkerResources}: /tmp bind-mounted from
 * its folder; with a function cgroup, the container is made under `workerCgroup`
 * (which {@link WorkerHostResources.prepare} limited to memorySize + the platform's
 * allowance, an engine with the `cgroupfs` driver creates the container's cgroup
 * below it) with the same limit, and the function's cgroup is mounted for the
 * emulator. Without one the container is limited to memorySize.
 */
export function dockerWorkerResources(
  spec: WorkerSpec,
  host: PreparedWorkerResources,
  workerCgroup: string,
): DockerWorkerResources {
  const fn = host.functionCgroupDir;
  const bytes = (spec.memoryMb + (fn ? (spec.platformMemoryMb ?? 0) : 0)) * 1024 * 1024;
  return {
    hostConfig: {
      Memory: bytes,
      MemorySwap: bytes,
      Binds: [`${host.tmpHostPath}:/tmp:rw`, ...(fn ? [`${fn}:${FUNCTION_CGROUP_PATH}:rw,noexec`] : [])],
      ...(fn ? { CgroupParent: workerCgroup } : {}),
    },
    env: fn ? { [FUNCTION_CGROUP_ENV]: FUNCTION_CGROUP_PATH } : {},
  };
}
