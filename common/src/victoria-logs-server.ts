import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";

/** The victoria-logs binary: `VICTORIA_LOGS_BIN`, else the one `hack/build-victorialogs.sh` builds, else on PATH. */
export function victoriaLogsBinary(): string {
  if (process.env.VICTORIA_LOGS_BIN) return process.env.VICTORIA_LOGS_BIN;
  const cache = process.env.ESB_CACHE_DIR ?? join(homedir(), ".cache", "esb");
  const built = join(cache, "bin", "victoria-logs");
  if (existsSync(built)) return built;
  const onPath = (process.env.PATH ?? "")
    .split(":")
    .map((d) => join(d, "victoria-logs"))
    .find((p) => existsSync(p));
  if (onPath) return onPath;
  throw new Error(`victoria-logs is not installed (${built} is missing): run hack/build-victorialogs.sh`);
}

/** Options of {@link VictoriaLogsServer}. */
export interface VictoriaLogsServerOptions {
  /** Where the logs are stored (`-storageDataPath`); created when missing. */
  dataDir: string;
  /** Listen address; default 127.0.0.1 (loopback only). */
  host?: string;
  /** Listen port; 0 (default) picks a free one. */
  port?: number;
  /**
   * HTTP Basic credentials every caller must send (`-httpAuth.*`); the password
   * is read by VictoriaLogs from the file, so it does not show in `ps`.
   */
  auth?: { username: string; passwordFile: string };
  /** How long lines are kept (`-retentionPeriod`, e.g. `7d`); default VictoriaLogs' (7d). */
  retention?: string;
  /** The binary; default {@link victoriaLogsBinary}. */
  binary?: string;
}

/**
 * A VictoriaLogs process of ESB's own (`esb up`'s embedded log store, and
 * tests): started with its data folder, a loopback port and, when given,
 * HTTP Basic auth; ready once `/health` answers. {@link kill} keeps the data
 * for the next {@link start} on the same port.
 */
export class VictoriaLogsServer {
  /** Base URL once started, e.g. `http://127.0.0.1:9428`. */
  url = "";
  private child: ChildProcess | undefined;
  private port: number;

  constructor(private readonly opts: VictoriaLogsServerOptions) {
    this.port = opts.port ?? 0;
  }

  /** The `Authorization` header value callers send, when auth is on. */
  get authorization(): string | undefined {
    const auth = this.opts.auth;
    if (!auth) return undefined;
    const password = readFileSync(auth.passwordFile, "utf8").trim();
    return `Basic ${Buffer.from(`${auth.username}:${password}`).toString("base64")}`;
  }

  /** Starts the process; resolves once it serves `/health`. Rejects with its output when it exits first. */
  async start(timeoutMs = 30_000): Promise<void> {
    const host = this.opts.host ?? "127.0.0.1";
    const dataDir = resolve(this.opts.dataDir);
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const args = [`-storageDataPath=${dataDir}`, `-httpListenAddr=${host}:${this.port}`];
    if (this.opts.retention) args.push(`-retentionPeriod=${this.opts.retention}`);
    if (this.opts.auth) {
      args.push(
        `-httpAuth.username=${this.opts.auth.username}`,
        `-httpAuth.password=file://${resolve(this.opts.auth.passwordFile)}`,
      );
    }
    const child = spawn(this.opts.binary ?? victoriaLogsBinary(), args, {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    const output: string[] = [];
    const started = new Promise<number>((resolvePort, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(`victoria-logs did not start within ${timeoutMs} ms:\n${output.slice(-20).join("\n")}`),
          ),
        timeoutMs,
      );
      for (const stream of [child.stdout!, child.stderr!]) {
        createInterface({ input: stream }).on("line", (line) => {
          if (output.length < 200) output.push(line);
          const m = /started server at https?:\/\/[^\s]*:(\d+)\//.exec(line);
          if (m) {
            clearTimeout(timer);
            resolvePort(Number(m[1]));
          }
        });
      }
      child.once("error", reject);
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(
          new Error(
            `victoria-logs exited (${code ?? signal}) before serving:\n${output.slice(-20).join("\n")}`,
          ),
        );
      });
    });
    // Its output is read to the end (a full pipe would stall it); the port comes from its "started server" line.
    const port = await started;
    this.port = port;
    this.url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
    await this.waitHealthy(host, port, timeoutMs);
  }

  /** Kills the process (SIGKILL); its data stays for the next {@link start}. */
  async kill(): Promise<void> {
    await this.signal("SIGKILL");
  }

  /** Stops the process (SIGTERM, then SIGKILL after 10 s). */
  async stop(): Promise<void> {
    await this.signal("SIGTERM", 10_000);
  }

  private async signal(sig: NodeJS.Signals, killAfterMs?: number): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill(sig);
    const timer = killAfterMs ? setTimeout(() => child.kill("SIGKILL"), killAfterMs) : undefined;
    await exited;
    clearTimeout(timer);
  }

  private async waitHealthy(host: string, port: number, timeoutMs: number): Promise<void> {
    const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}/health`;
    const until = Date.now() + timeoutMs;
    const headers: Record<string, string> = {};
    const authorization = this.authorization;
    if (authorization) headers.authorization = authorization;
    for (;;) {
      if (this.child && (this.child.exitCode !== null || this.child.signalCode !== null))
        throw new Error("victoria-logs exited while starting");
      try {
        const res = await fetch(url, { headers, signal: AbortSignal.timeout(2_000) });
        await res.arrayBuffer();
        if (res.ok) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > until) throw new Error(`victoria-logs did not answer ${url} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
