import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import type { LambdaFunction, Logger } from "@esb/common";
import { generateAgentTokens, staticTokenSource, writeAgentTokensFile } from "@esb/common/agent-credentials";
import { loadAgentConfig } from "@esb/agent/agent-config";
import { startAgent, type RunningAgent } from "@esb/agent/main";
import { Controller, FolderFunctionSource, StaticAgentDirectory } from "@esb/controller";
import { FolderFunctionRegistry } from "@esb/gateway/folder-function-registry";
import { loadGatewayConfig } from "@esb/gateway/gateway-config";
import { GatewayServer } from "@esb/gateway/gateway-server";
import { StaticAgentDiscovery } from "@esb/gateway/static-agent-discovery";
import type { FunctionLogRecord } from "@esb/agent/logs/function-log-records";
import { LogStore, type LogStoreChoice } from "./log-store.js";
import { DataServices, type DataServicesOptions } from "./data-services/data-services.js";
import { PrivateContainerd } from "./private-containerd.js";
import { acquireStackLocks, type StackLock } from "./stack-lock.js";

/** Options of `esb up`. */
export interface StandaloneOptions {
  /** Folder of LambdaFunction manifests (watched). */
  functionsDir: string;
  /** Folders besides functionsDir that a manifest's `code.path` may name. */
  codeRoots?: string[];
  /** Gateway port (default 9000) and address (default 127.0.0.1). */
  port: number;
  host: string;
  /** Where containerd, the agent and CNI keep their state. */
  stateDir: string;
  /** AgentService port on 127.0.0.1. */
  agentPort: number;
  /** Worker bridge and subnet. */
  bridge: string;
  subnet: string;
  /** Workers' public-internet egress (default allow). */
  workerEgress?: "allow" | "deny";
  /** `ipv4[/prefix][:port]` destinations workers may reach although private (default none). */
  workerAllowedDestinations?: string[];
  /**
   * Credentials file of the gateway's callers (see docs/gateway-auth.md): set,
   * the gateway verifies AWS SigV4 signatures and scopes keys to namespaces.
   */
  credentialsFile?: string;
  /** What must be signed when credentialsFile is set: the Lambda API (default) or all routes too. */
  authScope?: "invokeApi" | "all";
  /** S3 and DynamoDB for the functions (see data-services/data-services.ts); undefined = none. */
  dataServices?: Pick<DataServicesOptions, "s3" | "dynamodb" | "proxyPort" | "workerCredentials">;
  logger: Logger;
  /** Progress lines for the user (start-up steps). */
  progress: (line: string) => void;
  /** Function logs: ESB's own VictoriaLogs (default, loopback), an existing one, or off. */
  logs?: LogStoreChoice;
  /** Called with every line a worker writes (esb up's terminal). */
  onFunctionLog?: (record: FunctionLogRecord) => void;
  /** Called when a function's readiness (Ready condition status or reason) changes. */
  onFunctionChange?: (report: FunctionReport) => void;
}

/** A function's state as `esb up` reports it. */
export interface FunctionReport {
  name: string;
  ready: boolean;
  reason: string;
  message: string;
  url?: string;
}

/**
 * ESB on one machine without Kubernetes: a private containerd, the node agent,
 * the gateway, and the controller reading LambdaFunction manifests from a
 * folder. {@link stop} destroys every worker and leaves no containers, network
 * namespaces or CNI allocations behind.
 */
export class StandaloneStack {
  private containerd: PrivateContainerd | undefined;
  private dataServices: DataServices | undefined;
  private agent: RunningAgent | undefined;
  private logStore: LogStore | undefined;
  private lock: StackLock | undefined;
  private gateway: GatewayServer | undefined;
  private controller: Controller | undefined;
  private source: FolderFunctionSource | undefined;
  /** Readiness last told to onFunctionChange, by namespace/name. */
  private readonly lastStates = new Map<string, string>();
  private gatewayPort = 0;

  constructor(private readonly options: StandaloneOptions) {}

  /** Base URL of the gateway once started. */
  get gatewayUrl(): string {
    const host = this.options.host === "0.0.0.0" ? "127.0.0.1" : this.options.host;
    return `http://${host}:${this.gatewayPort}`;
  }

