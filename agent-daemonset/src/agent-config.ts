import { metricsAuthMode, type MetricsAuthMode } from "@esb/common/metrics-access";
import { existsSync } from "node:fs";
import { hostname } from "node:os";
import { AGENT_TOKEN_AUDIENCE } from "@esb/common/agent-credentials";
import { PREBUILT_RUNTIME_IMAGES_DIR } from "@esb/runtime/image/runtime-image-folder";
import { parseDestinations, type Destination, type WorkerEgress } from "./network/worker-firewall.js";
import {
  LOG_SHIPPING_ENV_HELP,
  logShippingConfig,
  type LogShippingConfig,
} from "./logs/log-shipping-config.js";
import { WORKER_AWS_ENV_HELP, loadWorkerAwsEnv, type WorkerAwsEnv } from "./worker-aws-env.js";

/** The agent's configuration, read from the environment by {@link loadAgentConfig}. */
export interface AgentConfig {
  /** Container engine: `containerd` (default) or `docker`. */
  runtime: "containerd" | "docker";
  containerdSocket: string;
  containerdNamespace: string;
  /** Parent cgroup of the workers (containerd runtime), e.g. `/kubepods/esb`; default `/<namespace>`. */
  workerCgroupParent?: string;
  /** Docker (or Podman) API socket for the docker runtime. */
  dockerSocket: string;
  /** AgentService port (gRPC + Connect over HTTP/2 cleartext). */
  port: number;
  /** /healthz, /readyz, /metrics port. */
  metricsPort: number;
  /** Listen address. */
  host: string;
  nodeName: string;
  stateDir: string;
  cniMode: "bridge" | "cluster";
  cniBridge: string;
  cniSubnet: string;
  cniBinDir: string;
  cniConfDir: string;
  netnsDir: string;
  /** Registries reached over plain HTTP (host[:port]). */
  insecureRegistries: string[];
  /** AWS_REGION seen by workers. */
  region: string;
  /** Memory offered to workers (MiB); undefined = the machine's memory. */
  memoryCapacityMb?: number;
  /** Most workers starting at once; undefined = the CPU count (at least 2). */
  maxConcurrentStarts?: number;
  /** Generic sandboxes kept ready per sandbox template (containerd; 0: off); unset: {@link DEFAULT_SANDBOX_POOL_SIZE}. */
  sandboxPoolSize?: number;
  /** Managed-runtime image template (`…:{runtime}`), pulled; wins over {@link runtimeImagesDir}. */
  runtimeImage?: string;
  /**
   * Folder of prebuilt managed-runtime images (one OCI layout per runtime, as
   * the agent image carries in /usr/share/esb/runtime-images), imported into
   * containerd. Undefined (and no `runtimeImage`) = build them on this node.
   */
  runtimeImagesDir?: string;
  /** How AgentService callers are authenticated; the agent never serves anonymous calls. */
  auth: AgentAuthConfig;
  /**
   * What workers may reach (containerd runtime; enforced in each worker's network
   * namespace). {@link loadAgentConfig} always sets it; absent = the defaults
   * (egress allowed, no extra destinations), never "no isolation".
   */
  workerNetwork?: WorkerNetworkConfig;
  /**
   * Seconds between two resyncs of the agent against containerd and CNI (orphaned
   * workers and networks removed, lost workers replaced); 0 turns them off.
   * Undefined = 60 ({@link DEFAULT_RESYNC_SECONDS}).
   */
  resyncSeconds?: number;
  /** Who may read /metrics ({@link MetricsAuthMode}, `ESB_METRICS_AUTH`); undefined = `local`. */
  metricsAuth?: MetricsAuthMode;
  /** Where worker output is shipped (VictoriaLogs); undefined = not shipped. */
  logs?: LogShippingConfig;
  /** Data-service endpoints and credentials injected into workers (WORKER_AWS_*); undefined = none. */
  workerAws?: WorkerAwsEnv;
}

