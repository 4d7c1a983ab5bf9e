import type { WorkerHandle } from "../runtime/runtime.js";

/** Path of the ESB emulator's init status (runtime/src/init-status.ts; kept in step with it). */
const INIT_STATUS_PATH = "/esb/init";

/** A provisioned worker whose function could not initialise. */
export class WorkerInitError extends Error {
  override name = "WorkerInitError";
  constructor(
    /** `errorType: errorMessage`, as the controller reports it. */
    readonly initError: string,
  ) {
    super(`the function did not initialise: ${initError}`);
  }
}

/**
 * Asks a started worker's ESB emulator how its runtime's init went, waiting up to `waitMs`
 * (AWS's init limit is 10 s). Resolves when it initialised, or when that cannot be told
 * (still initialising after the wait, an emulator without the endpoint, no answer: a worker
 * is not held back by the check); throws {@link WorkerInitError} when init failed.
 */
export async function checkWorkerInit(handle: WorkerHandle, waitMs = 10_000): Promise<void> {
  let state: { state?: string; errorType?: string; errorMessage?: string };
  try {
    const res = await fetch(
      `http://${handle.ip}:${handle.port || 8080}${INIT_STATUS_PATH}?waitMs=${waitMs}`,
      {
        signal: AbortSignal.timeout(waitMs + 5_000),
      },
    );
    if (res.status !== 200) return;
    state = (await res.json()) as typeof state;
  } catch {
    return;
  }
  if (state.state === "failed")
    throw new WorkerInitError(`${state.errorType ?? "Runtime.Unknown"}: ${state.errorMessage ?? ""}`.trim());
}
