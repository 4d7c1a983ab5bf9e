import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { create } from "@bufbuild/protobuf";
import { createLogger, type Logger } from "@esb/common";
import { FunctionSpecSchema, type FunctionSpec } from "@esb/common/gen/esb/agent/v1/agent_pb";
import { generateAgentTokens } from "@esb/common/agent-credentials";
import { AgentMetrics } from "@esb/agent/agent-metrics";
import { DEFAULT_SANDBOX_POOL_SIZE } from "@esb/agent/agent-config";
import { AgentServer } from "@esb/agent/agent-server";
import { StaticTokenAuthenticator } from "@esb/agent/auth/static-token-authenticator";
import { CniNetwork } from "@esb/agent/network/cni-network";
import { LocalBuildImageResolver, NodeAgent } from "@esb/agent/node-agent";
import { ContainerdRuntime } from "@esb/agent/runtime/containerd-runtime";
import { ColdStartBreakdown } from "./cold-start-breakdown.js";

const run = promisify(execFile);

/** Root of the repository (bench/dist/… → ../..). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Namespace of every bench function (the gateway's default namespace). */
export const BENCH_NAMESPACE = "default";

/** The no-op Node function every Node scenario runs. */
export const NODE_NOOP_CODE = 'export const handler = async () => ({ ok: true, bench: "noop" });\n';
/** The Python no-op function (app.handler). */
export const PYTHON_NOOP_CODE = 'def handler(event, context):\n    return {"ok": True, "bench": "noop"}\n';

/** The `provided` shell function: the Lambda Runtime API loop in sh, answering `{"ok":true}`. */
export const SHELL_BOOTSTRAP = `#!/bin/sh
set -eu
api="http://\${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  headers=$(mktemp)
  wget -q -S -O /dev/null "$api/invocation/next" 2>"$headers"
  id=$(sed -n 's/.*[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: *\\([^ \\r]*\\).*/\\1/p' "$headers" | head -n 1)
  rm -f "$headers"
  wget -q -O /dev/null --post-data '{"ok":true}' "$api/invocation/$id/response"
done
`;

/** Scaling of a bench function: `pauseAfterMs` decides whether idle workers freeze during a scenario. */
export interface BenchFunctionOptions {
  name: string;
  runtime?: "nodejs24.x" | "provided" | "python3.13";
  /** Container image instead of a managed runtime. */
  image?: string;
  pauseAfterMs?: number;
  provisioned?: number;
}

/** Options of {@link BenchEnvironment}. */
export interface BenchEnvironmentOptions {
  /** Also start Podman's Docker-compatible API (docker-mode rows). */
  podman: boolean;
  /** Start the real gateway (gateway/dist/main.js) in its own process. */
  gateway: boolean;
  /** Also start etcd + kube-apiserver (ESB_TEST_KUBECONFIG in the process environment). */
  kube?: boolean;
  logger?: Logger;
}

/**
 * Everything a bench run needs, all private to the run and removed by
 * {@link down}: its own containerd + registry (+ podman) from
 * `hack/dev-env.sh` under a temp folder, a CNI bridge and /24 subnet unique to
 * the run, the real agent (NodeAgent on ContainerdRuntime, building the
 * runtime images locally) serving AgentService on loopback, and the real
 * gateway process pointed at that agent with a folder of manifests.
 */
export class BenchEnvironment {
  readonly id = randomBytes(3).toString("hex");
  readonly dir: string;
  readonly bridge = `esbb${this.id}`;
  readonly subnet = `10.${210 + (parseInt(this.id.slice(0, 2), 16) % 40)}.${parseInt(this.id.slice(2, 4), 16)}.0/24`;
  /** containerd namespace; also the cgroup parent of every worker (`/<namespace>/<id>`). */
  readonly namespace = `esbbench${this.id}`;
  readonly nodeName = `bench-${this.id}`;
  readonly log: Logger;
  env: Record<string, string> = {};
  /** The controller's token for the run's agent (set by {@link up}). */
  controllerToken = "";
  network?: CniNetwork;
  agent?: NodeAgent;
  agentUrl = "";
  gatewayUrl = "";
  /** Where each worker start's time went (cold-start rows). */
  readonly breakdown = new ColdStartBreakdown();
  private server?: AgentServer;
  private gatewayProc?: ChildProcess;
  private readonly functionsDir: string;
  private devEnvUp = false;