/** Default of {@link AgentConfig.resyncSeconds}. */
export const DEFAULT_RESYNC_SECONDS = 60;
/** Generic sandboxes kept ready per sandbox template when AGENT_SANDBOX_POOL_SIZE is unset. */
export const DEFAULT_SANDBOX_POOL_SIZE = 2;

/**
 * Worker network policy. Workers never reach other workers, the node, private
 * and link-local ranges (the metadata endpoint) or `deniedDestinations`, except
 * the `allowedDestinations`; the public internet only when `egress` is `allow`.
 */
export interface WorkerNetworkConfig {
  /** WORKER_EGRESS: `allow` (default, like Lambda outside a VPC) or `deny`. */
  egress: WorkerEgress;
  /** WORKER_ALLOWED_DESTINATIONS: `ipv4[/prefix][:port]` entries workers may always reach (data services). */
  allowedDestinations: Destination[];
  /** WORKER_DENIED_DESTINATIONS: more IPv4 CIDRs workers must not reach (e.g. a public API server address). */
  deniedDestinations: string[];
}

/**
 * Standalone (`token`): one secret token per role from a file readable by its
 * owner only. Kubernetes (`kubernetes`): projected ServiceAccount tokens checked
 * with TokenReview, mapped to roles by user name. Function code from a host
 * folder (`code.hostPath`) is accepted in `token` mode only.
 */
export type AgentAuthConfig =
  | { mode: "token"; tokensFile: string }
  | { mode: "kubernetes"; audience: string; controllerUsers: string[]; gatewayUsers: string[] };

/** Bad agent configuration; the message names the variable and what is expected. */
export class AgentConfigError extends Error {
  override name = "AgentConfigError";
}

/** Environment variables the agent reads, with their meaning (for --help). */
export const AGENT_ENV_HELP: [string, string][] = [
  ["AGENT_RUNTIME", "containerd (default) or docker"],
  ["CONTAINERD_SOCKET", "containerd gRPC socket (default /run/containerd/containerd.sock)"],
  ["CONTAINERD_NAMESPACE", "containerd namespace (default esb)"],
  ["WORKER_CGROUP_PARENT", "parent cgroup of the workers, absolute (default /<CONTAINERD_NAMESPACE>)"],
  ["DOCKER_SOCKET", "Docker/Podman API socket for AGENT_RUNTIME=docker (default /var/run/docker.sock)"],
  ["AGENT_PORT", "AgentService port, gRPC and Connect over h2c (default 50051)"],
  ["AGENT_METRICS_PORT", "/healthz /readyz /metrics port (default 9090)"],
  ["AGENT_HOST", "listen address (default 0.0.0.0)"],
  ["NODE_NAME", "node name, owner label of workers (default hostname)"],
  ["AGENT_STATE_DIR", "persisted specs, code, CNI state (default /var/lib/esb/agent)"],
  ["CNI_MODE", "bridge (default: ESB's own bridge) or cluster (node's /etc/cni/net.d)"],
  ["CNI_BRIDGE", "bridge name in bridge mode (default esb-cni0)"],
  ["CNI_SUBNET", "worker subnet in bridge mode (default 10.88.0.0/16)"],
  ["CNI_BIN_DIR", "CNI plugin folder (default /usr/lib/cni, then /opt/cni/bin)"],
  ["CNI_CONF_DIR", "CNI configuration folder in cluster mode (default /etc/cni/net.d)"],
  ["NETNS_DIR", "where worker network namespaces are mounted (default /run/netns)"],
  ["INSECURE_REGISTRIES", "comma-separated host:port reached over plain HTTP"],
  ["AWS_REGION", "region seen by functions (default us-east-1)"],
  ["AGENT_MEMORY_MB", "memory offered to workers in MiB (default: all of the machine's)"],
  [
    "AGENT_RESYNC_SECONDS",
    `seconds between resyncs against containerd and CNI, which repair orphans and lost workers (default ${DEFAULT_RESYNC_SECONDS}; 0: off)`,
  ],
  ["AGENT_MAX_CONCURRENT_STARTS", "most workers starting at once (default: the CPU count, at least 2)"],
  [
    "AGENT_SANDBOX_POOL_SIZE",
    `generic sandboxes kept ready per runtime image and memory size for fast cold starts (containerd; default ${DEFAULT_SANDBOX_POOL_SIZE}; 0: off)`,
  ],
  [
    "RUNTIME_IMAGE",
    "managed-runtime image template, e.g. registry:5000/esb/runtime:{runtime}; wins over RUNTIME_IMAGES_DIR",
  ],
  [
    "RUNTIME_IMAGES_DIR",
    `prebuilt managed-runtime images, one OCI layout per runtime (default ${PREBUILT_RUNTIME_IMAGES_DIR} when it exists, as in the agent image; else they are built on this node)`,
  ],
  ["AGENT_AUTH", "token (default outside Kubernetes) or kubernetes (default in a pod: TokenReview)"],
  ["AGENT_TOKENS_FILE", "token mode: JSON {controller, gateway} tokens, mode 600 (esb up writes it)"],
  ["AGENT_AUTH_AUDIENCE", `kubernetes mode: audience of callers' tokens (default ${AGENT_TOKEN_AUDIENCE})`],
  [
    "AGENT_CONTROLLER_USERS",
    "kubernetes mode: comma-separated user names of the controller (system:serviceaccount:NS:NAME)",
  ],
  ["AGENT_GATEWAY_USERS", "kubernetes mode: comma-separated user names of the gateway"],
  ["WORKER_EGRESS", "allow (default: workers reach the public internet) or deny"],
  [
    "WORKER_ALLOWED_DESTINATIONS",
    "comma-separated ipv4[/prefix][:port] workers may reach although private (data services), e.g. 10.0.5.20:5432",
  ],
  [
    "WORKER_DENIED_DESTINATIONS",
    "comma-separated IPv4 CIDRs workers must not reach besides private ranges (e.g. a public API server)",
  ],
  ...LOG_SHIPPING_ENV_HELP,
  ...WORKER_AWS_ENV_HELP,
];

