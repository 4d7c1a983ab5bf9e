import { execFile } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { createClient, type Client } from "@connectrpc/connect";
import { createLogger } from "@esb/common";
import {
  agentTransport,
  generateAgentTokens,
  staticTokenSource,
  writeAgentTokensFile,
} from "@esb/common/agent-credentials";
import { AgentService, type WorkerInfo } from "@esb/common/gen/esb/agent/v1/agent_pb";
import { writePrivateContainerdConfig } from "@esb/cli";
import { Controller, FolderFunctionSource, StaticAgentDirectory } from "@esb/controller";
import { stringify } from "yaml";
import { DaemonProcess, freePort, httpOk, socketAccepts } from "./daemon-process.js";
import { CHAOS_FUNCTION, CHAOS_FUNCTION_CODE, CHAOS_ROUTE } from "./chaos-function.js";

export { CHAOS_FUNCTION, CHAOS_ROUTE } from "./chaos-function.js";
import { EventRecorder } from "./event-recorder.js";

const run = promisify(execFile);

/** Root of the repository (test/dist/chaos → ../../..). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

/** Options of {@link ChaosStack}. */
export interface ChaosStackOptions {
  /** Warm workers the function keeps (provisionedConcurrency). */
  provisioned: number;
  /** Seconds an idle worker beyond the provisioned ones is kept. */
  keepWarmSeconds: number;
  /** AGENT_RESYNC_SECONDS of the agent (how soon orphans are repaired). */
  resyncSeconds: number;
  /** GATEWAY_LEASE_MS of the gateway. */
  leaseMs: number;
  /** Where the components' logs are copied before the run folder is removed (default: not kept). */
  keepLogsDir?: string;
  /** Progress lines. */
  progress: (line: string) => void;
}

/**
 * ESB as separate, killable processes, all private to one run: a containerd
 * of its own (root, state, socket under the run's temp folder), the agent
 * (`agent-daemonset/dist/main.js`, token auth, its own bridge and random
 * 10.x.y.0/24), the gateway (`gateway/dist/main.js` with a durable SQLite
 * event store), the controller in this process (folder source), and the
 * {@link EventRecorder} on the bridge's host address. {@link down} removes
 * everything, also after a failed {@link up}.
 */
export class ChaosStack {
  readonly id = randomBytes(3).toString("hex");
  readonly dir = mkdtempSync(join(tmpdir(), "esb-chaos-"));
  readonly namespace = `esbchaos${this.id}`;
  readonly bridge = `esbx${this.id}`;
  readonly subnet = `10.${randomInt(200, 250)}.${randomInt(0, 256)}.0/24`;
  /** The bridge's own address (host-local's gateway: .1), where the recorder listens. */
  readonly hostAddress = this.subnet.replace(/\.0\/24$/, ".1");
  readonly containerdSocket = join(this.dir, "containerd", "containerd.sock");
  readonly agentStateDir = join(this.dir, "agent");
  readonly netnsDir = join(this.dir, "netns");
  readonly eventStore = join(this.dir, "gateway", "events.db");
  readonly recorder = new EventRecorder();
  readonly tokens = generateAgentTokens();
  containerd!: DaemonProcess;
  agent!: DaemonProcess;
  gateway!: DaemonProcess;
  agentUrl = "";
  gatewayUrl = "";
  private recorderPort = 0;
  private controller: Controller | undefined;
  private source: FolderFunctionSource | undefined;
  private agentClient: Client<typeof AgentService> | undefined;

  constructor(private readonly options: ChaosStackOptions) {}

