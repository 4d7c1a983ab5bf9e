import type { Logger } from "@esb/common";
import { Containers } from "@esb/common/gen/containerd/services/containers/v1/containers_pb";
import { Tasks } from "@esb/common/gen/containerd/services/tasks/v1/tasks_pb";
import { Status } from "@esb/common/gen/containerd/types/task/task_pb";
import { isNotFound, type ContainerdConnection } from "../containerd/containerd-connection.js";

const SIGKILL = 9;
/** How long a removal waits for a killed task to exit. */
const KILL_WAIT_MS = 15_000;

/**
 * A worker removal that did not finish: the task or container is still there
 * (the message names the step). Its network is not torn down; removing again retries.
 */
export class WorkerRemovalError extends Error {
  override name = "WorkerRemovalError";
}

/** The task's status as containerd reports it, or undefined when the container has no task. */
export async function containerdTaskStatus(
  conn: ContainerdConnection,
  id: string,
): Promise<Status | undefined> {
  try {
    const { process } = await conn.unary(Tasks.method.get, { containerId: id });
    return process?.status ?? Status.UNKNOWN;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/**
 * Kills worker `id`'s task (every process), waits for it to exit, deletes it and
 * the container. A worker frozen by the agent (containerd reports it running)
 * cannot act on SIGKILL until thawed: `thaw` is called between the kill and the
 * wait, so the killed processes never run the function's code again. A task
 * containerd itself paused (an agent before the freezer was its own) is resumed
 * through containerd instead. Only "already gone" (NotFound) is ignored: any
 * other failure throws {@link WorkerRemovalError}.
 */
export async function removeTaskAndContainer(
  conn: ContainerdConnection,
  id: string,
  thaw: () => void,
  log: Logger,
): Promise<void> {
  const step = (name: string, call: () => Promise<unknown>) => removalStep(id, name, call, log);
  const status = await containerdTaskStatus(conn, id);
  if (status !== undefined && status !== Status.STOPPED) {
    await step("kill", () => conn.unary(Tasks.method.kill, { containerId: id, signal: SIGKILL, all: true }));
    thaw();
    // runc often thaws a containerd-paused task itself to kill it, so "not paused" or
    // "stopped" answers are expected: the wait below decides.
    if (status === Status.PAUSED || status === Status.PAUSING) {
      await conn
        .unary(Tasks.method.resume, { containerId: id })
        .catch((err: unknown) =>
          log.debug({ id, err: (err as Error).message }, "containerd resume before removal not needed"),
        );
    }
    await step("wait for exit", () =>
      conn.unary(Tasks.method.wait, { containerId: id }, { timeoutMs: KILL_WAIT_MS }),
    );
  }
  if (status !== undefined)
    await step("task delete", () => conn.unary(Tasks.method.delete, { containerId: id }));
  await step("container delete", () => conn.unary(Containers.method.delete, { id }));
}

/** One step of a removal: "already gone" (NotFound) is done; any other error ends the removal. */
async function removalStep(
  id: string,
  step: string,
  call: () => Promise<unknown>,
  log: Logger,
): Promise<void> {
  try {
    await call();
  } catch (err) {
    if (isNotFound(err)) {
      log.debug({ id, step }, "already gone during worker removal");
      return;
    }
    throw new WorkerRemovalError(`worker ${id}: ${step} failed: ${(err as Error).message}`, { cause: err });
  }
}