  /** Checks prerequisites and starts everything; on failure, stops what started and throws. */
  async start(): Promise<void> {
    const { progress, logger } = this.options;
    checkPrerequisites();
    const stateDir = resolve(this.options.stateDir);
    // Before anything is touched: a second stack on these would break the first one.
    this.lock = acquireStackLocks({ stateDir, bridge: this.options.bridge, subnet: this.options.subnet });
    mkdirSync(stateDir, { recursive: true });
    try {
      let t = Date.now();
      this.containerd = new PrivateContainerd(stateDir);
      await this.containerd.start();
      progress(`containerd ready (${Date.now() - t} ms), socket ${this.containerd.socketPath}`);

      // Before the agent: workers get the services' endpoints and may reach their proxy.
      this.dataServices = new DataServices({
        s3: "off",
        dynamodb: "off",
        ...this.options.dataServices,
        stateDir,
        bridge: this.options.bridge,
        subnet: this.options.subnet,
        logger: logger.child({ component: "data-services" }),
        progress,
      });
      await this.dataServices.start();
      const data = this.dataServices.agentEnv();

      t = Date.now();
      this.logStore = new LogStore(stateDir, this.options.logs ?? { kind: "embedded", port: 9428 });
      await this.logStore.start();
      if (this.logStore.url)
        progress(`function logs to VictoriaLogs at ${this.logStore.url} (${Date.now() - t} ms)`);

      t = Date.now();
      // Fresh tokens each start, in a file only root reads: the agent's port is on
      // loopback, but any local user could reach it there.
      const tokens = generateAgentTokens();
      const tokensFile = join(stateDir, "agent-tokens.json");
      writeAgentTokensFile(tokensFile, tokens);
      this.agent = await startAgent(
        loadAgentConfig({
          CONTAINERD_SOCKET: this.containerd.socketPath,
          CONTAINERD_NAMESPACE: "esb",
          AGENT_HOST: "127.0.0.1",
          AGENT_PORT: String(this.options.agentPort),
          AGENT_METRICS_PORT: "0",
          AGENT_STATE_DIR: join(stateDir, "agent"),
          AGENT_AUTH: "token",
          AGENT_TOKENS_FILE: tokensFile,
          NODE_NAME: hostname(),
          CNI_BRIDGE: this.options.bridge,
          CNI_SUBNET: this.options.subnet,
          WORKER_EGRESS: this.options.workerEgress,
          WORKER_ALLOWED_DESTINATIONS: [
            ...(this.options.workerAllowedDestinations ?? []),
            data.allowedDestination,
          ]
            .filter(Boolean)
            .join(","),
          ESB_LOG_LEVEL: process.env.ESB_LOG_LEVEL,
          ...this.logStore.agentEnv(),
          ...data.env,
        }),
      );
      if (this.options.onFunctionLog) this.agent.logs.onRecord(this.options.onFunctionLog);
      const agentUrl = `http://127.0.0.1:${this.agent.port}`;
      progress(
        `agent ready (${Date.now() - t} ms) at ${agentUrl}, workers on ${this.options.bridge} ${this.options.subnet}`,
      );

      const gatewayConfig = loadGatewayConfig({
        GATEWAY_PORT: String(this.options.port),
        GATEWAY_HOST: this.options.host,
        AGENT_URLS: agentUrl,
        FUNCTIONS_DIR: this.options.functionsDir,
        HOSTNAME: hostname(),
        // Accepted Event invocations live here until they have run, across restarts and crashes.
        GATEWAY_EVENT_STORE: join(stateDir, "gateway", "events.db"),
        GATEWAY_CREDENTIALS_FILE: this.options.credentialsFile && resolve(this.options.credentialsFile),
        GATEWAY_AUTH_SCOPE: this.options.credentialsFile ? this.options.authScope : undefined,
      });
      this.gateway = new GatewayServer({
        config: gatewayConfig,
        // The controller reports invalid manifests; the gateway reads the folder quietly.
        registry: new FolderFunctionRegistry(
          this.options.functionsDir,
          gatewayConfig.namespace,
          logger,
          undefined,
          "debug",
        ),
        discovery: new StaticAgentDiscovery([agentUrl]),
        agentToken: staticTokenSource(tokens.gateway),
        logger: logger.child({ component: "gateway" }),
        // The folder registry reads manifests only; GetFunction's State comes from the controller.
        functionStatus: (namespace, name) => this.source?.get(`${namespace}/${name}`),
      });
      this.gatewayPort = await this.gateway.start();
      progress(
        `gateway listening on ${this.gatewayUrl}` +
          (gatewayConfig.credentialsFile
            ? ` (AWS SigV4 required: ${gatewayConfig.authScope === "all" ? "every path" : "Lambda API"})`
            : ""),
      );

      this.source = new FolderFunctionSource(this.options.functionsDir, {
        defaultNamespace: gatewayConfig.namespace,
        codeRoots: this.options.codeRoots,
        // Workers run a snapshot of code.path: an edit is a new revision and old workers drain.
        codeSnapshotDir: join(stateDir, "controller", "code"),
        onCodeChange: (fn, revision) => progress(`${fn.metadata.name}: code changed, revision ${revision}`),
        onStatus: (fn, status) => this.noticeStatus({ ...fn, status }),
        logger: logger.child({ component: "controller" }),
      });
      this.controller = new Controller({
        source: this.source,
        agents: new StaticAgentDirectory([agentUrl]),
        agentToken: staticTokenSource(tokens.controller),
        gatewayUrl: this.gatewayUrl,
        gatewayNamespace: gatewayConfig.namespace,
        logger: logger.child({ component: "controller" }),
      });
      await this.controller.start();
      progress(`controller watching ${resolve(this.options.functionsDir)}`);
    } catch (err) {
      await this.stop().catch((e: unknown) => logger.warn({ err: e }, "cleanup after failed start"));
      throw err;
    }
  }

