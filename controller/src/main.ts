#!/usr/bin/env node
import { createServer, type Server } from "node:http";
import { readFileSync } from "node:fs";
import { MetricsAccess, metricsAuthMode, serveMetrics } from "@esb/common/metrics-access";
import { KubeConfig } from "@kubernetes/client-node";
import { createLogger } from "@esb/common";
import { fileTokenSource } from "@esb/common/agent-credentials";
import { StaticAgentDirectory, type AgentDirectory } from "./agent-directory.js";
import { Controller } from "./controller.js";
import { loadControllerConfig } from "./controller-config.js";
import { ControllerMetrics } from "./controller-metrics.js";
import { FolderFunctionSource } from "./folder-function-source.js";
import type { FunctionSource } from "./function-source.js";
import { KubernetesAgentDirectory } from "./kubernetes-agent-directory.js";
import { KubernetesFunctionSource } from "./kubernetes-function-source.js";
import { Uninstaller, formatUninstallReport } from "./uninstall.js";

const HELP = `esb-controller: reconciles LambdaFunction resources into ESB agent requests.

Usage: esb-controller [--functions DIR] [--help] [--version]
       esb-controller uninstall [--controller-deployment NAME] [--timeout SECONDS]

  --functions DIR   standalone: read LambdaFunction manifests from DIR (no Kubernetes)
  --help            show this help
  --version         show the version

  uninstall         tear ESB down (the Helm chart's pre-delete hook runs it):
                    scale the controller Deployment NAME (in POD_NAMESPACE) to 0
                    and wait for its pods to be gone, destroy every function's
                    workers on every agent, then remove the esb.dev/workers
                    finalizer from every LambdaFunction (the LambdaFunctions
                    stay). Agents not reached within SECONDS (default 120) are
                    reported; finalizers are removed anyway. Exit 1 only when a
                    finalizer could not be removed.

Environment: WATCH_NAMESPACE, AGENT_SELECTOR, AGENT_NAMESPACE, AGENT_PORT,
AGENT_URLS, AGENT_TOKEN_FILE (the controller's bearer token for agents),
GATEWAY_URL, GATEWAY_NAMESPACE, GATEWAY_ROUTE_NAMESPACES (as the gateway's, for
the RoutesAccepted condition), FUNCTIONS_DIR, LEADER_ELECTION,
LEASE_NAME, LEASE_NAMESPACE, POD_NAME, POD_NAMESPACE, METRICS_PORT (8080),
HEALTH_PORT (8081), RESYNC_SECONDS, PREPARE_TIMEOUT_SECONDS,
ORPHAN_GRACE_SECONDS (60), ESB_LOG_LEVEL; uninstall: CONTROLLER_DEPLOYMENT,
UNINSTALL_TIMEOUT_SECONDS (120).
Kubernetes access: in-cluster service account, else KUBECONFIG / ~/.kube/config.
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

function listen(server: Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, () => resolve());
  });
}

function flagValue(argv: string[], flag: string): string | undefined {
  const i = argv.indexOf(flag);
  if (i < 0) return undefined;
  if (!argv[i + 1]) throw new Error(`${flag} needs a value`);
  return argv[i + 1];
}

/** `esb-controller uninstall`: see HELP. Returns the exit code. */
async function uninstall(argv: string[]): Promise<number> {
  const config = loadControllerConfig();
  const deployment = flagValue(argv, "--controller-deployment") ?? config.controllerDeployment;
  const timeout = flagValue(argv, "--timeout");
  const timeoutSeconds = timeout === undefined ? config.uninstallTimeoutSeconds : Number(timeout);
  if (!Number.isInteger(timeoutSeconds) || timeoutSeconds < 0)
    throw new Error(`--timeout must be a non-negative integer (got ${JSON.stringify(timeout)})`);
  const logger = createLogger("controller-uninstall");
  const kc = new KubeConfig();
  kc.loadFromDefault();
  const agents: AgentDirectory = config.agentUrls.length
    ? new StaticAgentDirectory(config.agentUrls)
    : new KubernetesAgentDirectory(kc, config.agentNamespace, config.agentSelector, config.agentPort, logger);
  const report = await new Uninstaller({
    kubeConfig: kc,
    watchNamespace: config.watchNamespace,
    agents,
    controllerDeployment: deployment ? { namespace: config.podNamespace, name: deployment } : undefined,
    timeoutMs: timeoutSeconds * 1000,
    instance: config.podName,
    agentToken: config.agentTokenFile ? fileTokenSource(config.agentTokenFile) : undefined,
    logger,
  }).run();
  logger.info({ report }, "uninstall finished");
  process.stdout.write(formatUninstallReport(report));
  return report.finalizerFailures.length > 0 ? 1 : 0;
}

async function main(argv: string[]): Promise<void> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(HELP);
    return;
  }
  if (argv.includes("--version")) {
    process.stdout.write(`${version()}\n`);
    return;
  }
  if (argv[0] === "uninstall") {
    process.exit(await uninstall(argv.slice(1)));
  }
  const config = loadControllerConfig();
  const fi = argv.indexOf("--functions");
  if (fi >= 0) {
    if (!argv[fi + 1]) throw new Error("--functions needs a folder");
    config.functionsDir = argv[fi + 1];
  }
  const logger = createLogger("controller");
  const metrics = new ControllerMetrics({ defaultMetrics: true });
  const standalone = config.functionsDir !== "";
  let source: FunctionSource;
  let agents: AgentDirectory;
  let kc: KubeConfig | undefined;
  if (standalone) {
    source = new FolderFunctionSource(config.functionsDir, { logger });
    agents = new StaticAgentDirectory(
      config.agentUrls.length ? config.agentUrls : ["http://127.0.0.1:50051"],
    );
  } else {
    kc = new KubeConfig();
    kc.loadFromDefault();
    source = new KubernetesFunctionSource(kc, {
      namespace: config.watchNamespace,
      instance: config.podName,
      logger,
    });
    agents = config.agentUrls.length
      ? new StaticAgentDirectory(config.agentUrls)
      : new KubernetesAgentDirectory(
          kc,
          config.agentNamespace,
          config.agentSelector,
          config.agentPort,
          logger,
        );
  }
  const controller = new Controller({
    source,
    agents,
    gatewayUrl: config.gatewayUrl,
    gatewayNamespace: config.gatewayNamespace,
    routeNamespaces: config.routeNamespaces,
    agentToken: config.agentTokenFile ? fileTokenSource(config.agentTokenFile) : undefined,
    resyncMs: config.resyncSeconds * 1000,
    reconcileWorkers: config.reconcileWorkers,
    reconciler: { prepareTimeoutMs: config.prepareTimeoutSeconds * 1000 },
    orphanCollection: { graceMs: config.orphanGraceSeconds * 1000 },
    metrics,
    logger,
    // On a lost lease the controller has already stopped its queue, aborted the
    // reconciles in flight (agent calls included) and refuses further writes; the
    // process stays up and campaigns again, so that when the API server was the
    // problem a replica leads again as soon as it is back (a process that exits
    // instead would be held in CrashLoopBackOff, possibly for minutes). Only when
    // that work did not end in time (something ignored the abort) does the
    // process exit, so that Kubernetes restarts it with nothing of the old term.
    onLeadershipLost: ({ drained }) => {
      if (drained) {
        logger.warn("lost the lease: reconciling stopped; campaigning again");
        return;
      }
      logger.fatal(
        "lost the lease and reconciles in flight did not stop; exiting so that nothing of the old term survives",
      );
      process.exit(1);
    },
    leaderElection:
      kc && config.leaderElection
        ? {
            kubeConfig: kc,
            leaseName: config.leaseName,
            namespace: config.leaseNamespace,
            identity: config.podName,
          }
        : undefined,
  });

  const health = createServer((req, res) => {
    const ok = req.url === "/healthz" ? true : req.url === "/readyz" ? controller.isStarted : undefined;
    if (ok === undefined) res.writeHead(404).end("not found\n");
    else res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" }).end(ok ? "ok\n" : "not ready\n");
  });
  const metricsAccess = new MetricsAccess(metricsAuthMode(), kc);
  const metricsServer = createServer((req, res) => {
    if (req.url !== "/metrics") return void res.writeHead(404).end("not found\n");
    serveMetrics(req, res, metricsAccess, metrics.registry).catch((err: Error) =>
      res.writeHead(500).end(String(err.message)),
    );
  });
  await listen(health, config.healthPort);
  await listen(metricsServer, config.metricsPort);
  await controller.start();
  logger.info(
    { mode: standalone ? "standalone" : "kubernetes", config: { ...config } },
    "controller started",
  );

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "stopping");
    await controller.stop();
    health.close();
    metricsServer.close();
    process.exit(0);
  };
  process.on("SIGINT", () => void shutdown("SIGINT"));
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`esb-controller: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
