import { createHash } from "node:crypto";
import { WORKER_LABELS, type WorkerSpec } from "../runtime/runtime.js";
import type { SandboxTemplate } from "./sandbox-pool.js";

/** Label of a generic sandbox's container: its template key (a restarted agent removes such containers). */
export const SANDBOX_LABEL = "esb.dev/sandbox";

/** Where managed-runtime code is mounted in a worker. */
const TASK_ROOT = "/var/task";

/**
 * The sandbox template of a function's workers, from the spec of one of them, or
 * undefined when such workers cannot come from a generic sandbox: only workers
 * with ESB's emulator (`platformMemoryMb` > 0: managed runtimes) and the image's
 * own command. Sandboxes of one template differ in nothing a function can tell
 * before its specialisation; the key covers what is fixed at container start
 * (image, memory, /tmp, pids, working folder, mounts other than the code, and the
 * runtime booted ahead, `preBoot`: e.g. `/var/runtime/bootstrap` for Node runtimes).
 */
export function sandboxTemplateOf(fn: WorkerSpec, preBoot?: string): SandboxTemplate | undefined {
  if (!fn.platformMemoryMb || fn.args?.length) return undefined;
  const mounts = (fn.mounts ?? []).filter((m) => m.containerPath !== TASK_ROOT);
  const fixed = {
    image: fn.image.ref,
    digest: fn.image.digest,
    memoryMb: fn.memoryMb,
    platformMemoryMb: fn.platformMemoryMb,
    tmpMb: fn.tmpMb,
    pidsLimit: fn.pidsLimit,
    workingDir: fn.workingDir,
    mounts,
    preBoot: preBoot ?? "",
  };
  const key = createHash("sha256").update(JSON.stringify(fixed)).digest("hex").slice(0, 16);
  const env: Record<string, string> = {
    TZ: ":UTC",
    // The pre-booted Node runtime sizes its heap from it (the key holds the memory).
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(fn.memoryMb),
    LAMBDA_TASK_ROOT: TASK_ROOT,
    LAMBDA_RUNTIME_DIR: "/var/runtime",
    AWS_LAMBDA_RUNTIME_API: fn.env.AWS_LAMBDA_RUNTIME_API ?? "127.0.0.1:9001",
  };
  if (preBoot) env.ESB_SANDBOX_PREBOOT = preBoot;
  return {
    key,
    spec: (id) => ({
      id,
      image: fn.image,
      labels: {
        [WORKER_LABELS.owner]: fn.labels[WORKER_LABELS.owner] ?? "",
        [WORKER_LABELS.role]: "worker",
        [SANDBOX_LABEL]: key,
      },
      env,
      workingDir: fn.workingDir,
      memoryMb: fn.memoryMb,
      platformMemoryMb: fn.platformMemoryMb,
      tmpMb: fn.tmpMb,
      mounts,
      pidsLimit: fn.pidsLimit,
      standby: true,
    }),
  };
}