  constructor(private readonly opts: BenchEnvironmentOptions) {
    this.log = opts.logger ?? createLogger("bench");
    this.dir = join("/tmp", `esb-bench-${this.id}`);
    this.functionsDir = join(this.dir, "functions");
  }

  /** Processes of the running gateway: the members of a multi-process one (GATEWAY_PROCESSES), else 1. */
  gatewayProcesses(): number {
    const pid = this.gatewayProc?.pid;
    if (pid === undefined) return 0;
    try {
      const members = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim();
      return Math.max(1, members ? members.split(/\s+/).length : 0);
    } catch {
      return 1;
    }
  }

  /** True when the gateway process is running. */
  get hasGateway(): boolean {
    return this.gatewayUrl !== "";
  }

  /** Starts containerd, registry (and podman), the agent and the gateway. */
  async up(): Promise<void> {
    mkdirSync(this.functionsDir, { recursive: true });
    const only = [
      "containerd",
      "registry",
      ...(this.opts.podman ? ["podman"] : []),
      ...(this.opts.kube ? ["kube"] : []),
    ].join(",");
    this.devEnvUp = true;
    await run(join(REPO_ROOT, "hack", "dev-env.sh"), ["up", "--dir", join(this.dir, "env"), "--only", only], {
      maxBuffer: 1 << 20,
    });
    for (const line of readFileSync(join(this.dir, "env", "env.sh"), "utf8").split("\n")) {
      const m = /^export ([A-Z_]+)=(.*)$/.exec(line.trim());
      if (m) this.env[m[1]] = m[2];
    }
    this.network = new CniNetwork({
      mode: "bridge",
      bridgeName: this.bridge,
      subnet: this.subnet,
      stateDir: join(this.dir, "cni"),
      netnsDir: join(this.dir, "netns"),
    });
    const runtime = new ContainerdRuntime({
      socketPath: this.env.ESB_TEST_CONTAINERD_SOCKET,
      namespace: this.namespace,
      network: this.network,
      stateDir: join(this.dir, "runtime"),
      insecureRegistries: [this.env.ESB_TEST_REGISTRY],
      onStartPhases: this.breakdown.onStartPhases,
    });
    runtime.onWorkerLog(this.breakdown.onWorkerLog);
    const metrics = new AgentMetrics();
    this.agent = new NodeAgent({
      nodeName: this.nodeName,
      runtime,
      network: this.network,
      stateDir: join(this.dir, "agent"),
      imageResolver: new LocalBuildImageResolver(),
      onPoolEvent: metrics.record,
      // Standalone-like: the custom-runtime rows stage their bootstrap in a folder.
      allowCodeHostPath: true,
      // As the agent's default (AGENT_SANDBOX_POOL_SIZE): the cold-start rows use and compare it.
      sandboxPoolSize: DEFAULT_SANDBOX_POOL_SIZE,
    });
    metrics.attach(this.agent);
    await this.agent.start();
    // The gateway process presents the gateway's token, read from a file only root reads.
    const tokens = generateAgentTokens();
    this.controllerToken = tokens.controller;
    writeFileSync(join(this.dir, "gateway.token"), tokens.gateway, { mode: 0o600 });
    this.server = new AgentServer({
      agent: this.agent,
      metrics,
      authenticator: new StaticTokenAuthenticator(tokens),
      port: 0,
      metricsPort: 0,
      host: "127.0.0.1",
    });
    const { port } = await this.server.start();
    this.agentUrl = `http://127.0.0.1:${port}`;
    if (this.opts.gateway) await this.startGateway();
  }

