import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "@esb/common";
import { Tasks } from "@esb/common/gen/containerd/services/tasks/v1/tasks_pb";
import { Status } from "@esb/common/gen/containerd/types/task/task_pb";
import type { ContainerdConnection } from "../containerd/containerd-connection.js";
import { TaskEventSubscriber, type TaskEvent } from "../containerd/task-event-subscriber.js";
import type { WorkerExit } from "./runtime.js";

/**
 * Turns containerd's task events into {@link WorkerExit}s of the workers a
 * {@link ContainerdRuntime} watches: only the init process's exit ends a
 * worker, OOM kills come from the `/tasks/oom` event or (when that was missed
 * or late) the worker's memory cgroup, and after the event stream reconnects
 * every watched worker's task is looked at for exits missed meanwhile.
 * Workers are watched from start/adoption until removal (a removal's own kill
 * is not reported).
 */
export class ContainerdExitReporter {
  private readonly listeners = new Set<(e: WorkerExit) => void>();
  /** Workers whose exits are reported. */
  private readonly watched = new Set<string>();
  private readonly oomKilled = new Set<string>();
  private readonly events: TaskEventSubscriber;
  private started = false;

  /**
   * @param cgroupOf the worker's cgroup path in the hierarchies (e.g. `/esb/<id>`).
   */
  constructor(
    private readonly conn: ContainerdConnection,
    private readonly cgroupOf: (id: string) => string,
    private readonly log: Logger,
  ) {
    let subscriptions = 0;
    this.events = new TaskEventSubscriber(
      conn,
      (e) => void this.onTaskEvent(e),
      log,
      () => {
        // After a reconnect, exits may have been missed: look at every worker's task.
        if (subscriptions++ > 0) void this.reconcileExits();
      },
    );
  }

  /** Subscribes to containerd's events (once). */
  start(): void {
    if (!this.started) this.events.start();
    this.started = true;
  }

  stop(): void {
    this.events.stop();
  }

  /** Reports worker `id`'s exit from now on. */
  watch(id: string): void {
    this.watched.add(id);
  }

  /** Stops reporting worker `id` (it is being removed on purpose: its kill is no crash). */
  unwatch(id: string): void {
    this.watched.delete(id);
  }

  /** Forgets what is known of a removed worker. */
  forget(id: string): void {
    this.watched.delete(id);
    this.oomKilled.delete(id);
  }

  onExit(listener: (exit: WorkerExit) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private async onTaskEvent(e: TaskEvent): Promise<void> {
    if (e.kind === "oom") {
      this.oomKilled.add(e.containerId);
      return;
    }
    // Only the init process's exit ends a worker.
    if (e.execId !== e.containerId || !this.watched.has(e.containerId)) return;
    this.watched.delete(e.containerId);
    const oomKilled = this.oomKilled.has(e.containerId) || (await this.cgroupOomKilled(e.containerId));
    this.emit({ id: e.containerId, exitCode: e.exitStatus, oomKilled, at: e.at });
  }

  private emit(exit: WorkerExit): void {
    this.log.info(exit, "worker exited");
    for (const l of this.listeners) {
      try {
        l(exit);
      } catch (err) {
        this.log.error({ err: (err as Error).message }, "worker exit listener failed");
      }
    }
  }

  /** Reports workers whose task stopped while the event stream was down. */
  private async reconcileExits(): Promise<void> {
    for (const id of [...this.watched]) {
      try {
        const { process } = await this.conn.unary(Tasks.method.get, { containerId: id });
        if (process?.status === Status.STOPPED && this.watched.delete(id)) {
          const oomKilled = this.oomKilled.has(id) || (await this.cgroupOomKilled(id));
          this.emit({ id, exitCode: process.exitStatus, oomKilled, at: new Date() });
        }
      } catch (err) {
        this.log.debug({ id, err: (err as Error).message }, "could not reconcile worker after reconnect");
      }
    }
  }

  /** Reads the worker's memory cgroup for OOM kills (covers a missed or late OOM event). */
  private async cgroupOomKilled(id: string): Promise<boolean> {
    const cg = this.cgroupOf(id);
    const candidates = [
      [join("/sys/fs/cgroup/memory", cg, "memory.oom_control"), /^oom_kill (\d+)/m],
      [join("/sys/fs/cgroup", cg, "memory.events"), /^oom_kill (\d+)/m],
    ] as const;
    for (const [file, re] of candidates) {
      try {
        const m = re.exec(await readFile(file, "utf8"));
        if (m) return Number(m[1]) > 0;
      } catch {
        // not this cgroup layout
      }
    }
    return false;
  }
}
