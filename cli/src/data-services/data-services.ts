import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import type { Logger } from "@esb/common";
import { AwsRouteProxy, type ProxyUpstream } from "./aws-route-proxy.js";
import { ServiceDaemon, freeLoopbackPort } from "./service-daemon.js";
import { ensureWorkerBridge, removeBridge } from "./worker-bridge.js";

/** How one data service is provided: run here (`embedded`), not at all (`off`), or an existing endpoint. */
export type DataServiceSetting = "embedded" | "off" | { url: string };

/** AWS credentials as the SDKs read them from the environment. */
export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/** Options of {@link DataServices}. */
export interface DataServicesOptions {
  /** Data lives in `<stateDir>/data/{s3,dynamodb}`, credentials and logs in `<stateDir>/data-services`. */
  stateDir: string;
  /** The worker bridge and subnet: the proxy listens on the bridge's gateway address. */
  bridge: string;
  subnet: string;
  s3: DataServiceSetting;
  dynamodb: DataServiceSetting;
  /** Port of the proxy on the bridge address (default {@link DEFAULT_DATA_PROXY_PORT}; 0: any). */
  proxyPort?: number;
  /** Region functions sign for (the S3 server checks it). Default `us-east-1`. */
  region?: string;
  /**
   * Credentials workers get when no service is embedded (e.g. real AWS keys);
   * with an embedded service, workers get the local ones and this must be unset.
   */
  workerCredentials?: AwsCredentials;
  /** Where the servers' binaries are (default `$ESB_CACHE_DIR/bin` or ~/.cache/esb/bin, then PATH). */
  binDir?: string;
  logger: Logger;
  progress: (line: string) => void;
}

/** Default port of the data-service proxy on the worker bridge's gateway address. */
export const DEFAULT_DATA_PROXY_PORT = 4510;

/** Start-up figures of one embedded server (for `esb up`'s progress lines and the benchmarks). */
export interface ServiceFigures {
  name: string;
  startMs: number;
  rssKib?: number;
}

/**
 * The data services `esb up` runs beside the functions (docs/data-services.md):
 * an S3 server (versitygw, POSIX backend) and a DynamoDB server (Dynoxide,
 * SQLite), each on a random loopback port with its data under the state
 * directory, and the one proxy workers reach them through, on the worker
 * bridge's gateway address. Every request through the proxy must be signed
 * with the local credentials: the S3 server checks its signatures, the proxy
 * those of DynamoDB requests (Dynoxide checks none, and is otherwise reachable
 * on loopback only).
 *
 * {@link agentEnv} is what the agent needs so that workers get
 * `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_DYNAMODB` and the credentials, and
 * may reach the proxy's port (and nothing else new) on the bridge.
 */
export class DataServices {
  private readonly daemons: ServiceDaemon[] = [];
  private proxy: AwsRouteProxy | undefined;
  private proxyAddress: { host: string; port: number } | undefined;
  private createdBridge = false;
  private credentials: AwsCredentials | undefined;

  constructor(private readonly options: DataServicesOptions) {
    const embedded = options.s3 === "embedded" || options.dynamodb === "embedded";
    if (embedded && options.workerCredentials)
      throw new Error(
        "worker credentials are the local services' own while S3 or DynamoDB is embedded: turn both off (or point them at existing endpoints) to give workers other credentials",
      );
  }

  /** Starts the embedded servers and the proxy (nothing when both services are off or external). */
  async start(): Promise<void> {
    const { s3, dynamodb, stateDir, progress } = this.options;
    const dir = join(stateDir, "data-services");
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (s3 !== "embedded" && dynamodb !== "embedded") {
      this.credentials = this.options.workerCredentials;
      return;
    }
    this.credentials = localCredentials(join(dir, "credentials"));
    const region = this.options.region ?? "us-east-1";
    let s3Upstream: ProxyUpstream | undefined;
    let dynamoUpstream: ProxyUpstream | undefined;
    if (s3 === "embedded") {
      const data = join(stateDir, "data", "s3");
      mkdirSync(data, { recursive: true, mode: 0o700 });
      const port = await freeLoopbackPort();
      await this.run({
        name: "versitygw",
        args: ["--port", `127.0.0.1:${port}`, "--quiet", "posix", data],
        // Secrets in the environment, not in argv (which every local user can read).
        env: {
          ROOT_ACCESS_KEY_ID: this.credentials.accessKeyId,
          ROOT_SECRET_ACCESS_KEY: this.credentials.secretAccessKey,
          VGW_REGION: region,
        },
        port,
        dir,
      });
      s3Upstream = { host: "127.0.0.1", port };
    }
    if (dynamodb === "embedded") {
      const data = join(stateDir, "data", "dynamodb");
      mkdirSync(data, { recursive: true, mode: 0o700 });
      const port = await freeLoopbackPort();
      await this.run({
        name: "dynoxide",
        args: [
          "serve",
          "--host",
          "127.0.0.1",
          "--port",
          String(port),
          "--db-path",
          join(data, "dynamodb.db"),
        ],
        env: {},
        port,
        dir,
      });
      dynamoUpstream = { host: "127.0.0.1", port };
    }
    const bridge = ensureWorkerBridge(this.options.bridge, this.options.subnet);
    this.createdBridge = bridge.created;
    this.proxy = new AwsRouteProxy({
      host: bridge.address,
      port: this.options.proxyPort ?? DEFAULT_DATA_PROXY_PORT,
      s3: s3Upstream,
      dynamodb: dynamoUpstream,
      credentials: this.credentials,
      logger: this.options.logger.child({ component: "data-proxy" }),
    });
    const port = await this.proxy.start();
    this.proxyAddress = { host: bridge.address, port };
    progress(
      `data services at ${this.endpoint} (S3 ${describe(s3)}, DynamoDB ${describe(dynamodb)}); credentials in ${join(dir, "credentials")}`,
    );
  }

