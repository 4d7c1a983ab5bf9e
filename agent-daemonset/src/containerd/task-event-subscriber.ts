import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { TaskExitSchema, TaskOOMSchema } from "@esb/common/gen/containerd/events/task_pb";
import { Events } from "@esb/common/gen/containerd/services/events/v1/events_pb";
import type { Logger } from "@esb/common";
import type { ContainerdConnection } from "./containerd-connection.js";

/** A task event ESB reacts to. */
export type TaskEvent =
  | { kind: "exit"; containerId: string; execId: string; exitStatus: number; at: Date }
  | { kind: "oom"; containerId: string };

const RETRY_MIN_MS = 200;
const RETRY_MAX_MS = 5000;

/**
 * Subscribes to containerd's `/tasks/exit` and `/tasks/oom` events of one
 * namespace and hands them to a callback. When the stream breaks (containerd
 * restarted), it subscribes again with backoff until {@link stop}.
 */
export class TaskEventSubscriber {
  private stream?: { cancel(): void };
  private stopped = false;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly conn: ContainerdConnection,
    private readonly onEvent: (e: TaskEvent) => void,
    private readonly log: Logger,
    /** Called after each (re)subscription, e.g. to reconcile exits missed while disconnected. */
    private readonly onSubscribed: () => void = () => undefined,
  ) {}

  /** Starts the subscription loop. */
  start(): void {
    void this.loop(RETRY_MIN_MS);
  }

  /** Ends the subscription. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.stream?.cancel();
  }

  private async loop(delay: number): Promise<void> {
    if (this.stopped) return;
    const ns = this.conn.namespace;
    const stream = this.conn.serverStream(Events.method.subscribe, {
      filters: [`namespace==${ns},topic=="/tasks/exit"`, `namespace==${ns},topic=="/tasks/oom"`],
    });
    this.stream = stream;
    let received = false;
    try {
      // The first event proves the subscription; announce it right away too so callers can reconcile.
      queueMicrotask(() => this.onSubscribed());
      for await (const env of stream) {
        received = true;
        const any = env.event;
        if (!any) continue;
        const type = any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1);
        if (type === "containerd.events.TaskExit") {
          const e = fromBinary(TaskExitSchema, any.value);
          this.onEvent({
            kind: "exit",
            containerId: e.containerId,
            execId: e.id,
            exitStatus: e.exitStatus,
            at: e.exitedAt ? timestampDate(e.exitedAt) : new Date(),
          });
        } else if (type === "containerd.events.TaskOOM") {
          this.onEvent({ kind: "oom", containerId: fromBinary(TaskOOMSchema, any.value).containerId });
        }
      }
    } catch (err) {
      if (!this.stopped)
        this.log.warn({ err: (err as Error).message }, "containerd event stream broke; resubscribing");
    }
    if (this.stopped) return;
    const next = received ? RETRY_MIN_MS : Math.min(delay * 2, RETRY_MAX_MS);
    this.timer = setTimeout(() => void this.loop(next), delay);
  }
}
