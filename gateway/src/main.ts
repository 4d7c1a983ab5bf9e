#!/usr/bin/env node
import { readFileSync } from "node:fs";
import { createLogger } from "@esb/common";
import { GatewayConfigError, loadGatewayConfig } from "./gateway-config.js";
import cluster from "node:cluster";
import { runGatewayPrimary } from "./gateway-cluster.js";

const HELP = `esb-gateway: the AWS Lambda Invoke API and HTTP routes of ESB

Usage: esb-gateway [--help] [--version]

Environment:
  GATEWAY_PORT                port to listen on (default 9000)
  GATEWAY_HOST                address to listen on (default 0.0.0.0)
  GATEWAY_NAMESPACE           namespace of bare function names (default "default");
                              other namespaces: FunctionName "namespace/name"
  GATEWAY_ROUTE_NAMESPACES    namespaces whose HTTP routes are served, comma-separated,
                              or * for all (default: GATEWAY_NAMESPACE alone)
  AGENT_URLS                  comma-separated agent URLs (standalone), e.g. http://127.0.0.1:50051
  AGENT_SELECTOR              label selector of agent pods (Kubernetes),
                              e.g. app.kubernetes.io/component=agent
  AGENT_NAMESPACE             namespace of agent pods (default POD_NAMESPACE or esb-system)
  AGENT_PORT                  agent gRPC port (default 50051)
  AGENT_TOKEN_FILE            this gateway's bearer token for agents, re-read when it
                              changes (Kubernetes: a projected ServiceAccount token)
  FUNCTIONS_DIR               folder of LambdaFunction manifests; without it the
                              Kubernetes API is watched (in-cluster or KUBECONFIG)
  GATEWAY_LEASE_MS            worker lease, renewed by heartbeats (default 30000)
  GATEWAY_WARM_HOLD_MS        keep a healthy worker this long after an invocation and
                              reuse it without an agent round trip (default 20; 0 = off)
  GATEWAY_HEARTBEAT_MS        agent heartbeat interval (default 1000)
  GATEWAY_PROCESSES           gateway processes sharing the port, each like a replica (own
                              agent connections, warm hold, Event queue; /metrics sums them):
                              1-64 or auto = the CPUs given (default auto; 1 with an SQLite
                              GATEWAY_EVENT_STORE, which has one owner)
  GATEWAY_EVENT_STORE         where accepted Event invocations are kept until they have
                              run: nats://host:4222 (NATS JetStream, shared by replicas) or
                              an SQLite file (unset: in memory, lost on restart)
  GATEWAY_EVENT_NATS_TOKEN    NATS token (or GATEWAY_EVENT_NATS_TOKEN_FILE: a file holding it)
  GATEWAY_EVENT_NATS_STREAM   JetStream stream of pending events (default ESB_EVENTS;
                              dead letters in <it>_DEAD)
  GATEWAY_EVENT_ACK_WAIT_SECONDS  a dead gateway's events go to another after this (default 30)
  GATEWAY_EVENT_QUEUE_SIZE    stored Event invocations before 429 (default 100000 with a
                              store, 1000 in memory)
  GATEWAY_EVENT_QUEUE_BYTES   their payload bytes before 429 (default 256 MiB / 64 MiB)
  GATEWAY_EVENT_CONCURRENCY   Event invocations run at once (default 8)
  GATEWAY_EVENT_RETRY_DELAYS_MS  delays before the retries (default 1000,2000)
  GATEWAY_EVENT_MAX_RETRY_ATTEMPTS  retries of a failed Event invocation, 0-2 (default 2)
  GATEWAY_EVENT_MAX_AGE_SECONDS  oldest Event still run, 60-21600 (default 21600)
  GATEWAY_CREDENTIALS_FILE    YAML/JSON file of access keys (accessKeyId, secretAccessKey,
                              namespaces); set: callers must sign with AWS SigV4 and may
                              only invoke their keys' namespaces (default: unset, no auth);
                              the control-plane API (CreateFunction, …) writes only for
                              verified callers, so it needs this too
  GATEWAY_AUTH_SCOPE          what must be signed: invokeApi (the Lambda API, default) or
                              all (HTTP routes too, signed for service execute-api)
  GATEWAY_CREDENTIALS_RELOAD_MS  how often the credentials file is re-read (default 5000)
  ESB_LOG_LEVEL               pino level (default info)
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.includes("--help") || args.includes("-h")) {
    process.stdout.write(HELP);
    return;
  }
  if (args.includes("--version") || args.includes("-v")) {
    process.stdout.write(`${version()}\n`);
    return;
  }
  if (args.length > 0) {
    process.stderr.write(
      `esb-gateway: unknown argument ${args[0]} (configuration is read from the environment; see --help)\n`,
    );
    process.exitCode = 2;
    return;
  }
  const logger = createLogger("gateway");
  let config;
  try {
    config = loadGatewayConfig();
  } catch (err) {
    if (err instanceof GatewayConfigError) {
      process.stderr.write(`esb-gateway: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw err;
  }
  // The primary only forks and aggregates: the gateway itself is loaded by its members.
  if (config.processes > 1 && cluster.isPrimary) return runGatewayPrimary(config.processes, logger);
  const { runGatewayProcess } = await import("./gateway-process.js");
  await runGatewayProcess(config, logger);
}

main().catch((err: unknown) => {
  process.stderr.write(`esb-gateway: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