function port(env: NodeJS.ProcessEnv, name: string, dflt: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new AgentConfigError(`${name}="${raw}" is not a port number (0–65535)`);
  return n;
}

function oneOf<T extends string>(env: NodeJS.ProcessEnv, name: string, allowed: readonly T[], dflt: T): T {
  const raw = env[name];
  if (raw === undefined || raw === "") return dflt;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new AgentConfigError(`${name}="${raw}" must be one of: ${allowed.join(", ")}`);
  }
  return raw as T;
}

/**
 * Reads and validates the agent's configuration; throws {@link AgentConfigError}
 * naming the bad variable. `exists` tells whether a path exists (for
 * RUNTIME_IMAGES_DIR and its default).
 */
export function loadAgentConfig(
  env: NodeJS.ProcessEnv = process.env,
  exists: (path: string) => boolean = existsSync,
): AgentConfig {
  const subnet = env.CNI_SUBNET || "10.88.0.0/16";
  if (!/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.test(subnet)) {
    throw new AgentConfigError(`CNI_SUBNET="${subnet}" is not an IPv4 CIDR such as 10.88.0.0/16`);
  }
  const bridge = env.CNI_BRIDGE || "esb-cni0";
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(bridge)) {
    throw new AgentConfigError(
      `CNI_BRIDGE="${bridge}" is not a Linux interface name (1–15 letters, digits, '-', '_', '.')`,
    );
  }
  const nodeName = env.NODE_NAME || hostname();
  if (!/^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(nodeName)) {
    throw new AgentConfigError(`NODE_NAME="${nodeName}" is not a valid node name`);
  }
  let maxConcurrentStarts: number | undefined;
  if (env.AGENT_MAX_CONCURRENT_STARTS) {
    maxConcurrentStarts = Number(env.AGENT_MAX_CONCURRENT_STARTS);
    if (!Number.isInteger(maxConcurrentStarts) || maxConcurrentStarts < 1) {
      throw new AgentConfigError(
        `AGENT_MAX_CONCURRENT_STARTS="${env.AGENT_MAX_CONCURRENT_STARTS}" must be a whole number, at least 1`,
      );
    }
  }
  let sandboxPoolSize = DEFAULT_SANDBOX_POOL_SIZE;
  if (env.AGENT_SANDBOX_POOL_SIZE) {
    sandboxPoolSize = Number(env.AGENT_SANDBOX_POOL_SIZE);
    if (!Number.isInteger(sandboxPoolSize) || sandboxPoolSize < 0 || sandboxPoolSize > 64) {
      throw new AgentConfigError(
        `AGENT_SANDBOX_POOL_SIZE="${env.AGENT_SANDBOX_POOL_SIZE}" must be a whole number from 0 to 64`,
      );
    }
  }
  let memoryCapacityMb: number | undefined;
  if (env.AGENT_MEMORY_MB) {
    memoryCapacityMb = Number(env.AGENT_MEMORY_MB);
    if (!Number.isInteger(memoryCapacityMb) || memoryCapacityMb < 128) {
      throw new AgentConfigError(
        `AGENT_MEMORY_MB="${env.AGENT_MEMORY_MB}" must be a whole number of MiB, at least 128`,
      );
    }
  }
  let resyncSeconds = DEFAULT_RESYNC_SECONDS;
  if (env.AGENT_RESYNC_SECONDS) {
    resyncSeconds = Number(env.AGENT_RESYNC_SECONDS);
    // Bounded so that the timer never overflows (setTimeout takes at most ~24.8 days).
    if (!Number.isInteger(resyncSeconds) || resyncSeconds < 0 || resyncSeconds > 86_400) {
      throw new AgentConfigError(
        `AGENT_RESYNC_SECONDS="${env.AGENT_RESYNC_SECONDS}" must be a whole number of seconds, 0 (off) to 86400`,
      );
    }
  }
  const insecureRegistries = (env.INSECURE_REGISTRIES ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  for (const r of insecureRegistries) {
    if (!/^[A-Za-z0-9.-]+(:\d+)?$/.test(r))
      throw new AgentConfigError(`INSECURE_REGISTRIES entry "${r}" is not host[:port]`);
  }
  if (
    env.RUNTIME_IMAGE !== undefined &&
    env.RUNTIME_IMAGE !== "" &&
    !env.RUNTIME_IMAGE.includes("{runtime}")
  ) {
    throw new AgentConfigError(`RUNTIME_IMAGE="${env.RUNTIME_IMAGE}" must contain {runtime}`);
  }
  let runtimeImagesDir: string | undefined;
  if (env.RUNTIME_IMAGES_DIR) {
    if (!exists(env.RUNTIME_IMAGES_DIR))
      throw new AgentConfigError(`RUNTIME_IMAGES_DIR="${env.RUNTIME_IMAGES_DIR}" does not exist`);
    runtimeImagesDir = env.RUNTIME_IMAGES_DIR;
  } else if (exists(PREBUILT_RUNTIME_IMAGES_DIR)) {
    runtimeImagesDir = PREBUILT_RUNTIME_IMAGES_DIR;
  }
  const runtime = oneOf(env, "AGENT_RUNTIME", ["containerd", "docker"] as const, "containerd");
  return {
    auth: authConfig(env),
    runtime,
    workerNetwork: workerNetworkConfig(env, runtime),
    containerdSocket: env.CONTAINERD_SOCKET || "/run/containerd/containerd.sock",
    containerdNamespace: env.CONTAINERD_NAMESPACE || "esb",
    workerCgroupParent: cgroupParent(env.WORKER_CGROUP_PARENT),
    dockerSocket: env.DOCKER_SOCKET || "/var/run/docker.sock",
    port: port(env, "AGENT_PORT", 50051),
    metricsPort: port(env, "AGENT_METRICS_PORT", 9090),
    host: env.AGENT_HOST || "0.0.0.0",
    nodeName,
    stateDir: env.AGENT_STATE_DIR || "/var/lib/esb/agent",
    cniMode: oneOf(env, "CNI_MODE", ["bridge", "cluster"] as const, "bridge"),
    cniBridge: bridge,
    cniSubnet: subnet,
    cniBinDir: env.CNI_BIN_DIR || "/usr/lib/cni",
    cniConfDir: env.CNI_CONF_DIR || "/etc/cni/net.d",
    netnsDir: env.NETNS_DIR || "/run/netns",
    insecureRegistries,
    region: env.AWS_REGION || "us-east-1",
    memoryCapacityMb,
    maxConcurrentStarts,
    sandboxPoolSize,
    resyncSeconds,
    metricsAuth: metricsAuthMode(env),
    runtimeImage: env.RUNTIME_IMAGE || undefined,
    runtimeImagesDir,
    logs: configOrError(() => logShippingConfig(env)),
    workerAws: configOrError(() => loadWorkerAwsEnv(env)),
  };
}