  /**
   * Path of the gateway's entry point; the gateway rows need it built.
   * `ESB_BENCH_GATEWAY_MAIN` names another build (e.g. an earlier commit's, for
   * before/after figures in one session).
   */
  static gatewayMain(): string {
    return process.env.ESB_BENCH_GATEWAY_MAIN || join(REPO_ROOT, "gateway", "dist", "main.js");
  }

  private async startGateway(): Promise<void> {
    const port = await freePort();
    const logFd = openSync(join(this.dir, "gateway.log"), "a");
    this.gatewayProc = spawn(process.execPath, [BenchEnvironment.gatewayMain()], {
      stdio: ["ignore", logFd, logFd],
      env: {
        ...process.env,
        GATEWAY_PORT: String(port),
        GATEWAY_HOST: "127.0.0.1",
        AGENT_URLS: this.agentUrl,
        AGENT_TOKEN_FILE: join(this.dir, "gateway.token"),
        FUNCTIONS_DIR: this.functionsDir,
        GATEWAY_NAMESPACE: BENCH_NAMESPACE,
        ESB_LOG_LEVEL: process.env.ESB_LOG_LEVEL ?? "warn",
      },
    });
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (this.gatewayProc.exitCode !== null) {
        throw new Error(
          `gateway exited with ${this.gatewayProc.exitCode}; see ${join(this.dir, "gateway.log")}`,
        );
      }
      try {
        const res = await fetch(`${url}/readyz`);
        await res.text();
        if (res.ok) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline)
        throw new Error(`gateway not ready within 30 s; see ${join(this.dir, "gateway.log")}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    this.gatewayUrl = url;
  }

  /**
   * Prepares a bench function on the agent (as the controller would) and
   * writes its manifest for the gateway. Node functions run
   * {@link NODE_NOOP_CODE}; `provided` ones {@link SHELL_BOOTSTRAP}, staged
   * in a folder with the executable bit (hostPath code).
   */
  async prepareFunction(o: BenchFunctionOptions, agent: NodeAgent = this.agent!): Promise<void> {
    const spec = this.functionSpec(o);
    await agent.prepareFunction(spec);
    await this.writeManifest(o);
  }

  /** The agent FunctionSpec of a bench function. */
  functionSpec(o: BenchFunctionOptions): FunctionSpec {
    const runtime = o.image ? "" : (o.runtime ?? "nodejs24.x");
    let code: { files: Record<string, Uint8Array>; hostPath: string } | undefined;
    if (runtime === "provided") {
      const dir = join(this.dir, "code", o.name);
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      chmodSync(dir, 0o755);
      writeFileSync(join(dir, "bootstrap"), SHELL_BOOTSTRAP, { mode: 0o755 });
      code = { files: {}, hostPath: dir };
    } else if (runtime === "python3.13") {
      code = { files: { "app.py": Buffer.from(PYTHON_NOOP_CODE) }, hostPath: "" };
    } else if (runtime) {
      code = { files: { "index.mjs": Buffer.from(NODE_NOOP_CODE) }, hostPath: "" };
    }
    return create(FunctionSpecSchema, {
      ref: { namespace: BENCH_NAMESPACE, name: o.name },
      generation: 1n,
      revision: `bench-${this.id}`,
      image: o.image ?? "",
      runtime,
      handler:
        runtime === "provided"
          ? "function.handler"
          : runtime === "python3.13"
            ? "app.handler"
            : runtime
              ? "index.handler"
              : "",
      code,
      memorySizeMb: 128,
      timeoutSeconds: 10,
      ephemeralStorageMb: 64,
      provisionedConcurrency: o.provisioned ?? 0,
      scaling: { pauseAfterMs: o.pauseAfterMs ?? 50, keepWarmSeconds: 900 },
    });
  }

  private async writeManifest(o: BenchFunctionOptions): Promise<void> {
    const spec = o.image
      ? `  image: ${o.image}\n`
      : o.runtime === "python3.13"
        ? `  runtime: python3.13\n  handler: app.handler\n  code:\n    inline:\n      app.py: ${JSON.stringify(PYTHON_NOOP_CODE)}\n`
        : `  runtime: ${o.runtime ?? "nodejs24.x"}\n  handler: index.handler\n  code:\n    inline:\n      index.mjs: ${JSON.stringify(NODE_NOOP_CODE)}\n`;
    writeFileSync(
      join(this.functionsDir, `${o.name}.yaml`),
      `apiVersion: esb.dev/v1alpha1\nkind: LambdaFunction\nmetadata:\n  name: ${o.name}\n  namespace: ${BENCH_NAMESPACE}\nspec:\n${spec}  timeout: 10\n`,
    );
    // The gateway re-reads the folder 100 ms after a change.
    if (this.hasGateway) await new Promise((r) => setTimeout(r, 400));
  }

  /** Destroys a function's workers on the agent. */
  async destroyFunction(name: string, agent: NodeAgent = this.agent!): Promise<void> {
    await agent.destroyFunction({ namespace: BENCH_NAMESPACE, name });
    rmSync(join(this.functionsDir, `${name}.yaml`), { force: true });
  }

  /**
   * Stops and removes everything this run started: gateway, workers, agent,
   * network allocations, bridge, containerd/registry/podman, temp folder.
   * Safe to call twice and after a partial {@link up}.
   */
  async down(): Promise<void> {
    const step = async (what: string, fn: () => Promise<unknown> | unknown) => {
      try {
        await fn();
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, `cleanup: ${what} failed`);
      }
    };
    if (this.gatewayProc && this.gatewayProc.exitCode === null) {
      const proc = this.gatewayProc;
      await step("gateway", async () => {
        const exited = new Promise((r) => proc.once("exit", r));
        proc.kill("SIGTERM");
        const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(t);
      });
    }
    this.gatewayUrl = "";
    if (this.agent) {
      const agent = this.agent;
      await step("functions", async () => {
        for (const p of agent.pools()) await agent.destroyFunction(p.ref);
      });
      await step("agent server", () => this.server?.stop(1000));
      await step("agent", () => agent.close());
      this.agent = undefined;
    }
    if (this.network) {
      const network = this.network;
      await step("network", async () => {
        for (const id of await network.list()) await network.detach(id);
      });
      this.network = undefined;
    }
    await step("bridge", () => {
      if (existsSync(`/sys/class/net/${this.bridge}`))
        execFileSync("ip", ["link", "del", this.bridge], { stdio: "ignore" });
    });
    if (this.devEnvUp) {
      await step("dev-env", () =>
        run(join(REPO_ROOT, "hack", "dev-env.sh"), ["down", "--dir", join(this.dir, "env")]),
      );
      this.devEnvUp = false;
    }
    await step("cgroups", () => removeCgroups(this.namespace));
    await step("temp folder", () => rmSync(this.dir, { recursive: true, force: true }));
  }
}

/** Removes the (empty) per-namespace cgroup folders runc left under every v1 hierarchy. */
function removeCgroups(namespace: string): void {
  for (const h of [
    "memory",
    "cpu,cpuacct",
    "cpuacct",
    "cpu",
    "freezer",
    "pids",
    "blkio",
    "devices",
    "cpuset",
    "systemd",
  ]) {
    const dir = join("/sys/fs/cgroup", h, namespace);
    if (!existsSync(dir)) continue;
    try {
      execFileSync("find", [dir, "-depth", "-type", "d", "-exec", "rmdir", "{}", ";"], { stdio: "ignore" });
    } catch {
      // busy or already gone
    }
  }
}

/** A free TCP port on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolvePort(port));
    });
  });
}
