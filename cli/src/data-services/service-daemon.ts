import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { connect, createServer } from "node:net";

/** How a {@link ServiceDaemon} is started and when it counts as up. */
export interface ServiceDaemonSpec {
  /** Name in messages ("versitygw", "dynoxide"). */
  name: string;
  /** Executable (absolute, or found on PATH). */
  command: string;
  args: string[];
  /** The daemon's whole environment (secrets go here, never into args: /proc/PID/cmdline is world-readable). */
  env: NodeJS.ProcessEnv;
  /** stdout and stderr are appended here. */
  logFile: string;
  /** The loopback port it serves on: up once a TCP connection to 127.0.0.1:port succeeds. */
  port: number;
  /** Longest wait for the port (default 30 s). */
  readyTimeoutMs?: number;
}

/**
 * One third-party server that `esb up` runs beside the functions, in its own
 * process group (a Ctrl-C of `esb up` reaches `esb up` only, which then stops
 * it in order). Only the process it started is ever signalled, by pid.
 */
export class ServiceDaemon {
  private child: ChildProcess | undefined;
  /** Milliseconds from spawn to the first accepted connection of the last start. */
  startMs = 0;

  constructor(readonly spec: ServiceDaemonSpec) {}

  /** The running process's pid, or undefined. */
  get pid(): number | undefined {
    const c = this.child;
    return c && c.exitCode === null && c.signalCode === null ? c.pid : undefined;
  }

  /** Starts the daemon; resolves once its port accepts connections, throws (naming its log) when it exits first or times out. */
  async start(): Promise<void> {
    const { name, logFile } = this.spec;
    const t = Date.now();
    const fd = openSync(logFile, "a", 0o600);
    const child = spawn(this.spec.command, this.spec.args, {
      env: this.spec.env,
      stdio: ["ignore", fd, fd],
      detached: true,
    });
    closeSync(fd);
    this.child = child;
    const failed = new Promise<never>((_, reject) => {
      child.once("error", (err) =>
        reject(new Error(`cannot start ${name} (${err.message}); build it with hack/build-${name}.sh`)),
      );
      child.once("exit", (code, signal) =>
        reject(new Error(`${name} exited (${signal ?? `code ${code}`}) before it was ready; see ${logFile}`)),
      );
    });
    const timeoutMs = this.spec.readyTimeoutMs ?? 30_000;
    try {
      await Promise.race([waitForPort(this.spec.port, timeoutMs, name), failed]);
    } catch (err) {
      await this.stop();
      throw err;
    }
    failed.catch(() => undefined); // a later exit is seen by pid, not as an unhandled rejection
    this.startMs = Date.now() - t;
  }

  /** Resident memory of the daemon in KiB (from /proc), or undefined when it is not running. */
  async rssKib(): Promise<number | undefined> {
    const pid = this.pid;
    if (pid === undefined) return undefined;
    const { readFile } = await import("node:fs/promises");
    const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
    const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
    return m ? Number(m[1]) : undefined;
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. Idempotent. */
  async stop(graceMs = 10_000): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    await exited;
    clearTimeout(timer);
  }
}

/** A TCP port on 127.0.0.1 that was free a moment ago (the daemon binds it next). */
export async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, timeoutMs: number, name: string): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until)
      throw new Error(`${name} did not listen on 127.0.0.1:${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
