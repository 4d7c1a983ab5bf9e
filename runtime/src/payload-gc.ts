// Garbage collection after large payloads, in the emulator and the Node runtime client.
// A 6 MB invocation leaves several dead copies of its payload (socket chunks, the joined
// Buffer, the JSON string, the serialised result); V8 collects them only when its heap or
// external memory grows far enough, which in a 128 MB function (and in the emulator's
// share of the worker) is after the kernel has already OOM-killed the process. Collecting
// once, right after such an invocation, keeps both flat.
//
// Runs INSIDE the worker image: Node built-ins only.
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/** Payloads (request + response bytes) from which a collection follows the invocation. */
export const LARGE_PAYLOAD_BYTES = 1024 * 1024;

let gc: (() => void) | undefined;

/** V8's `gc()`, exposed once without a command-line flag (so NODE_OPTIONS stays the function's). */
function collector(): () => void {
  if (!gc) {
    setFlagsFromString("--expose-gc");
    gc = runInNewContext("gc") as () => void;
  }
  return gc;
}

/** Share of the memory limit by which the resident memory may grow in one invocation before a collection follows. */
export const GROWTH_SHARE = 0.25;

/**
 * Runs a full garbage collection when `bytes` (what an invocation moved) is at least
 * {@link LARGE_PAYLOAD_BYTES}, or when the process' resident memory grew during the
 * invocation by more than {@link GROWTH_SHARE} of `limitMb` (a function that allocated much
 * and let it go would otherwise meet the kernel's limit on a later invocation before V8
 * collects). A function that keeps what it holds does not grow, so it is not collected each
 * time. Call once the invocation's buffers are no longer referenced.
 */
export function collectAfterLargePayload(bytes: number, grewBytes = 0, limitMb?: number): void {
  const grewMuch = limitMb !== undefined && grewBytes > limitMb * GROWTH_SHARE * 1024 * 1024;
  if (bytes >= LARGE_PAYLOAD_BYTES || grewMuch) collector()();
}
