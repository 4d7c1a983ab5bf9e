import cluster from "node:cluster";
import { MetricsAccess, metricsAuthMode } from "@esb/common/metrics-access";
import { KubeConfig } from "@kubernetes/client-node";
import { fileTokenSource } from "@esb/common/agent-credentials";
import type { Logger } from "@esb/common";
import type { AgentDiscovery } from "./agent-discovery.js";
import { FolderFunctionRegistry } from "./folder-function-registry.js";
import type { FunctionRegistry } from "./function-registry.js";
import type { GatewayConfig } from "./gateway-config.js";
import { GATEWAY_PROCESS_INDEX_ENV, joinGatewayCluster } from "./gateway-cluster.js";
import { GatewayMetrics } from "./gateway-metrics.js";
import { GatewayServer } from "./gateway-server.js";
import { KubernetesAgentDiscovery } from "./kubernetes-agent-discovery.js";
import { KubernetesFunctionRegistry } from "./kubernetes-function-registry.js";
import { KubernetesFunctionStore } from "./kubernetes-function-store.js";
import { StaticAgentDiscovery } from "./static-agent-discovery.js";

/**
 * Runs one gateway process (the whole gateway, or one member of a multi-process
 * one): registry, agent discovery and the {@link GatewayServer}, until SIGTERM or
 * SIGINT (or, for a member, its primary going away) stops it; then exits. Kept
 * apart from main.ts so that the primary of a multi-process gateway, which only
 * forks and aggregates, never loads any of this.
 */
export async function runGatewayProcess(gatewayConfig: GatewayConfig, logger: Logger): Promise<void> {
  let config = gatewayConfig;
  // Explicit holder ids stay distinct per process (the default one holds the pid).
  if (cluster.isWorker && process.env.GATEWAY_HOLDER_ID?.trim())
    config = { ...config, holderId: `${config.holderId}-${process.env[GATEWAY_PROCESS_INDEX_ENV]}` };
  const metrics = new GatewayMetrics(true);
  // Without its primary nothing restarts or aggregates this process: stop as on SIGTERM.
  if (cluster.isWorker) joinGatewayCluster(metrics, () => process.kill(process.pid, "SIGTERM"));
  const onConflicts = (n: number) => metrics.routeConflicts.set(n);
  let kubeConfig: KubeConfig | undefined;
  const kube = () => {
    if (!kubeConfig) {
      kubeConfig = new KubeConfig();
      kubeConfig.loadFromDefault();
    }
    return kubeConfig;
  };
  const registry: FunctionRegistry = config.functionsDir
    ? new FolderFunctionRegistry(config.functionsDir, config.namespace, logger, onConflicts)
    : new KubernetesFunctionRegistry(kube(), config.namespace, logger, onConflicts);
  const discovery: AgentDiscovery =
    config.agentUrls.length > 0
      ? new StaticAgentDiscovery(config.agentUrls)
      : new KubernetesAgentDiscovery(
          kube(),
          config.agentNamespace,
          config.agentSelector!,
          config.agentPort,
          logger,
        );
  const agentToken = config.agentTokenFile ? fileTokenSource(config.agentTokenFile) : undefined;
  if (!agentToken) logger.warn("AGENT_TOKEN_FILE is not set: agents will refuse this gateway's calls");
  const metricsAuth = metricsAuthMode();
  const metricsAccess = new MetricsAccess(metricsAuth, metricsAuth === "kubernetes" ? kube() : undefined);
  const server = new GatewayServer({
    config,
    registry,
    discovery,
    logger,
    metrics,
    agentToken,
    metricsAccess,
    // The control-plane API writes LambdaFunctions (and code ConfigMaps) in the gateway's namespace.
    functionStore: config.functionsDir ? undefined : new KubernetesFunctionStore(kube()),
  });
  await server.start();
  let stopping = false;
  const shutdown = (signal: string) => {
    // Once: a cluster member may get the terminal's SIGINT and the primary's SIGTERM.
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "stopping");
    server.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, "stop failed");
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", () => shutdown("SIGTERM"));
  process.once("SIGINT", () => shutdown("SIGINT"));
}
