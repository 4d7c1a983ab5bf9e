import { parseRouteNamespaces } from "@esb/common";
import { DEFAULT_RECONCILE_WORKERS } from "./controller.js";
/** Settings of the controller, from the environment (see {@link loadControllerConfig}). */
export interface ControllerConfig {
  /** Namespace to watch; empty means all namespaces. */
  watchNamespace: string;
  /** Label selector of the agent DaemonSet's pods (Kubernetes agent discovery). */
  agentSelector: string;
  /** Namespace of the agent pods (default: the controller's own namespace). */
  agentNamespace: string;
  /** Port of the agents' AgentService on their pod IPs. */
  agentPort: number;
  /** Static agent URLs (standalone, or Kubernetes without discovery). Non-empty disables pod discovery. */
  agentUrls: string[];
  /** Base URL of the gateway, used for `status.url`. */
  gatewayUrl: string;
  /** Namespace whose functions the gateway resolves by bare name. */
  gatewayNamespace: string;
  /** Namespaces whose HTTP routes the gateway serves (`GATEWAY_ROUTE_NAMESPACES`, `*` = all; default: gatewayNamespace). */
  routeNamespaces: readonly string[] | "*";
  /** Folder of LambdaFunction manifests; set means standalone mode (no Kubernetes). */
  functionsDir: string;
  /** Whether to take part in leader election (Kubernetes mode). */
  leaderElection: boolean;
  /** Lease name and namespace used for leader election. */
  leaseName: string;
  leaseNamespace: string;
  /** This replica's identity (the pod name). */
  podName: string;
  podNamespace: string;
  /** Port of /metrics and of /healthz + /readyz. */
  metricsPort: number;
  healthPort: number;
  /** Every function is reconciled again after this long (keeps warm pools where they should be). */
  resyncSeconds: number;
  /** Functions reconciled at the same time. */
  reconcileWorkers: number;
  /** Timeout of one PrepareFunction call (includes pulling the image). */
  prepareTimeoutSeconds: number;
  /** Workers of a function that no longer exists are destroyed after it has been gone this long. */
  orphanGraceSeconds: number;
  /** `uninstall` mode: the controllers' Deployment (in POD_NAMESPACE) to scale to 0 first; empty: none. */
  controllerDeployment: string;
  /** `uninstall` mode: bound on stopping the controllers and reaching the agents. */
  uninstallTimeoutSeconds: number;
  /** File holding the controller's bearer token for agents (re-read when it changes); empty: none. */
  agentTokenFile: string;
}

function bool(v: string | undefined, dflt: boolean): boolean {
  if (v === undefined || v === "") return dflt;
  return !["0", "false", "no", "off"].includes(v.toLowerCase());
}

function int(name: string, v: string | undefined, dflt: number): number {
  if (v === undefined || v === "") return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0)
    throw new Error(`${name} must be a non-negative integer (got ${JSON.stringify(v)})`);
  return n;
}

/**
 * Reads the controller configuration from environment variables:
 * WATCH_NAMESPACE, AGENT_SELECTOR (default `app.kubernetes.io/name=esb-agent`),
 * AGENT_NAMESPACE, AGENT_PORT (50051), AGENT_URLS (comma-separated), GATEWAY_URL,
 * GATEWAY_ROUTE_NAMESPACES (as the gateway's: whose HTTP routes are served), AGENT_TOKEN_FILE (the bearer token for agents, e.g. a projected ServiceAccount
 * token), GATEWAY_NAMESPACE, FUNCTIONS_DIR, LEADER_ELECTION (true), LEASE_NAME,
 * LEASE_NAMESPACE, POD_NAME, POD_NAMESPACE, METRICS_PORT (8080), HEALTH_PORT (8081),
 * RESYNC_SECONDS (30), PREPARE_TIMEOUT_SECONDS (300), RECONCILE_WORKERS (8), ORPHAN_GRACE_SECONDS (60),
 * and for the `uninstall` mode CONTROLLER_DEPLOYMENT and UNINSTALL_TIMEOUT_SECONDS
 * (120). Throws on malformed numbers.
 */
export function loadControllerConfig(env: NodeJS.ProcessEnv = process.env): ControllerConfig {
  const podNamespace = env.POD_NAMESPACE || "esb-system";
  return {
    watchNamespace: env.WATCH_NAMESPACE ?? "",
    agentSelector: env.AGENT_SELECTOR || "app.kubernetes.io/name=esb-agent",
    agentNamespace: env.AGENT_NAMESPACE || podNamespace,
    agentPort: int("AGENT_PORT", env.AGENT_PORT, 50051),
    agentUrls: (env.AGENT_URLS ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean),
    agentTokenFile: env.AGENT_TOKEN_FILE?.trim() ?? "",
    gatewayUrl: (env.GATEWAY_URL || "http://esb-gateway:9000").replace(/\/+$/, ""),
    gatewayNamespace: env.GATEWAY_NAMESPACE || "default",
    routeNamespaces: parseRouteNamespaces(env.GATEWAY_ROUTE_NAMESPACES, env.GATEWAY_NAMESPACE || "default"),
    functionsDir: env.FUNCTIONS_DIR ?? "",
    leaderElection: bool(env.LEADER_ELECTION, true),
    leaseName: env.LEASE_NAME || "esb-controller",
    leaseNamespace: env.LEASE_NAMESPACE || podNamespace,
    podName: env.POD_NAME || `esb-controller-${process.pid}`,
    podNamespace,
    metricsPort: int("METRICS_PORT", env.METRICS_PORT, 8080),
    healthPort: int("HEALTH_PORT", env.HEALTH_PORT, 8081),
    resyncSeconds: int("RESYNC_SECONDS", env.RESYNC_SECONDS, 30),
    prepareTimeoutSeconds: int("PREPARE_TIMEOUT_SECONDS", env.PREPARE_TIMEOUT_SECONDS, 300),
    reconcileWorkers: Math.max(1, int("RECONCILE_WORKERS", env.RECONCILE_WORKERS, DEFAULT_RECONCILE_WORKERS)),
    orphanGraceSeconds: int("ORPHAN_GRACE_SECONDS", env.ORPHAN_GRACE_SECONDS, 60),
    controllerDeployment: env.CONTROLLER_DEPLOYMENT ?? "",
    uninstallTimeoutSeconds: int("UNINSTALL_TIMEOUT_SECONDS", env.UNINSTALL_TIMEOUT_SECONDS, 120),
  };
}
