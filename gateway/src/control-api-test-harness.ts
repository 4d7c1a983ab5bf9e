import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LambdaClient } from "@aws-sdk/client-lambda";
import yazl from "yazl";
import { createLogger, type LambdaFunction } from "@esb/common";
import { FolderFunctionRegistry } from "./folder-function-registry.js";
import { loadGatewayConfig } from "./gateway-config.js";
import { GatewayServer } from "./gateway-server.js";
import { LoopbackTestAgent } from "./loopback-test-agent.js";
import { StaticAgentDiscovery } from "./static-agent-discovery.js";

/** TEST SUPPORT: keys of the control-plane tests' credentials file. */
export const TEST_KEYS = {
  admin: { accessKeyId: "ESBCTLADMIN", secretAccessKey: "control-admin-secret-0123" },
  teamA: { accessKeyId: "ESBCTLTEAMA", secretAccessKey: "control-team-a-secret-0123" },
};

/** TEST SUPPORT: a zip of `files` (name → content, or [content, unix mode]) made by yazl. */
export function makeZip(files: Record<string, string | Buffer | [string | Buffer, number]>): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  for (const [name, v] of Object.entries(files)) {
    const [content, mode] = Array.isArray(v) ? v : [v, 0o100644];
    zip.addBuffer(Buffer.isBuffer(content) ? content : Buffer.from(content), name, { mode });
  }
  zip.end();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    zip.outputStream.on("data", (c: Buffer) => chunks.push(c));
    zip.outputStream.on("end", () => resolve(Buffer.concat(chunks)));
    zip.outputStream.on("error", reject);
  });
}

/**
 * TEST SUPPORT: a real gateway with SigV4 on (the {@link TEST_KEYS}) over a functions folder,
 * in front of a {@link LoopbackTestAgent}; `controllerView` stands in for the controller's
 * status (what `esb up` passes as functionStatus), keyed `namespace/name`.
 */
export class ControlApiTestGateway {
  readonly agent = new LoopbackTestAgent();
  readonly controllerView = new Map<string, LambdaFunction>();
  gateway!: GatewayServer;
  dir = "";
  endpoint = "";
  private readonly clients: LambdaClient[] = [];

  async start(manifests: string, options: { auth?: boolean } = {}): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), "esb-control-api-"));
    await writeFile(join(this.dir, "functions.yaml"), manifests);
    const credentials = `${this.dir}-keys.yaml`;
    await writeFile(
      credentials,
      [
        "credentials:",
        `  - accessKeyId: ${TEST_KEYS.admin.accessKeyId}`,
        `    secretAccessKey: ${TEST_KEYS.admin.secretAccessKey}`,
        '    namespaces: ["*"]',
        `  - accessKeyId: ${TEST_KEYS.teamA.accessKeyId}`,
        `    secretAccessKey: ${TEST_KEYS.teamA.secretAccessKey}`,
        "    namespaces: [team-a]",
      ].join("\n"),
      { mode: 0o600 },
    );
    await this.agent.listen();
    const config = loadGatewayConfig({
      GATEWAY_PORT: "0",
      GATEWAY_HOST: "127.0.0.1",
      AGENT_URLS: this.agent.url,
      FUNCTIONS_DIR: this.dir,
      GATEWAY_HEARTBEAT_MS: "200",
      ...(options.auth === false ? {} : { GATEWAY_CREDENTIALS_FILE: credentials }),
    });
    const logger = createLogger("control-api-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });
    this.gateway = new GatewayServer({
      config,
      registry: new FolderFunctionRegistry(this.dir, config.namespace, logger),
      discovery: new StaticAgentDiscovery(config.agentUrls),
      logger,
      functionStatus: (namespace, name) => this.controllerView.get(`${namespace}/${name}`),
    });
    this.endpoint = `http://127.0.0.1:${await this.gateway.start()}`;
  }

  /** An SDK client without retries, signing with `key`. */
  lambda(key = TEST_KEYS.admin): LambdaClient {
    const c = new LambdaClient({
      endpoint: this.endpoint,
      region: "us-east-1",
      credentials: key,
      maxAttempts: 1,
    });
    this.clients.push(c);
    return c;
  }

  async stop(): Promise<void> {
    for (const c of this.clients) c.destroy();
    await this.gateway?.stop();
    await this.agent.close();
    if (this.dir) {
      await rm(this.dir, { recursive: true, force: true });
      await rm(`${this.dir}-keys.yaml`, { force: true });
    }
  }
}
