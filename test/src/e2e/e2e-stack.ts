import { execFile } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { LambdaClient } from "@aws-sdk/client-lambda";
import { createLogger, type LambdaFunction } from "@esb/common";
import type { AgentConfig } from "@esb/agent/agent-config";
import { startAgent, type RunningAgent } from "@esb/agent/main";
import { kernelFreezerStates } from "@esb/agent/testing/kernel-freezer";
import { generateAgentTokens, staticTokenSource, writeAgentTokensFile } from "@esb/common/agent-credentials";
import { StaticAgentDirectory } from "@esb/controller/agent-directory";
import { Controller } from "@esb/controller/controller";
import { FolderFunctionSource } from "@esb/controller/folder-function-source";
import { FolderFunctionRegistry } from "@esb/gateway/folder-function-registry";
import { loadGatewayConfig } from "@esb/gateway/gateway-config";
import { GatewayServer } from "@esb/gateway/gateway-server";
import { StaticAgentDiscovery } from "@esb/gateway/static-agent-discovery";
import { stringify } from "yaml";

const run = promisify(execFile);

/** A LambdaFunction manifest's name and spec (namespace: the gateway's default). */
export interface E2eFunction {
  name: string;
  spec: LambdaFunction["spec"];
}

/**
 * The whole ESB data path of `esb up`, in-process and real: the agent (startAgent:
 * ContainerdRuntime on the test containerd in its own namespace, CniNetwork on
 * its own bridge and random 10.x.y.0/24 subnet, AgentService on loopback), the
 * controller (manifests folder → PrepareFunction) and the gateway (same folder,
 * static agent URL). Throws when the test containerd is missing.
 */
export class E2eStack {
  readonly id = randomBytes(3).toString("hex");
  readonly namespace = `esb-e2e-${this.id}`;
  readonly bridge = `esbe${this.id}`;
  readonly subnet = `10.${randomInt(200, 250)}.${randomInt(0, 256)}.0/24`;
  readonly socket: string;
  dir = "";
  functionsDir = "";
  agent!: RunningAgent;
  controller!: Controller;
  source!: FolderFunctionSource;
  gateway!: GatewayServer;
  /** Base URL of the gateway, e.g. http://127.0.0.1:41234. */
  endpoint = "";
  agentUrl = "";
  /** Code edits the folder source reported (what esb up prints as "code changed"). */
  readonly codeChanges: { name: string; revision: string }[] = [];
  /** The agent's tokens: the gateway and controller of this stack present theirs. */
  readonly agentTokens = generateAgentTokens();
  /** Agent settings that replace the stack's defaults (set before start), e.g. workerNetwork, workerAws. */
  agentOverrides: Partial<AgentConfig> = {};

  constructor() {
    const socket = process.env.ESB_TEST_CONTAINERD_SOCKET;
    if (!socket) throw new Error("ESB_TEST_CONTAINERD_SOCKET is not set: the test containerd is missing");
    this.socket = socket;
  }

  /** Log level of the in-process components (`ESB_LOG_LEVEL`, default warn). */
  logLevel(): string {
    const level = process.env.ESB_LOG_LEVEL ?? "warn";
    process.env.ESB_LOG_LEVEL = level;
    return level;
  }