  /** Starts every component and waits until the function is Ready and the recorder listens. */
  async up(): Promise<void> {
    const { progress } = this.options;
    for (const d of ["agent", "gateway", "functions", "netns", "cni"]) {
      mkdirSync(join(this.dir, d), { recursive: true });
    }
    this.containerd = this.containerdProcess();
    let t = Date.now();
    await this.containerd.start();
    progress(`containerd up (${Date.now() - t} ms), socket ${this.containerdSocket}`);

    const [agentPort, metricsPort, gatewayPort] = [await freePort(), await freePort(), await freePort()];
    this.recorderPort = await freePort();
    this.agentUrl = `http://127.0.0.1:${agentPort}`;
    this.gatewayUrl = `http://127.0.0.1:${gatewayPort}`;
    t = Date.now();
    this.agent = this.agentProcess(agentPort, metricsPort);
    await this.agent.start();
    progress(`agent up (${Date.now() - t} ms) at ${this.agentUrl}, workers on ${this.bridge} ${this.subnet}`);
    this.writeManifest();
    t = Date.now();
    this.gateway = this.gatewayProcess(gatewayPort);
    await this.gateway.start();
    progress(`gateway up (${Date.now() - t} ms) at ${this.gatewayUrl}, event store ${this.eventStore}`);

    t = Date.now();
    const logger = createLogger("chaos-controller", { level: process.env.ESB_LOG_LEVEL ?? "error" });
    this.source = new FolderFunctionSource(join(this.dir, "functions"), { logger });
    this.controller = new Controller({
      source: this.source,
      agents: new StaticAgentDirectory([this.agentUrl]),
      agentToken: staticTokenSource(this.tokens.controller),
      gatewayUrl: this.gatewayUrl,
      logger,
    });
    await this.controller.start();
    await this.waitReady(600_000);
    // The bridge exists once the first worker started: now its address can be bound.
    await this.recorder.listen(this.hostAddress, this.recorderPort);
    progress(`controller: ${CHAOS_FUNCTION} Ready (${Date.now() - t} ms); recorder on ${this.recorderUrl}`);
  }

  /** URL the function POSTs Event tokens to. */
  get recorderUrl(): string {
    return `http://${this.hostAddress}:${this.recorderPort}/`;
  }

  /** The agent's view of the chaos function's workers (ListWorkers, as the controller). */
  async workers(): Promise<WorkerInfo[]> {
    this.agentClient ??= createClient(
      AgentService,
      agentTransport(this.agentUrl, staticTokenSource(this.tokens.controller)),
    );
    const res = await this.agentClient.listWorkers({}, { timeoutMs: 10_000 });
    return res.workers;
  }

  /** `ctr` in the run's containerd namespace; returns stdout. */
  async ctr(...args: string[]): Promise<string> {
    const { stdout } = await run("ctr", ["--address", this.containerdSocket, "-n", this.namespace, ...args]);
    return stdout;
  }

  /** containerd's tasks of the namespace: container id → { pid, status }. */
  async tasks(): Promise<Map<string, { pid: number; status: string }>> {
    const tasks = new Map<string, { pid: number; status: string }>();
    for (const line of (await this.ctr("tasks", "ls")).split("\n").slice(1)) {
      const [id, pid, status] = line.trim().split(/\s+/);
      if (id && status) tasks.set(id, { pid: Number(pid), status });
    }
    return tasks;
  }

  /** containerd's container ids of the namespace. */
  async containers(): Promise<string[]> {
    return (await this.ctr("containers", "ls", "-q")).split("\n").filter(Boolean);
  }

  /** Worker network namespaces mounted in the agent's NETNS_DIR (file names, `esb-<workerId>`). */
  netnsFiles(): string[] {
    return readdirSync(this.netnsDir).filter((f) => f.startsWith("esb-"));
  }

  /** IPv4 addresses host-local has allocated on the run's network. */
  ipAllocations(): string[] {
    const dir = join(this.agentStateDir, "cni", "ipam", `esb-${this.bridge}`);
    if (!existsSync(dir)) return [];
    return readdirSync(dir).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
  }

  /**
   * Destroys the function's workers (as the controller would on delete), stops
   * controller, gateway, agent and containerd, removes whatever is left (tasks,
   * containers, network namespaces, bridge, cgroups) and the temp folder.
   * Never throws; returns what failed. A second call returns the first one's result.
   */
  down(): Promise<string[]> {
    this.downOnce ??= this.tearDown();
    return this.downOnce;
  }

