#!/usr/bin/env node
import { MetricsAccess } from "@esb/common/metrics-access";
import { readFileSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createLogger } from "@esb/common";
import { KubeConfig } from "@kubernetes/client-node";
import {
  AGENT_ENV_HELP,
  AgentConfigError,
  DEFAULT_RESYNC_SECONDS,
  DEFAULT_SANDBOX_POOL_SIZE,
  loadAgentConfig,
  type AgentConfig,
} from "./agent-config.js";
import { AgentMetrics } from "./agent-metrics.js";
import { AgentResync } from "./agent-resync.js";
import { AgentServer } from "./agent-server.js";
import type { AgentAuthenticator } from "./auth/agent-auth.js";
import { StaticTokenAuthenticator } from "./auth/static-token-authenticator.js";
import { TokenReviewAuthenticator } from "./auth/token-review-authenticator.js";
import { CniNetwork } from "./network/cni-network.js";
import { WorkerFirewall } from "./network/worker-firewall.js";
import { WorkerLogShipping } from "./logs/worker-log-shipping.js";
import { NodeAgent, functionKey } from "./node-agent.js";
import { createRuntimeImageResolver } from "./runtime-image-resolver.js";
import { ContainerdRuntime } from "./runtime/containerd-runtime.js";
import { DockerRuntime } from "./runtime/docker-runtime.js";
import type { Runtime } from "./runtime/runtime.js";
import type { WorkerNetwork } from "./network/worker-network.js";

/** A program the agent executes, looked up on PATH. */
export interface AgentProgram {
  /** The name on PATH. */
  name: string;
  /** Which code runs it, with the arguments the program must support. */
  usedBy: string;
}

/**
 * Every external program the agent (with the containerd runtime) executes,
 * directly or through the CNI plugins it runs. The agent image carries each of
 * them (runtime/src/image/component-image-builder.ts reads this list when it
 * builds the image) and test/src/install/component-images.test.ts runs each one
 * inside the image. `mount` is not among them: `unshare --net=FILE` bind-mounts
 * the namespace itself. (Standalone `esb up` without prebuilt runtime images also
 * runs `ldd` to build them, see LocalBuildImageResolver; the image does not.)
 */
export const AGENT_PROGRAMS: readonly AgentProgram[] = [
  {
    name: "unshare",
    usedBy:
      "network/cni-network.ts: `unshare --net=<netns file> ip link set lo up` makes a worker's network namespace",
  },
  { name: "ip", usedBy: "network/cni-network.ts, inside unshare: `ip link set lo up`" },
  {
    name: "umount",
    usedBy: "network/cni-network.ts: `umount <netns file>` removes a worker's network namespace",
  },
  {
    name: "iptables",
    usedBy:
      "network/cni-network.ts (`iptables -t nat -S|-D|-F|-X`) and the CNI bridge (ipMasq) and portmap plugins (`iptables --version`, `-t nat -N|-A|-C|-D|-S`)",
  },
  {
    name: "nsenter",
    usedBy:
      "network/worker-firewall.ts: `nsenter --net=<netns file> iptables-restore|ip6tables-restore -w 5` installs a worker's isolation rules",
  },
  {
    name: "iptables-restore",
    usedBy: "network/worker-firewall.ts, inside nsenter: a worker's IPv4 filter table (conntrack, REJECT)",
  },
  {
    name: "ip6tables-restore",
    usedBy:
      "network/worker-firewall.ts, inside nsenter: a worker's IPv6 filter table (loopback only, REJECT)",
  },
  {
    name: "mkfifo",
    usedBy: "containerd/task-log-pipes.ts: `mkfifo -m 600 <file>` for a worker's stdout and stderr",
  },
];

/** A started agent: its parts, the bound ports, and how to stop it. */
export interface RunningAgent {
  agent: NodeAgent;
  server: AgentServer;
  /** Worker output as records (function, request id…), shipped to the log store when one is configured. */
  logs: WorkerLogShipping;
  /** The periodic resync against containerd and CNI (running unless AGENT_RESYNC_SECONDS is 0). */
  resync: AgentResync;
  port: number;
  metricsPort: number;
  /** Stops serving and closes the runtime connection; workers are kept for re-adoption. */
  stop(): Promise<void>;
}