function configOrError<T>(read: () => T): T {
  try {
    return read();
  } catch (err) {
    throw new AgentConfigError((err as Error).message);
  }
}

/** WORKER_EGRESS, WORKER_ALLOWED_DESTINATIONS, WORKER_DENIED_DESTINATIONS. */
function workerNetworkConfig(env: NodeJS.ProcessEnv, runtime: "containerd" | "docker"): WorkerNetworkConfig {
  const egress = oneOf(env, "WORKER_EGRESS", ["allow", "deny"] as const, "allow");
  const parse = (name: string, allowPort: boolean) => {
    try {
      return parseDestinations(env[name] ?? "", name, allowPort);
    } catch (err) {
      throw new AgentConfigError((err as Error).message);
    }
  };
  const config: WorkerNetworkConfig = {
    egress,
    allowedDestinations: parse("WORKER_ALLOWED_DESTINATIONS", true),
    deniedDestinations: parse("WORKER_DENIED_DESTINATIONS", false).map((d) => d.cidr),
  };
  // A policy the docker runtime cannot enforce must not look enforced.
  if (runtime === "docker" && (egress === "deny" || config.deniedDestinations.length > 0)) {
    throw new AgentConfigError(
      "WORKER_EGRESS=deny and WORKER_DENIED_DESTINATIONS need AGENT_RUNTIME=containerd: the docker runtime does not isolate worker networks",
    );
  }
  return config;
}