  private downOnce: Promise<string[]> | undefined;

  private async tearDown(): Promise<string[]> {
    const problems: string[] = [];
    const step = async (what: string, fn: () => Promise<unknown> | unknown) => {
      try {
        await fn();
      } catch (err) {
        problems.push(`${what}: ${(err as Error).message}`);
      }
    };
    const quiet = (p: Promise<unknown>) => p.catch(() => undefined);
    await step("recorder", () => this.recorder.close());
    if (this.controller) await step("controller", () => this.controller!.stop());
    if (this.gateway) await step("gateway", () => this.gateway.kill("SIGTERM"));
    if (this.agent?.pid !== undefined && this.agentClient) {
      await step("destroy workers", () =>
        this.agentClient!.destroyFunction(
          { function: { namespace: "default", name: CHAOS_FUNCTION } },
          { timeoutMs: 60_000 },
        ),
      );
    }
    if (this.agent) await step("agent", () => this.agent.kill("SIGTERM"));
    if (this.containerd?.pid !== undefined) {
      for (const id of await this.containers().catch(() => [])) {
        await quiet(this.ctr("tasks", "kill", "-s", "SIGKILL", id));
        await quiet(this.ctr("tasks", "rm", "-f", id));
        await quiet(this.ctr("containers", "rm", id));
      }
      const images = (await this.ctr("images", "ls", "-q").catch(() => "")).split("\n").filter(Boolean);
      if (images.length > 0) await quiet(this.ctr("images", "rm", ...images));
      await step("containerd", () => this.containerd.kill("SIGTERM"));
    }
    for (const ns of existsSync(this.netnsDir) ? readdirSync(this.netnsDir) : []) {
      await quiet(run("umount", [join(this.netnsDir, ns)]));
    }
    if (existsSync(`/sys/class/net/${this.bridge}`))
      await step("bridge", () => run("ip", ["link", "del", this.bridge]));
    await step("cgroups", () => removeCgroups(this.namespace));
    const keep = this.options.keepLogsDir;
    if (keep) {
      await step("keep logs", () => {
        mkdirSync(keep, { recursive: true });
        for (const f of ["agent.log", "gateway.log", "containerd/containerd.log"]) {
          if (existsSync(join(this.dir, f))) copyFileSync(join(this.dir, f), join(keep, f.replace("/", "-")));
        }
      });
    }
    await step("temp folder", () => rmSync(this.dir, { recursive: true, force: true }));
    return problems;
  }

  private containerdProcess(): DaemonProcess {
    const root = join(this.dir, "containerd");
    const config = writePrivateContainerdConfig(root, this.containerdSocket);
    return new DaemonProcess({
      name: "containerd",
      command: "containerd",
      args: ["--config", config],
      logFile: join(root, "containerd.log"),
      ready: () => socketAccepts(this.containerdSocket),
    });
  }