  /** The proxy's URL (`http://10.88.0.1:4510`), once started with an embedded service. */
  get endpoint(): string | undefined {
    return this.proxyAddress && `http://${this.proxyAddress.host}:${this.proxyAddress.port}`;
  }

  /** Start time and memory of each embedded server. */
  async figures(): Promise<ServiceFigures[]> {
    return Promise.all(
      this.daemons.map(async (d) => ({ name: d.spec.name, startMs: d.startMs, rssKib: await d.rssKib() })),
    );
  }

  /**
   * The agent's WORKER_AWS_* variables (endpoints, credentials) and the
   * destination workers must be allowed to reach (the proxy, `ip/32:port`).
   */
  agentEnv(): { env: Record<string, string>; allowedDestination?: string } {
    const env: Record<string, string> = {};
    const { s3, dynamodb } = this.options;
    const endpointOf = (setting: DataServiceSetting) =>
      setting === "off" ? undefined : setting === "embedded" ? this.endpoint : setting.url;
    const s3Url = endpointOf(s3);
    const dynamoUrl = endpointOf(dynamodb);
    if (s3Url) env.WORKER_AWS_ENDPOINT_URL_S3 = s3Url;
    if (dynamoUrl) env.WORKER_AWS_ENDPOINT_URL_DYNAMODB = dynamoUrl;
    const c = this.credentials;
    if (c) {
      env.WORKER_AWS_ACCESS_KEY_ID = c.accessKeyId;
      env.WORKER_AWS_SECRET_ACCESS_KEY = c.secretAccessKey;
      if (c.sessionToken) env.WORKER_AWS_SESSION_TOKEN = c.sessionToken;
    }
    const p = this.proxyAddress;
    return { env, allowedDestination: p && `${p.host}/32:${p.port}` };
  }

  /** Stops the proxy and the servers (their data stays). Removes the bridge only if this created it and it is still there. */
  async stop(): Promise<void> {
    const proxy = this.proxy;
    this.proxy = undefined;
    await proxy?.stop();
    for (const d of this.daemons.splice(0)) await d.stop();
    if (this.createdBridge) {
      this.createdBridge = false;
      try {
        removeBridge(this.options.bridge);
      } catch (err) {
        this.options.logger.warn({ err: (err as Error).message }, "data services: bridge not removed");
      }
    }
  }

  private async run(s: { name: string; args: string[]; env: NodeJS.ProcessEnv; port: number; dir: string }) {
    const daemon = new ServiceDaemon({
      name: s.name,
      command: this.binary(s.name),
      args: s.args,
      // Only what the server needs: no proxy settings, credentials or tokens of esb up leak into it.
      env: { PATH: process.env.PATH, HOME: s.dir, ...s.env },
      logFile: join(s.dir, `${s.name}.log`),
      port: s.port,
    });
    await daemon.start();
    this.daemons.push(daemon);
    this.options.progress(`${s.name} ready (${daemon.startMs} ms) on 127.0.0.1:${s.port}`);
  }

  private binary(name: string): string {
    const dir =
      this.options.binDir ?? join(process.env.ESB_CACHE_DIR ?? join(homedir(), ".cache", "esb"), "bin");
    const path = join(dir, name);
    return existsSync(path) ? path : name;
  }
}

function describe(setting: DataServiceSetting): string {
  return setting === "embedded" ? "embedded" : setting === "off" ? "off" : setting.url;
}

/**
 * The local services' credentials, kept in an AWS shared-credentials file
 * (profile `default`, mode 600) so that they survive restarts along with the
 * data, and so that `AWS_SHARED_CREDENTIALS_FILE=<file> aws --endpoint-url …`
 * works on this machine. Created with random keys on first use.
 */
export function localCredentials(file: string): AwsCredentials {
  if (existsSync(file)) {
    const text = readFileSync(file, "utf8");
    const value = (key: string) => new RegExp(`^\\s*${key}\\s*=\\s*(\\S+)`, "m").exec(text)?.[1];
    const accessKeyId = value("aws_access_key_id");
    const secretAccessKey = value("aws_secret_access_key");
    if (accessKeyId && secretAccessKey) return { accessKeyId, secretAccessKey };
  }
  // AWS's shapes: a 20-character key id (ESB's start with "ESBL"), a 40-character secret.
  const accessKeyId = `ESBL${randomBytes(10).toString("hex").toUpperCase().slice(0, 16)}`;
  const secretAccessKey = randomBytes(30).toString("base64url").slice(0, 40);
  writeFileSync(
    file,
    `# esb up's local S3 and DynamoDB (see docs/data-services.md)\n[default]\naws_access_key_id = ${accessKeyId}\naws_secret_access_key = ${secretAccessKey}\n`,
    { mode: 0o600 },
  );
  return { accessKeyId, secretAccessKey };
}
