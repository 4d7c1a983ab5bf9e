import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

/** The nats-server binary `make nats` builds (or `NATS_SERVER`). */
export function natsServerBinary(): string {
  const cache = process.env.ESB_CACHE_DIR ?? join(homedir(), ".cache", "esb");
  const bin = process.env.NATS_SERVER ?? join(cache, "bin", "nats-server");
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run make nats (hack/build-nats.sh) first`);
  return bin;
}

/**
 * TEST SUPPORT: a real nats-server with JetStream (file storage in a temp
 * folder) on a random loopback port, requiring a random token, as the chart
 * deploys it. {@link stop} kills it (SIGKILL: what is stored must already be
 * on disk) and removes its folder.
 */
export class NatsTestServer {
  url = "";
  readonly token = randomBytes(16).toString("hex");
  private dir = "";
  private port = -1;
  private child: ChildProcess | undefined;

  /** Starts the server (again on the same port and store after {@link kill}); resolves once it accepts clients. */
  async start(): Promise<void> {
    this.dir ||= await mkdtemp(join(tmpdir(), "esb-nats-"));
    const config = join(this.dir, "nats.conf");
    // max_payload: an Event payload may be 1 MiB, plus the event's headers.
    await writeFile(
      config,
      [
        `listen: 127.0.0.1:${this.port}`,
        "max_payload: 2097152",
        `jetstream { store_dir: "${join(this.dir, "js")}", sync_interval: always }`,
        `authorization { token: "${this.token}" }`,
      ].join("\n"),
      { mode: 0o600 },
    );
    const child = spawn(natsServerBinary(), ["-c", config], { stdio: ["ignore", "ignore", "pipe"] });
    this.child = child;
    const lines: string[] = [];
    const port = await new Promise<number>((resolve, reject) => {
      createInterface({ input: child.stderr! }).on("line", (line) => {
        lines.push(line);
        const m = /Listening for client connections on [^\s]+:(\d+)/.exec(line);
        if (m) resolve(Number(m[1]));
      });
      child.once("exit", (code) =>
        reject(new Error(`nats-server exited (${code}) before listening:\n${lines.join("\n")}`)),
      );
    });
    this.port = port;
    this.url = `nats://127.0.0.1:${port}`;
  }

  /** Kills the server (SIGKILL), keeping its store for the next {@link start}. */
  async kill(): Promise<void> {
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await exited;
    }
  }

  /** Stops the server and removes its store. */
  async stop(): Promise<void> {
    await this.kill();
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }
}
