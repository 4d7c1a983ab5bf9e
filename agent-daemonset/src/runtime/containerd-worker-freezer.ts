import type { Logger } from "@esb/common";
import { Tasks } from "@esb/common/gen/containerd/services/tasks/v1/tasks_pb";
import { Status } from "@esb/common/gen/containerd/types/task/task_pb";
import type { ContainerdConnection } from "../containerd/containerd-connection.js";
import { CgroupFreezer, type FreezerKind, type FreezerState } from "../sandbox/cgroup-freezer.js";
import type { WorkerStatus } from "./runtime.js";

/**
 * Pause and resume of containerd workers, owned by the agent end to end: the
 * worker's cgroup freezer is written directly ({@link CgroupFreezer}) instead of
 * containerd's `Tasks.Pause/Resume`, which exec `runc` (~4.5 ms each exec) on
 * the thaw path. containerd (its shim) then reports a frozen task as running,
 * and mixing the two breaks runc (it refuses to resume a task whose cgroup is
 * already thawed), so every pause and thaw of ESB's workers goes through here,
 * and a worker's status combines containerd's task status with the kernel's
 * freezer state, which is what counts.
 */
export class ContainerdWorkerFreezer {
  private readonly freezer: CgroupFreezer;

  /**
   * @param cgroupOf the worker's cgroup path in the hierarchies (e.g. `/esb/<id>`).
   * @param cgroupRoot where the cgroup hierarchies are mounted (default /sys/fs/cgroup).
   */
  constructor(
    private readonly conn: ContainerdConnection,
    private readonly cgroupOf: (id: string) => string,
    private readonly log: Logger,
    cgroupRoot?: string,
  ) {
    this.freezer = new CgroupFreezer(cgroupRoot);
  }

  /** Finds the host's freezer interface; call before the first thaw. */
  start(): Promise<FreezerKind> {
    return this.freezer.kind();
  }

  /** Freezes worker `id` and resolves once the kernel reports every process of it frozen. */
  pause(id: string): Promise<void> {
    return inWorkerTerms(id, () => this.freezer.freeze(this.cgroupOf(id)));
  }

  /** Thaws worker `id`: one write to the kernel's freezer, no containerd round trip. */
  resume(id: string): Promise<void> {
    return inWorkerTerms(id, () => this.freezer.thaw(this.cgroupOf(id)));
  }

  /** Thaws worker `id` if it still has a cgroup (before a kill: a frozen task cannot act on SIGKILL). */
  thawIfPresent(id: string): void {
    try {
      this.freezer.thaw(this.cgroupOf(id));
    } catch (err) {
      // No freezer cgroup: runc removed it with the exited task.
      this.log.debug({ id, err: (err as Error).message }, "thaw before removal not needed");
    }
  }

  /**
   * The worker's status from containerd's task status and the kernel's freezer:
   * a task containerd reports running is paused when its cgroup is frozen (or freezing).
   */
  async status(id: string, task: Status): Promise<WorkerStatus> {
    switch (task) {
      case Status.RUNNING: {
        const state: FreezerState | undefined = await this.freezer.state(this.cgroupOf(id));
        return state === "frozen" || state === "freezing" ? "paused" : "running";
      }
      case Status.PAUSED:
      case Status.PAUSING:
        return "paused";
      case Status.STOPPED:
      case Status.CREATED:
        return "stopped";
      default:
        return "unknown";
    }
  }

  /**
   * A task that containerd itself paused (an agent from before the freezer was
   * its own, or `ctr tasks pause`): resumed through containerd, so that the shim's
   * state is running again, then frozen by cgroup as the agent's own. Failures are
   * logged; the worker then stays as it is.
   */
  async takeOver(id: string): Promise<void> {
    try {
      await this.conn.unary(Tasks.method.resume, { containerId: id });
      await this.freezer.freeze(this.cgroupOf(id));
      this.log.info(
        { id },
        "worker paused by containerd taken over: frozen by the agent's cgroup freezer now",
      );
    } catch (err) {
      this.log.warn({ id, err: (err as Error).message }, "could not take over a worker paused by containerd");
    }
  }
}

/** Runs a freezer operation; a missing cgroup (no task) is said in the worker's terms. */
async function inWorkerTerms(id: string, fn: () => Promise<void> | void): Promise<void> {
  try {
    await fn();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT")
      throw new Error(`worker ${id} has no running task`, { cause: err });
    throw err;
  }
}
