import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { VictoriaLogsServer } from "@esb/common/victoria-logs-server";

/** Where `esb up` keeps function logs: its own VictoriaLogs (default), an existing one, or none. */
export type LogStoreChoice =
  | { kind: "embedded"; port: number; retention?: string }
  | { kind: "external"; url: string; username?: string; password?: string }
  | { kind: "off" };

/** How to reach the log store: what the agent ships to and what `esb logs` reads (`<stateDir>/logs.json`). */
export interface LogStoreConnection {
  url: string;
  username?: string;
  password?: string;
}

/** The connection file `esb up` writes for `esb logs` (mode 600: it holds the store's password). */
export function logStoreConnectionFile(stateDir: string): string {
  return join(stateDir, "logs.json");
}

/** Reads the connection `esb up` wrote; undefined when there is none (esb up not running, or logs off). */
export function readLogStoreConnection(stateDir: string): LogStoreConnection | undefined {
  try {
    return JSON.parse(readFileSync(logStoreConnectionFile(stateDir), "utf8")) as LogStoreConnection;
  } catch {
    return undefined;
  }
}

/**
 * `esb up`'s log store. Embedded: VictoriaLogs on 127.0.0.1 with its data under
 * `<stateDir>/logs`, and HTTP Basic auth with a password made at each start
 * (loopback is reachable by every local user). {@link agentEnv} is what the
 * agent needs to ship worker output there.
 */
export class LogStore {
  private server: VictoriaLogsServer | undefined;
  private connection: LogStoreConnection | undefined;

  constructor(
    private readonly stateDir: string,
    private readonly choice: LogStoreChoice,
  ) {}

  /** Base URL once started; undefined when logs are off. */
  get url(): string | undefined {
    return this.connection?.url;
  }

  /** Starts the embedded store (or takes the external one) and writes the connection file. */
  async start(): Promise<void> {
    const file = logStoreConnectionFile(this.stateDir);
    rmSync(file, { force: true });
    const choice = this.choice;
    if (choice.kind === "off") return;
    if (choice.kind === "external") {
      this.connection = { url: choice.url, username: choice.username, password: choice.password };
    } else {
      const dir = join(this.stateDir, "logs");
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const password = randomBytes(24).toString("base64url");
      const passwordFile = join(dir, "password");
      writeFileSync(passwordFile, password, { mode: 0o600 });
      this.server = new VictoriaLogsServer({
        dataDir: join(dir, "data"),
        host: "127.0.0.1",
        port: choice.port,
        auth: { username: "esb", passwordFile },
        retention: choice.retention,
      });
      await this.server.start();
      this.connection = { url: this.server.url, username: "esb", password };
    }
    writeFileSync(file, `${JSON.stringify(this.connection)}\n`, { mode: 0o600 });
  }

  /** AGENT_LOGS_* for the agent (empty when logs are off). */
  agentEnv(): Record<string, string | undefined> {
    const c = this.connection;
    if (!c) return {};
    return { AGENT_LOGS_URL: c.url, AGENT_LOGS_USERNAME: c.username, AGENT_LOGS_PASSWORD: c.password };
  }

  /** Stops the embedded store (its data stays) and removes the connection file. */
  async stop(): Promise<void> {
    rmSync(logStoreConnectionFile(this.stateDir), { force: true });
    await this.server?.stop();
    this.server = undefined;
  }
}