/** Builds the runtime, network, node agent and servers from `config` and starts them. */
export async function startAgent(config: AgentConfig): Promise<RunningAgent> {
  const log = createLogger("agent");
  const metrics = new AgentMetrics();
  let runtime: Runtime;
  let network: WorkerNetwork | undefined;
  if (config.runtime === "containerd") {
    network = new CniNetwork({
      mode: config.cniMode,
      bridgeName: config.cniBridge,
      subnet: config.cniSubnet,
      stateDir: join(config.stateDir, "cni"),
      cniBinDir: config.cniBinDir,
      confDir: config.cniConfDir,
      netnsDir: config.netnsDir,
      firewall: new WorkerFirewall({
        egress: config.workerNetwork?.egress,
        allowedDestinations: config.workerNetwork?.allowedDestinations,
        deniedDestinations: config.workerNetwork?.deniedDestinations,
      }),
    });
    runtime = new ContainerdRuntime({
      socketPath: config.containerdSocket,
      namespace: config.containerdNamespace,
      cgroupParent: config.workerCgroupParent,
      network,
      stateDir: join(config.stateDir, "containerd"),
      insecureRegistries: config.insecureRegistries,
      onRemovalError: metrics.recordRemovalFailure,
      onStartPhases: metrics.recordStartPhases,
    });
  } else {
    runtime = new DockerRuntime({
      socketPath: config.dockerSocket,
      owner: config.nodeName,
      // Podman reads the seccomp profile from a file: keep it in the agent's own state, not /tmp.
      seccompProfileDir: join(config.stateDir, "seccomp"),
      // Workers' /tmp folders: on the node's disk (the engine must see the same path).
      stateDir: join(config.stateDir, "docker"),
    });
    log.warn("AGENT_RUNTIME=docker: workers are not isolated from each other or from the node's network");
  }
  runtime.onWorkerLog(metrics.recordWorkerLog);
  const agent = new NodeAgent({
    nodeName: config.nodeName,
    runtime,
    network,
    stateDir: config.stateDir,
    region: config.region,
    workerAws: config.workerAws,
    memoryCapacityMb: config.memoryCapacityMb,
    maxConcurrentStarts: config.maxConcurrentStarts,
    sandboxPoolSize: config.sandboxPoolSize ?? DEFAULT_SANDBOX_POOL_SIZE,
    onSandboxEvent: metrics.recordSandbox,
    imageResolver: createRuntimeImageResolver(config, log),
    onPoolEvent: metrics.record,
    allowCodeHostPath: config.auth.mode === "token",
  });
  metrics.attach(agent);
  // Subscribed before the agent starts, so that the output of re-adopted workers is not missed.
  const logs = new WorkerLogShipping({
    runtime,
    node: config.nodeName,
    functionOf: (id) => {
      const w = agent.listWorkers().find((x) => x.workerId === id);
      return w && functionKey(w.ref);
    },
    config: config.logs,
    registry: metrics.registry,
    logger: log,
  });
  const server = new AgentServer({
    agent,
    metrics,
    authenticator: createAuthenticator(config),
    port: config.port,
    metricsPort: config.metricsPort,
    host: config.host,
    metricsAccess: new MetricsAccess(config.metricsAuth ?? "local"),
  });
  // Listen first so that /healthz answers while workers are re-adopted; /readyz waits for the agent.
  const ports = await server.start();
  try {
    // Workers kept from the previous agent get the current network policy before they are re-adopted.
    if (network instanceof CniNetwork) await network.reapplyFirewall();
    await agent.start();
  } catch (err) {
    await server.stop(0);
    await logs.close(0);
    throw err;
  }
  // After start: the start itself resyncs (and re-adopts); from then on, this keeps the node repaired.
  const resync = new AgentResync({
    agent,
    runtime,
    network,
    intervalMs: (config.resyncSeconds ?? DEFAULT_RESYNC_SECONDS) * 1000,
    logger: log,
    onReport: metrics.recordResync,
    onFailure: metrics.recordResyncFailure,
  });
  resync.start();
  log.info({ node: config.nodeName, runtime: runtime.name, ...ports, logs: config.logs?.url }, "agent ready");
  return {
    agent,
    server,
    logs,
    resync,
    ...ports,
    async stop() {
      await resync.stop();
      await server.stop();
      await agent.close();
      // Last: the workers' final lines were read before the runtime closed.
      await logs.close();
    },
  };
}

/** The authenticator that {@link AgentConfig.auth} names. */
export function createAuthenticator(config: AgentConfig): AgentAuthenticator {
  const auth = config.auth;
  if (auth.mode === "token") return StaticTokenAuthenticator.fromFile(auth.tokensFile);
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromDefault();
  return new TokenReviewAuthenticator({
    kubeConfig,
    audience: auth.audience,
    controllerUsers: auth.controllerUsers,
    gatewayUsers: auth.gatewayUsers,
  });
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

function usage(): string {
  const rows = AGENT_ENV_HELP.map(([k, v]) => `  ${k.padEnd(22)} ${v}`).join("\n");
  return `esb-agent ${version()}: ESB node agent (AgentService on gRPC; workers on containerd or Docker)

Usage: esb-agent [--help] [--version]

Configuration (environment):
${rows}
`;
}

async function main(argv: string[]): Promise<void> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(usage());
    return;
  }
  if (argv.includes("--version")) {
    process.stdout.write(`${version()}\n`);
    return;
  }
  const unknown = argv.filter((a) => a.startsWith("-"));
  if (unknown.length) {
    process.stderr.write(`unknown option ${unknown[0]}\n\n${usage()}`);
    process.exitCode = 2;
    return;
  }
  const log = createLogger("agent");
  let config: AgentConfig;
  try {
    config = loadAgentConfig();
  } catch (err) {
    if (err instanceof AgentConfigError) {
      process.stderr.write(`esb-agent: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw err;
  }
  const running = await startAgent(config);
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "stopping: workers are kept for the next agent");
    running.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err: (err as Error).message }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
}

const invokedDirectly =
  process.argv[1] && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
if (invokedDirectly) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    createLogger("agent").fatal({ err: (err as Error).message }, "agent failed");
    process.exit(1);
  });
}
