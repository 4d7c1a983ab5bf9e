import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { connect, createServer } from "node:net";

/** How a {@link DaemonProcess} is started and when it counts as up. */
export interface DaemonSpec {
  /** Name in messages ("agent", "gateway", "containerd"). */
  name: string;
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  /** File both stdout and stderr are appended to (kept across restarts). */
  logFile: string;
  /** Resolves true once the daemon serves (polled every 100 ms). */
  ready: () => Promise<boolean>;
  /** Longest wait for {@link DaemonSpec.ready} after a start (default 60 s). */
  readyTimeoutMs?: number;
}

/**
 * One real daemon in its own process (and process group, so the suite's
 * Ctrl-C does not reach it before the suite's own cleanup), which the chaos
 * suite kills with a signal of its choice and starts again with the same
 * command, environment and log file. Only the process it started is ever
 * signalled, by pid.
 */
export class DaemonProcess {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();

  constructor(private readonly spec: DaemonSpec) {}

  /** The running process's pid (undefined while stopped). */
  get pid(): number | undefined {
    return this.child && this.child.exitCode === null && this.child.signalCode === null
      ? this.child.pid
      : undefined;
  }

  /** Starts the daemon; resolves once it is ready, throws (naming the log) when it exits or times out first. */
  async start(): Promise<void> {
    if (this.pid !== undefined) throw new Error(`${this.spec.name} is already running`);
    const fd = openSync(this.spec.logFile, "a");
    const child = spawn(this.spec.command, this.spec.args, {
      env: this.spec.env ?? process.env,
      stdio: ["ignore", fd, fd],
      detached: true,
    });
    closeSync(fd);
    this.child = child;
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
    const failed = new Promise<never>((_, reject) => {
      child.once("error", (err) => reject(new Error(`cannot start ${this.spec.name}: ${err.message}`)));
      child.once("exit", (code, signal) =>
        reject(
          new Error(
            `${this.spec.name} exited (${signal ?? `code ${code}`}) before it was ready; see ${this.spec.logFile}`,
          ),
        ),
      );
    });
    failed.catch(() => undefined);
    const timeoutMs = this.spec.readyTimeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs;
    const poll = async (): Promise<void> => {
      while (!(await this.spec.ready().catch(() => false))) {
        if (child.exitCode !== null || child.signalCode !== null) return failed;
        if (Date.now() > deadline)
          throw new Error(`${this.spec.name} not ready within ${timeoutMs} ms; see ${this.spec.logFile}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    await Promise.race([poll(), failed]);
  }

  /**
   * Sends `signal` to the daemon and resolves when it has exited, with how
   * long that took; after `graceMs` without exiting it gets SIGKILL
   * (`escalated`). Resolves `{ ms: 0 }` when it was not running.
   */
  async kill(signal: NodeJS.Signals, graceMs = 15_000): Promise<{ ms: number; escalated: boolean }> {
    const child = this.child;
    if (!child || this.pid === undefined) return { ms: 0, escalated: false };
    const t = performance.now();
    let escalated = false;
    child.kill(signal);
    const timer = setTimeout(() => {
      escalated = true;
      child.kill("SIGKILL");
    }, graceMs);
    await this.exited;
    clearTimeout(timer);
    return { ms: Math.round(performance.now() - t), escalated };
  }

  /** {@link kill} then {@link start}: what a supervisor (kubelet, systemd) does after a crash. */
  async restart(signal: NodeJS.Signals): Promise<void> {
    await this.kill(signal);
    await this.start();
  }
}

/** A free TCP port on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolvePort(port));
    });
  });
}

/** True when GET `url` answers 2xx within 2 s. */
export async function httpOk(url: string): Promise<boolean> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  await res.arrayBuffer();
  return res.ok;
}

/** True when the Unix socket `path` accepts a connection. */
export function socketAccepts(path: string): Promise<boolean> {
  return new Promise((resolveOk) => {
    const s = connect(path);
    s.once("connect", () => {
      s.destroy();
      resolveOk(true);
    });
    s.once("error", () => resolveOk(false));
  });
}