function authConfig(env: NodeJS.ProcessEnv): AgentAuthConfig {
  const inPod = Boolean(env.KUBERNETES_SERVICE_HOST);
  const mode = oneOf(env, "AGENT_AUTH", ["token", "kubernetes"] as const, inPod ? "kubernetes" : "token");
  if (mode === "token") {
    const tokensFile = env.AGENT_TOKENS_FILE?.trim();
    if (!tokensFile) {
      throw new AgentConfigError(
        "AGENT_TOKENS_FILE is not set: the agent serves authenticated callers only (AGENT_AUTH=token needs a tokens file; `esb up` writes one)",
      );
    }
    return { mode, tokensFile };
  }
  const users = (name: string): string[] => {
    const list = (env[name] ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    if (list.length === 0)
      throw new AgentConfigError(`${name} is not set: AGENT_AUTH=kubernetes needs the user names it serves`);
    return list;
  };
  return {
    mode,
    audience: env.AGENT_AUTH_AUDIENCE?.trim() || AGENT_TOKEN_AUDIENCE,
    controllerUsers: users("AGENT_CONTROLLER_USERS"),
    gatewayUsers: users("AGENT_GATEWAY_USERS"),
  };
}

/** WORKER_CGROUP_PARENT: unset or an absolute cgroup path without `..`. */
function cgroupParent(value: string | undefined): string | undefined {
  if (!value) return undefined;
  if (!value.startsWith("/") || value.split("/").includes(".."))
    throw new AgentConfigError(
      `WORKER_CGROUP_PARENT="${value}" must be an absolute cgroup path such as /kubepods/esb`,
    );
  return value;
}
