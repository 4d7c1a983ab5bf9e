import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "@esb/common";
import { FolderFunctionRegistry } from "./folder-function-registry.js";
import { loadGatewayConfig } from "./gateway-config.js";
import { GatewayServer } from "./gateway-server.js";
import { LoopbackTestAgent } from "./loopback-test-agent.js";
import { StaticAgentDiscovery } from "./static-agent-discovery.js";

/**
 * TEST SUPPORT: a real gateway (folder registry in a temp dir, static agent
 * discovery) in front of a {@link LoopbackTestAgent}, both on loopback.
 */
export class GatewayTestHarness {
  agent = new LoopbackTestAgent();
  gateway!: GatewayServer;
  dir = "";
  endpoint = "";

  /** Starts everything with `manifests` (YAML text) written to the functions folder. */
  async start(manifests: string, env: Record<string, string> = {}): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), "esb-gateway-test-"));
    await writeFile(join(this.dir, "functions.yaml"), manifests);
    await this.agent.listen();
    await this.startGateway(env);
  }

  /**
   * Starts a new gateway (replacing {@link gateway}) on the same functions
   * folder and agent, e.g. after the previous one was stopped, to test what
   * survives a restart.
   */
  async startGateway(env: Record<string, string> = {}): Promise<void> {
    const config = loadGatewayConfig({
      GATEWAY_PORT: "0",
      GATEWAY_HOST: "127.0.0.1",
      AGENT_URLS: this.agent.url,
      FUNCTIONS_DIR: this.dir,
      GATEWAY_EVENT_RETRY_DELAYS_MS: "20,20",
      GATEWAY_HEARTBEAT_MS: "200",
      // An agent that tests stop stays away: fail after a short ride-through, not the default 15 s.
      GATEWAY_AGENT_OUTAGE_WAIT_MS: "300",
      ...env,
    });
    const logger = createLogger("gateway-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });
    const registry = new FolderFunctionRegistry(this.dir, config.namespace, logger);
    this.gateway = new GatewayServer({
      config,
      registry,
      discovery: new StaticAgentDiscovery(config.agentUrls),
      logger,
    });
    const port = await this.gateway.start();
    this.endpoint = `http://127.0.0.1:${port}`;
  }

  async stop(): Promise<void> {
    await this.gateway?.stop();
    await this.cleanup();
  }

  /** Closes the agent stand-in and removes the functions folder (for tests that stopped the gateway themselves). */
  async cleanup(): Promise<void> {
    await this.agent.close();
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }
}

/** A LambdaFunction manifest for tests. */
export function testFunctionManifest(name: string, extra: string = "", namespace?: string): string {
  return [
    "apiVersion: esb.dev/v1alpha1",
    "kind: LambdaFunction",
    "metadata:",
    `  name: ${name}`,
    ...(namespace ? [`  namespace: ${namespace}`] : []),
    "spec:",
    "  runtime: nodejs22.x",
    "  handler: index.handler",
    "  code:",
    "    inline:",
    "      index.mjs: export const handler = async (e) => e;",
    ...(extra ? [extra] : []),
  ].join("\n");
}