  /** Current state of every function read from the folder, and the manifests that were rejected. */
  report(): { functions: FunctionReport[]; invalid: Map<string, string[]> } {
    const source = this.source;
    if (!source) return { functions: [], invalid: new Map() };
    return { functions: source.list().map(functionReport), invalid: source.invalidManifests() };
  }

  /** Tells onFunctionChange when a function's readiness differs from what it was last told. */
  private noticeStatus(fn: LambdaFunction): void {
    const report = functionReport(fn);
    const key = `${fn.metadata.namespace ?? ""}/${fn.metadata.name}`;
    const state = `${report.ready} ${report.reason}`;
    if (this.lastStates.get(key) === state) return;
    this.lastStates.set(key, state);
    this.options.onFunctionChange?.(report);
  }

  /**
   * Waits until every valid function is Ready or has failed (a reason other
   * than a pending one), at most `timeoutMs`; reports what it sees.
   */
  async waitForFunctions(timeoutMs: number): Promise<FunctionReport[]> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const { functions } = this.report();
      const settled = functions.every((f) => f.ready || (f.reason !== "Pending" && f.reason !== "WarmingUp"));
      if (settled || Date.now() > until) return functions;
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Stops everything and removes every worker, network namespace and CNI allocation. Idempotent. */
  async stop(): Promise<void> {
    const log = this.options.logger;
    const step = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        log.warn({ err: (err as Error).message }, `stop: ${what} failed`);
      }
    };
    const controller = this.controller;
    this.controller = undefined;
    if (controller) await step("controller", () => controller.stop());
    const gateway = this.gateway;
    this.gateway = undefined;
    if (gateway) await step("gateway", () => gateway.stop());
    const agent = this.agent;
    this.agent = undefined;
    if (agent) {
      // Standalone owns its workers: destroy them rather than keep them for re-adoption.
      for (const pool of agent.agent.pools()) {
        await step(`destroy ${pool.ref.namespace}/${pool.ref.name}`, () =>
          agent.agent.destroyFunction(pool.ref),
        );
      }
      // Busy workers are removed when released; nothing will release them now (the gateway
      // has stopped, and workers re-adopted from a killed esb up have no holder at all).
      await step("remove the remaining workers", async () => {
        const runtime = agent.agent.runtime;
        for (const w of await runtime.listWorkers()) await runtime.removeWorker(w.id);
      });
      await step("agent", () => agent.stop());
      await step("network", async () => {
        // The bridge exists once a worker was started; none is not a failure.
        try {
          execFileSync("ip", ["link", "show", this.options.bridge], { stdio: "ignore" });
        } catch {
          return;
        }
        execFileSync("ip", ["link", "del", this.options.bridge], { stdio: "ignore" });
      });
    }
    const logStore = this.logStore;
    this.logStore = undefined;
    if (logStore) await step("log store", () => logStore.stop());
    const dataServices = this.dataServices;
    this.dataServices = undefined;
    if (dataServices) await step("data services", () => dataServices.stop());
    const containerd = this.containerd;
    this.containerd = undefined;
    if (containerd) await step("containerd", () => containerd.stop());
    this.lock?.release();
    this.lock = undefined;
  }
}

function functionReport(fn: LambdaFunction): FunctionReport {
  const ready = fn.status?.conditions?.find((c) => c.type === "Ready");
  return {
    name: fn.metadata.name,
    ready: ready?.status === "True",
    reason: ready?.reason ?? "Pending",
    message: ready?.message ?? "",
    url: fn.status?.url,
  };
}

/** Throws an error that says what to install when ESB cannot run here. */
export function checkPrerequisites(): void {
  const problems: string[] = [];
  if (process.getuid?.() !== 0) {
    problems.push(
      "esb up must run as root (it drives containerd, network namespaces and cgroups): sudo make up",
    );
  }
  for (const bin of ["containerd", "runc", "ip"]) {
    if (!onPath(bin)) problems.push(`${bin} is not installed`);
  }
  if (!["/usr/lib/cni/bridge", "/opt/cni/bin/bridge"].some((p) => existsSync(p))) {
    problems.push("the CNI plugins (bridge, host-local) are not installed");
  }
  if (problems.length > 0) {
    throw new Error(
      `cannot start ESB:\n  - ${problems.join("\n  - ")}\n` +
        "install what is missing with: hack/install-deps.sh (Debian: apt-get install containerd runc containernetworking-plugins iproute2)",
    );
  }
}

function onPath(bin: string): boolean {
  return (process.env.PATH ?? "").split(":").some((d) => d && existsSync(join(d, bin)));
}

/** ESB's version (from the CLI's package.json). */
export function esbVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}