  /**
   * Creates the stack's temp folder and starts only the agent (`agentUrl` is
   * set); for harnesses that wire controller and gateway themselves.
   */
  async startAgent(): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), "esb-e2e-"));
    this.logLevel();
    const tokensFile = join(this.dir, "agent-tokens.json");
    writeAgentTokensFile(tokensFile, this.agentTokens);
    this.agent = await startAgent({
      auth: { mode: "token", tokensFile },
      runtime: "containerd",
      containerdSocket: this.socket,
      containerdNamespace: this.namespace,
      dockerSocket: "",
      port: 0,
      metricsPort: 0,
      host: "127.0.0.1",
      nodeName: `e2e-${this.id}`,
      stateDir: join(this.dir, "agent"),
      cniMode: "bridge",
      cniBridge: this.bridge,
      cniSubnet: this.subnet,
      cniBinDir: "/usr/lib/cni",
      cniConfDir: join(this.dir, "cni-conf"),
      netnsDir: join(this.dir, "netns"),
      insecureRegistries: process.env.ESB_TEST_REGISTRY ? [process.env.ESB_TEST_REGISTRY] : [],
      region: "us-east-1",
      // Room for the 20-way concurrency test at 128 MB, whatever the machine has.
      memoryCapacityMb: 8192,
      ...this.agentOverrides,
    });
    this.agentUrl = `http://127.0.0.1:${this.agent.port}`;
  }

  /** Writes the manifests and starts agent, controller and gateway; resolves when every function is Ready. */
  async start(functions: E2eFunction[], readyTimeoutMs = 600_000): Promise<void> {
    await this.startAgent();
    this.functionsDir = join(this.dir, "functions");
    await run("mkdir", ["-p", this.functionsDir]);
    const docs = functions.map((f) =>
      stringify({
        apiVersion: "esb.dev/v1alpha1",
        kind: "LambdaFunction",
        metadata: { name: f.name },
        spec: f.spec,
      }),
    );
    await writeFile(join(this.functionsDir, "functions.yaml"), docs.join("---\n"));
    const level = this.logLevel();

    const logger = createLogger("e2e", { level });
    const gw = await this.startGateway(`e2e-gateway-${this.id}`);
    this.gateway = gw.gateway;
    this.endpoint = gw.endpoint;

    // As esb up does: code.path runs from content-addressed snapshots, an edit is a new revision.
    this.source = new FolderFunctionSource(this.functionsDir, {
      logger,
      codeSnapshotDir: join(this.dir, "code-snapshots"),
      onCodeChange: (fn, revision) => this.codeChanges.push({ name: fn.metadata.name, revision }),
    });
    this.controller = new Controller({
      source: this.source,
      agents: new StaticAgentDirectory([this.agentUrl]),
      agentToken: staticTokenSource(this.agentTokens.controller),
      gatewayUrl: this.endpoint,
      logger,
    });
    await this.controller.start();
    await this.waitReady(
      functions.map((f) => f.name),
      readyTimeoutMs,
    );
  }

  /**
   * Starts a gateway on the stack's agent and functions folder (another replica when the
   * stack's own runs: its own holder id, its own port); the caller stops it.
   */
  async startGateway(holderId: string): Promise<{ gateway: GatewayServer; endpoint: string }> {
    const logger = createLogger("e2e", { level: this.logLevel() });
    const config = loadGatewayConfig({
      GATEWAY_PORT: "0",
      GATEWAY_HOST: "127.0.0.1",
      AGENT_URLS: this.agentUrl,
      FUNCTIONS_DIR: this.functionsDir,
      GATEWAY_HEARTBEAT_MS: "200",
      GATEWAY_HOLDER_ID: holderId,
    });
    const gateway = new GatewayServer({
      config,
      registry: new FolderFunctionRegistry(this.functionsDir, config.namespace, logger),
      discovery: new StaticAgentDiscovery(config.agentUrls),
      agentToken: staticTokenSource(this.agentTokens.gateway),
      logger,
    });
    const port = await gateway.start();
    return { gateway, endpoint: `http://127.0.0.1:${port}` };
  }

  /** Waits until the controller reports Ready=True for every function; throws with the conditions otherwise. */
  async waitReady(names: string[], timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const pending = names
        .map((n) => this.source.get(`default/${n}`))
        .map((fn, i) => ({ name: names[i], ready: fn?.status?.conditions?.find((c) => c.type === "Ready") }))
        .filter((p) => p.ready?.status !== "True");
      if (pending.length === 0) return;
      if (Date.now() > deadline) {
        throw new Error(
          `functions not Ready after ${timeoutMs} ms: ${pending
            .map((p) => `${p.name}: ${p.ready ? `${p.ready.reason} ${p.ready.message}` : "no status"}`)
            .join("; ")}`,
        );
      }
      await sleep(250);
    }
  }

  /** An AWS SDK client on the gateway (or another `endpoint`); no retries, so throttling reaches the test. */
  lambda(endpoint = this.endpoint): LambdaClient {
    return new LambdaClient({
      endpoint,
      region: "us-east-1",
      credentials: { accessKeyId: "x", secretAccessKey: "x" },
      maxAttempts: 1,
    });
  }

  /** `ctr` in the stack's containerd namespace; returns stdout. */
  async ctr(...args: string[]): Promise<string> {
    const { stdout } = await run("ctr", ["--address", this.socket, "-n", this.namespace, ...args]);
    return stdout;
  }

  /** Tasks of the namespace as `ctr tasks ls` shows them: id → status (RUNNING, PAUSED, STOPPED…). */
  async tasks(): Promise<Map<string, string>> {
    const out = await this.ctr("tasks", "ls");
    const tasks = new Map<string, string>();
    for (const line of out.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length >= 3) tasks.set(cols[0], cols[2]);
    }
    return tasks;
  }

  /**
   * The kernel's freezer state (FROZEN, FREEZING, THAWED) of task `id`'s cgroup, read from
   * the kernel (the agent freezes workers through the cgroup freezer; containerd then
   * lists them RUNNING); undefined when the task has no process.
   */
  async taskFreezer(id: string): Promise<string | undefined> {
    const line = (await this.ctr("tasks", "ls")).split("\n").find((l) => l.trim().split(/\s+/)[0] === id);
    const pid = Number(line?.trim().split(/\s+/)[1] ?? 0);
    if (!pid) return undefined;
    return (await kernelFreezerStates(pid).catch(() => []))[0]?.freezer;
  }

  /** Container ids of the namespace (`ctr containers ls -q`). */
  async containers(): Promise<string[]> {
    return (await this.ctr("containers", "ls", "-q")).split("\n").filter(Boolean);
  }

  /** True while the stack's bridge exists. */
  async bridgeExists(): Promise<boolean> {
    try {
      await run("ip", ["link", "show", this.bridge]);
      return true;
    } catch {
      return false;
    }
  }

  /** Worker network namespaces still mounted in the agent's netns folder. */
  async netnsLeft(): Promise<string[]> {
    return readdir(join(this.dir, "netns")).catch(() => []);
  }

  /** NAT rules (the bridge plugin's IP masquerade) that still name the stack's subnet. */
  async natRulesLeft(): Promise<string[]> {
    const { stdout } = await run("iptables", ["-t", "nat", "-S"]);
    const prefix = this.subnet.split("/")[0].split(".").slice(0, 3).join(".");
    return stdout.split("\n").filter((l) => l.includes(`${prefix}.`));
  }

  /**
   * Stops gateway and controller, destroys every function's workers on the
   * agent, stops the agent, and removes the stack's bridge. Errors are
   * collected and thrown at the end, after everything was tried.
   */
  async stop(): Promise<void> {
    const errors: unknown[] = [];
    const attempt = async (fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    };
    if (this.gateway) await attempt(() => this.gateway.stop());
    if (this.controller) await attempt(() => this.controller.stop());
    if (this.agent) {
      for (const p of this.agent.agent.pools()) {
        await attempt(() => this.agent.agent.destroyFunction(p.ref));
      }
      // Busy workers (if any) are destroyed once released: wait until the runtime has none left,
      // and no start is still in flight (a starting worker has no container yet, nor a sandbox).
      const agent = this.agent.agent;
      await attempt(() =>
        waitFor(
          async () => agent.trackedWorkers().length === 0 && (await agent.runtime.listWorkers()).length === 0,
          60_000,
          "workers destroyed",
        ),
      );
      await attempt(() => this.agent.stop());
    }
    await attempt(() => run("ip", ["link", "del", this.bridge]).catch(() => undefined));
    if (errors.length > 0) throw errors[0];
  }

  /**
   * Removes whatever is left (after {@link stop} and the leak checks, which
   * report leaks; this only keeps a failed run from littering the machine):
   * tasks, containers, images and the containerd namespace, mounted network
   * namespaces, and the temp folder.
   */
  async cleanup(): Promise<void> {
    const quiet = (p: Promise<unknown>) => p.catch(() => undefined);
    for (const id of await this.containers().catch(() => [])) {
      await quiet(this.ctr("tasks", "kill", "-s", "SIGKILL", id));
      await quiet(this.ctr("tasks", "rm", "-f", id));
      await quiet(this.ctr("containers", "rm", id));
    }
    const images = (await this.ctr("images", "ls", "-q").catch(() => "")).split("\n").filter(Boolean);
    if (images.length > 0) await quiet(this.ctr("images", "rm", ...images));
    await quiet(run("ctr", ["--address", this.socket, "namespaces", "rm", this.namespace]));
    for (const ns of await this.netnsLeft()) await quiet(run("umount", [join(this.dir, "netns", ns)]));
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` every 100 ms until it is true; throws naming `what` after `timeoutMs`. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await sleep(100);
  }
}
