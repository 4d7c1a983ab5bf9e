import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { execFileSync } from "node:child_process";

/**
 * Writes `<dir>/config.toml` for a containerd of ESB's own: root and state under `dir`, gRPC on
 * `socketPath` (ttrpc beside it), the CRI plugin off (ESB talks to containerd directly).
 * Returns the config's path. Also used by test stacks that supervise containerd themselves.
 */
export function writePrivateContainerdConfig(dir: string, socketPath: string): string {
  mkdirSync(join(dir, "root"), { recursive: true });
  mkdirSync(join(dir, "state"), { recursive: true });
  const config = join(dir, "config.toml");
  writeFileSync(
    config,
    [
      "version = 2",
      `root = "${join(dir, "root")}"`,
      `state = "${join(dir, "state")}"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      "[grpc]",
      `  address = "${socketPath}"`,
      "[ttrpc]",
      `  address = "${socketPath}.ttrpc"`,
      "",
    ].join("\n"),
  );
  return config;
}

/**
 * A containerd daemon of ESB's own, with its root, state and socket under one
 * folder, so `esb up` never depends on (or disturbs) a system containerd.
 * The daemon runs in its own process group and is stopped by {@link stop}.
 */
export class PrivateContainerd {
  /** The gRPC socket. */
  readonly socketPath: string;
  private child: ChildProcess | undefined;
  private readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, "containerd");
    this.socketPath = join(this.dir, "containerd.sock");
  }

  /** Starts containerd and resolves once its socket accepts connections (at most `timeoutMs`). */
  async start(timeoutMs = 30_000): Promise<void> {
    const config = writePrivateContainerdConfig(this.dir, this.socketPath);
    this.stopLeftover();
    const log = createWriteStream(join(this.dir, "containerd.log"), { flags: "a" });
    const child = spawn("containerd", ["--config", config], {
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    this.child = child;
    writeFileSync(join(this.dir, "containerd.pid"), `${child.pid}\n`);
    const exited = new Promise<never>((_, reject) =>
      child.once("exit", (code) =>
        reject(new Error(`containerd exited with code ${code}; see ${join(this.dir, "containerd.log")}`)),
      ),
    );
    const spawnFailed = new Promise<never>((_, reject) =>
      child.once("error", (err) =>
        reject(
          new Error(`cannot start containerd (${err.message}); install it: apt-get install containerd runc`),
        ),
      ),
    );
    await Promise.race([this.waitForSocket(timeoutMs), exited, spawnFailed]);
  }

  /** Stops the daemon (SIGTERM, then SIGKILL after `graceMs`). Idempotent. */
  async stop(graceMs = 10_000): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null) return;
    const done = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    await done;
    clearTimeout(timer);
  }

  /** A daemon left by a previous `esb up` that was killed would hold the socket: stop it first. */
  private stopLeftover(): void {
    const pidFile = join(this.dir, "containerd.pid");
    if (!existsSync(pidFile)) return;
    const pid = Number(readFileSync(pidFile, "utf8").trim());
    if (!Number.isInteger(pid) || pid <= 0) return;
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
      if (cmdline.includes("containerd") && cmdline.includes(this.dir)) {
        process.kill(pid, "SIGTERM");
        execFileSync("sleep", ["1"]);
      }
    } catch {
      // not running
    }
  }

  private async waitForSocket(timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const ok = await new Promise<boolean>((resolve) => {
        const s = connect(this.socketPath);
        s.once("connect", () => {
          s.destroy();
          resolve(true);
        });
        s.once("error", () => resolve(false));
      });
      if (ok) return;
      if (Date.now() > until)
        throw new Error(`containerd did not open ${this.socketPath} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