  private agentProcess(port: number, metricsPort: number): DaemonProcess {
    const tokensFile = join(this.dir, "agent-tokens.json");
    writeAgentTokensFile(tokensFile, this.tokens);
    return new DaemonProcess({
      name: "agent",
      command: process.execPath,
      args: [join(REPO_ROOT, "agent-daemonset", "dist", "main.js")],
      logFile: join(this.dir, "agent.log"),
      env: {
        ...process.env,
        CONTAINERD_SOCKET: this.containerdSocket,
        CONTAINERD_NAMESPACE: this.namespace,
        AGENT_HOST: "127.0.0.1",
        AGENT_PORT: String(port),
        AGENT_METRICS_PORT: String(metricsPort),
        AGENT_STATE_DIR: this.agentStateDir,
        // The inventory compares containerd, netns and IPs with ListWorkers, which does not list
        // generic sandboxes (sandbox-cold-start.test covers them): none here.
        AGENT_SANDBOX_POOL_SIZE: "0",
        AGENT_AUTH: "token",
        AGENT_TOKENS_FILE: tokensFile,
        NODE_NAME: `chaos-${this.id}`,
        CNI_BRIDGE: this.bridge,
        CNI_SUBNET: this.subnet,
        CNI_CONF_DIR: join(this.dir, "cni"),
        NETNS_DIR: this.netnsDir,
        AGENT_RESYNC_SECONDS: String(this.options.resyncSeconds),
        // Workers reach nothing but the recorder.
        WORKER_EGRESS: "deny",
        WORKER_ALLOWED_DESTINATIONS: `${this.hostAddress}:${this.recorderPort}`,
        ESB_LOG_LEVEL: process.env.ESB_LOG_LEVEL ?? "warn",
      },
      ready: () => httpOk(`http://127.0.0.1:${metricsPort}/readyz`),
      // The first start may build the nodejs24.x runtime image.
      readyTimeoutMs: 300_000,
    });
  }

  private gatewayProcess(port: number): DaemonProcess {
    const tokenFile = join(this.dir, "gateway.token");
    writeFileSync(tokenFile, this.tokens.gateway, { mode: 0o600 });
    return new DaemonProcess({
      name: "gateway",
      command: process.execPath,
      args: [join(REPO_ROOT, "gateway", "dist", "main.js")],
      logFile: join(this.dir, "gateway.log"),
      env: {
        ...process.env,
        GATEWAY_PORT: String(port),
        GATEWAY_HOST: "127.0.0.1",
        AGENT_URLS: this.agentUrl,
        AGENT_TOKEN_FILE: tokenFile,
        FUNCTIONS_DIR: join(this.dir, "functions"),
        GATEWAY_EVENT_STORE: this.eventStore,
        GATEWAY_LEASE_MS: String(this.options.leaseMs),
        ESB_LOG_LEVEL: process.env.ESB_LOG_LEVEL ?? "warn",
      },
      ready: () => httpOk(`${this.gatewayUrl}/readyz`),
    });
  }

  private writeManifest(): void {
    const manifest = {
      apiVersion: "esb.dev/v1alpha1",
      kind: "LambdaFunction",
      metadata: { name: CHAOS_FUNCTION, namespace: "default" },
      spec: {
        runtime: "nodejs24.x",
        handler: "index.handler",
        code: { inline: { "index.mjs": CHAOS_FUNCTION_CODE } },
        memorySize: 128,
        timeout: 10,
        provisionedConcurrency: this.options.provisioned,
        scaling: { pauseAfterMs: 50, keepWarmSeconds: this.options.keepWarmSeconds },
        environment: { variables: { RECORDER_URL: this.recorderUrl } },
        http: { routes: [{ path: CHAOS_ROUTE, methods: ["POST"] }] },
      },
    };
    writeFileSync(join(this.dir, "functions", `${CHAOS_FUNCTION}.yaml`), stringify(manifest));
  }

  private async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const fn = this.source?.get(`default/${CHAOS_FUNCTION}`);
      const ready = fn?.status?.conditions?.find((c) => c.type === "Ready");
      if (ready?.status === "True") return;
      if (Date.now() > deadline) {
        throw new Error(
          `${CHAOS_FUNCTION} not Ready after ${timeoutMs} ms: ${ready?.reason} ${ready?.message}`,
        );
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** Removes the (empty) per-namespace cgroup folders runc left under every v1 hierarchy. */
async function removeCgroups(namespace: string): Promise<void> {
  for (const h of ["memory", "cpu,cpuacct", "freezer", "pids", "blkio", "devices", "cpuset", "systemd"]) {
    const dir = join("/sys/fs/cgroup", h, namespace);
    if (existsSync(dir))
      await run("find", [dir, "-depth", "-type", "d", "-exec", "rmdir", "{}", ";"]).catch(() => undefined);
  }
}
