import { connect } from "node:net";

/** A worker did not open its invoke port in time (or exited first). */
export class WorkerNotReadyError extends Error {
  override name = "WorkerNotReadyError";
}

/**
 * Resolves once `host:port` accepts a TCP connection: a started task is not yet
 * a worker until its Runtime Interface Emulator listens on :8080, and handing
 * it out earlier gives the caller ECONNREFUSED. Polls every few milliseconds
 * (cold start is on the invocation's critical path); gives up after
 * `timeoutMs`, or as soon as `stillStarting()` turns false (the worker exited).
 */
export async function waitForWorkerPort(
  host: string,
  port: number,
  timeoutMs: number,
  stillStarting: () => boolean = () => true,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  let delay = 2;
  for (;;) {
    if (await canConnect(host, port)) return;
    if (!stillStarting()) throw new WorkerNotReadyError(`worker at ${host}:${port} exited before listening`);
    if (Date.now() > until) {
      throw new WorkerNotReadyError(`worker at ${host}:${port} did not listen within ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, delay));
    // At most 5 ms apart: a specialised sandbox listens a few ms after it is told its function.
    delay = Math.min(delay * 2, 5);
  }
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}
