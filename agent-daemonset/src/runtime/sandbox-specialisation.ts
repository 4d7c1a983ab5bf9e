import { stat } from "node:fs/promises";
import { join } from "node:path";
import { Containers } from "@esb/common/gen/containerd/services/containers/v1/containers_pb";
import type { ContainerdConnection } from "../containerd/containerd-connection.js";
import type { StoredImage } from "../containerd/image-service.js";
import { workerProcessEnv } from "../containerd/oci-spec.js";
import type { SandboxMounts } from "../sandbox/sandbox-mounts.js";
import type { WorkerSpec } from "./runtime.js";
import { PhaseClock, type StartPhase } from "./start-phases.js";

/** Where managed-runtime code lives in a worker. */
const TASK_ROOT = "/var/task";

/** A generic sandbox started by the containerd runtime and waiting for its function. */
export interface StandbySandbox {
  /** The spec it was started from (standby). */
  spec: WorkerSpec;
  ip: string;
  pid?: number;
  /** It has a function memory cgroup (ESB_FUNCTION_CGROUP is part of its function's environment). */
  functionCgroup: boolean;
}

/**
 * Why `spec` cannot run in `sandbox` (a different image, memory, /tmp, pids limit or
 * mounts other than the code at /var/task), or undefined when it can.
 */
export function sandboxMismatch(sandbox: WorkerSpec, spec: WorkerSpec): string | undefined {
  const fields = ["memoryMb", "platformMemoryMb", "tmpMb", "pidsLimit", "workingDir"] as const;
  if (sandbox.image.ref !== spec.image.ref)
    return `image ${spec.image.ref} is not the sandbox's ${sandbox.image.ref}`;
  for (const f of fields) {
    if ((sandbox[f] ?? 0) !== (spec[f] ?? 0)) return `${f} ${spec[f]} is not the sandbox's ${sandbox[f]}`;
  }
  if (JSON.stringify(sandbox.args ?? []) !== JSON.stringify(spec.args ?? [])) return "its command differs";
  const others = (s: WorkerSpec) =>
    JSON.stringify((s.mounts ?? []).filter((m) => m.containerPath !== TASK_ROOT));
  if (others(sandbox) !== others(spec)) return "its mounts other than /var/task differ from the sandbox's";
  return undefined;
}

/**
 * Specialises a generic sandbox for `spec`'s function: its code is mounted read-only at
 * /var/task, the container's labels become `labels` (so a restarted agent re-adopts it as
 * the function's worker), and the function's environment is written for the emulator,
 * which then starts the function (the last step: nothing runs before the code is there).
 * The caller checked that the spec fits the sandbox (see {@link sandboxMismatch}). Returns
 * how long its steps took, and the label update still in flight.
 */
export async function specialiseSandbox(
  conn: ContainerdConnection,
  mounts: SandboxMounts,
  sandbox: StandbySandbox,
  spec: WorkerSpec,
  image: StoredImage,
  labels: Record<string, string>,
): Promise<{ phases: StartPhase[]; relabelled: Promise<void> }> {
  const code = spec.mounts?.find((m) => m.containerPath === TASK_ROOT);
  const clock = new PhaseClock();
  // The labels only matter to a restarted agent (which removes a worker still labelled as a
  // sandbox, as it would any worker it cannot place): written beside the critical path.
  const relabel = conn.unary(Containers.method.update, {
    container: { id: spec.id, labels },
    updateMask: { paths: ["labels"] },
  });
  relabel.catch(() => undefined);
  if (code) await mounts.mountCode(spec.id, code.hostPath);
  clock.mark("specialise-mount");
  mounts.writeSpecialisation(spec.id, workerProcessEnv(spec, image, sandbox.functionCgroup));
  clock.mark("specialise-env");
  return { phases: clock.phases, relabelled: relabel.then(() => undefined) };
}

/** How long a generic sandbox may take to wait for its function after its task started. */
const STANDBY_TIMEOUT_MS = 60_000;
/** What a sandbox writes in its /tmp once it waits for its function (runtime/src/sandbox-standby.ts). */
const READY_FILE = ".esb-sandbox-ready";

/**
 * Resolves once the sandbox whose /tmp is the host folder `tmpHostPath` waits for its
 * specialisation (it wrote {@link READY_FILE} there: ESB's emulator does so once the runtime
 * it boots ahead is up). Rejects after {@link STANDBY_TIMEOUT_MS}, or at once when
 * `stillRunning` says the sandbox's task is gone.
 */
export async function waitForStandby(
  tmpHostPath: string,
  stillRunning: () => Promise<boolean>,
): Promise<void> {
  const until = Date.now() + STANDBY_TIMEOUT_MS;
  for (let i = 0; ; i++) {
    try {
      await stat(join(tmpHostPath, READY_FILE));
      return;
    } catch {
      // not yet
    }
    if (i % 50 === 49 && !(await stillRunning()))
      throw new Error("the sandbox exited before it waited for its function");
    if (Date.now() > until) throw new Error("the sandbox did not wait for its function within 60 s");
    await new Promise((r) => setTimeout(r, 10));
  }
}
