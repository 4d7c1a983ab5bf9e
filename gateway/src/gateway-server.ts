import { MetricsAccess, serveMetrics } from "@esb/common/metrics-access";
import { randomUUID } from "node:crypto";
import type { AgentTokenSource } from "@esb/common/agent-credentials";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "@esb/common";
import { AgentClientPool } from "./agent-client-pool.js";
import type { AgentDiscovery } from "./agent-discovery.js";
import { EventInvocationQueue } from "./event-invocation-queue.js";
import { openEventStore } from "./event-store-open.js";
import { FunctionInvoker } from "./function-invoker.js";
import type { FunctionRegistry } from "./function-registry.js";
import type { GatewayConfig } from "./gateway-config.js";
import { GatewayMetrics } from "./gateway-metrics.js";
import { LambdaApiError } from "./lambda-api-error.js";
import { HttpRouteHandler } from "./http-route-handler.js";
import { InvocationRecorder } from "./invocation-recorder.js";
import type { FunctionStatusLookup } from "./function-state.js";
import { InvokeApiHandler } from "./invoke-api-handler.js";
import { ControlApiHandler, controlRequestLimit } from "./control-api-handler.js";
import { FolderFunctionStore } from "./folder-function-store.js";
import type { FunctionStore } from "./function-store.js";
import { SigV4Authenticator, type AuthenticatedRequest } from "./sigv4-auth.js";
import { CredentialStore } from "./sigv4-credentials.js";
import { WorkerBroker } from "./worker-broker.js";
import { WorkerHttpClient } from "./worker-http-client.js";

const FUNCTION_PATH = /^\/2015-03-31\/functions\/([^/?]+)(\/invocations)?\/?$/;
/**
 * ESB's own paths, never handed to a function's HTTP route: every date-versioned
 * Lambda API prefix (`/2015-03-31/`, `/2018-10-31/`, …) and the health and metrics
 * endpoints, whatever the method.
 */
const RESERVED_PATH = /^\/(\d{4}-\d{2}-\d{2}(\/|$)|(healthz|readyz|metrics)\/?$)/;
/** The Lambda API's date-versioned prefixes: signed for service `lambda` when auth is on. */
const LAMBDA_API_PATH = /^\/\d{4}-\d{2}-\d{2}(\/|$)/;
/** Never signed: probes and scrapers cannot sign. */
const UNSIGNED_PATH = /^\/(healthz|readyz|metrics)\/?$/;

/** What {@link GatewayServer} is built from; registry and discovery decide Kubernetes vs standalone. */
export interface GatewayServerOptions {
  config: GatewayConfig;
  registry: FunctionRegistry;
  discovery: AgentDiscovery;
  logger: Logger;
  /** Metrics registry; a new one by default. */
  metrics?: GatewayMetrics;
  /** This gateway's bearer token for agents (they refuse anonymous calls). */
  agentToken?: AgentTokenSource;
  /** Function status for GetFunction when the registry has none (standalone: the controller's). */
  functionStatus?: FunctionStatusLookup;
  /** Who may read /metrics; default local callers only. */
  metricsAccess?: MetricsAccess;
  /**
   * Where the Lambda control-plane API (CreateFunction, …) writes functions; default: the
   * functions folder when `config.functionsDir` is set, else none (the API is read-only).
   */
  functionStore?: FunctionStore;
}

/**
 * The gateway's HTTP server: the Lambda Invoke API under `/2015-03-31/functions/`,
 * `/healthz` (process alive), `/readyz` (functions listed and an agent has answered
 * since start), `/metrics` (Prometheus), and every other path served
 * from the functions' HTTP routes.
 */
export class GatewayServer {
  readonly metrics: GatewayMetrics;
  readonly agents: AgentClientPool;
  readonly eventQueue: EventInvocationQueue;
  private readonly server: Server;
  private readonly workers = new WorkerHttpClient();
  private readonly broker: WorkerBroker;
  private readonly invokeApi: InvokeApiHandler;
  private readonly controlApi: ControlApiHandler;
  /** An agent has answered a heartbeat since start (see {@link ready}). */
  private agentAnswered = false;
  private readonly routes: HttpRouteHandler;
  private readonly registry: FunctionRegistry;
  private readonly logger: Logger;
  private readonly config: GatewayConfig;
  private readonly metricsAccess: MetricsAccess;
  /** SigV4 verification; undefined when no credentials file is configured (auth off). */
  private readonly auth: SigV4Authenticator | undefined;
  private readonly credentials: CredentialStore | undefined;

  constructor(options: GatewayServerOptions) {
    const { config, registry, discovery, logger } = options;
    this.config = config;
    this.metricsAccess = options.metricsAccess ?? new MetricsAccess("local");
    this.registry = registry;
    registry.serveRoutesOf(config.routeNamespaces);
    this.logger = logger;
    this.metrics = options.metrics ?? new GatewayMetrics();
    this.agents = new AgentClientPool(
      discovery,
      config.holderId,
      config.heartbeatMs,
      logger,
      (n) => this.metrics.agents.set(n),
      options.agentToken,
    );
    const broker = new WorkerBroker(this.agents, {
      leaseMs: config.leaseMs,
      logger,
      warmHoldMs: config.warmHoldMs,
      agentOutageWaitMs: config.agentOutageWaitMs,
    });
    this.broker = broker;
    const invoker = new FunctionInvoker(broker, this.workers, logger);
    const recorder = new InvocationRecorder(this.metrics, logger);
    this.eventQueue = new EventInvocationQueue(
      openEventStore(config, logger),
      invoker,
      registry,
      recorder,
      this.metrics,
      logger,
      {
        concurrency: config.eventConcurrency,
        retryDelaysMs: config.eventRetryDelaysMs,
        maxRetryAttempts: config.eventMaxRetryAttempts,
        maxEventAgeSeconds: config.eventMaxAgeSeconds,
      },
    );
    this.invokeApi = new InvokeApiHandler(
      registry,
      invoker,
      this.eventQueue,
      recorder,
      config.namespace,
      config,
      logger,
    );
    this.controlApi = new ControlApiHandler(
      options.functionStore ??
        (config.functionsDir ? new FolderFunctionStore(config.functionsDir, config.namespace) : undefined),
      registry,
      config.namespace,
      logger,
      options.functionStatus,
    );
    this.routes = new HttpRouteHandler(registry, invoker, recorder, config.maxSyncPayloadBytes, logger);
    if (config.credentialsFile) {
      this.credentials = new CredentialStore(config.credentialsFile, logger);
      this.auth = new SigV4Authenticator(
        this.credentials,
        config.authScope,
        config.maxSyncPayloadBytes,
        this.metrics,
        logger,
      );
    }
    this.server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
      this.dispatch(req, res).catch((err: unknown) => {
        this.logger.error({ err }, "request failed");
        if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
        res.end(JSON.stringify({ message: "Internal Server Error" }));
      });
    });
  }

  /** Starts the registry and agent connections, then listens. Resolves with the bound port. */
  async start(): Promise<number> {
    if (this.credentials) {
      // Before listening: with auth configured, the gateway never serves unverified.
      await this.credentials.load();
      this.credentials.watch(this.config.credentialsReloadMs);
    }
    await this.registry.start();
    this.metrics.routeConflicts.set(this.registry.routes().conflicts.length);
    this.registry.onChange(() => this.metrics.routeConflicts.set(this.registry.routes().conflicts.length));
    await this.agents.start();
    // Stored events need the function listing; they are queued before new ones can arrive.
    this.eventQueue.start();
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.config.port, this.config.host, () => resolve());
    });
    const port = (this.server.address() as AddressInfo).port;
    this.logger.info(
      {
        port,
        namespace: this.config.namespace,
        agents: this.agents.list().map((a) => a.url),
        auth: this.auth ? { sigv4: this.auth.scope, keys: this.credentials!.size } : "off",
      },
      "gateway listening",
    );
    return port;
  }

  /**
   * Stops accepting requests, lets invocations in progress finish (at most
   * `graceMs`, then their connections are cut; Event deliveries not finished by
   * then stay in a durable event store for the next start), gives every worker
   * back to its agent, and closes the agent connections and the registry.
   */
  async stop(graceMs = 10_000): Promise<void> {
    const eventsClosed = this.eventQueue.close(graceMs);
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => this.server.closeAllConnections(), graceMs);
      force.unref();
      this.server.close(() => {
        clearTimeout(force);
        resolve();
      });
      this.server.closeIdleConnections();
    });
    await eventsClosed;
    await this.broker.releaseHeld();
    await this.agents.stop();
    await this.registry.stop();
    await this.workers.close();
    this.credentials?.close();
  }

  /**
   * True once functions are listed and an agent has answered a heartbeat since start. Not
   * withdrawn when the agents later go away (an agent pod replaced on a one-node cluster, a
   * restart): every replica would then leave the Service at once and callers would get the
   * ingress's bare 502s; a ready gateway rides the outage out (GATEWAY_AGENT_OUTAGE_WAIT_MS)
   * and otherwise answers in AWS's terms.
   */
  ready(): boolean {
    this.agentAnswered ||= this.agents.list().some((a) => a.healthy);
    return this.registry.synced && this.agentAnswered;
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const path = q >= 0 ? url.slice(0, q) : url;
    const lambdaApi = LAMBDA_API_PATH.test(path);
    let signed: AuthenticatedRequest | undefined;
    if (this.auth?.covers(lambdaApi) && !UNSIGNED_PATH.test(path)) {
      signed = await this.auth.authenticate(
        req,
        res,
        lambdaApi ? "invoke" : "http",
        lambdaApi ? controlRequestLimit(req.method, path) : undefined,
      );
      if (!signed) return; // refused; the error was sent
    }
    if (lambdaApi && this.controlApi.match(req.method, path)) {
      return this.controlApi.handle(
        req,
        res,
        path,
        new URLSearchParams(q >= 0 ? url.slice(q + 1) : ""),
        signed,
      );
    }
    const fnMatch = FUNCTION_PATH.exec(path);
    if (fnMatch) {
      const query = new URLSearchParams(q >= 0 ? url.slice(q + 1) : "");
      if (fnMatch[2] && req.method === "POST")
        return this.invokeApi.invoke(req, res, fnMatch[1], query, signed);
    }
    if (req.method === "GET" && path === "/healthz") return text(res, 200, "ok\n");
    if (req.method === "GET" && path === "/readyz") {
      return this.ready()
        ? text(res, 200, "ok\n")
        : text(res, 503, this.registry.synced ? "no agent has answered yet\n" : "functions not listed yet\n");
    }
    if (req.method === "GET" && path === "/metrics")
      return serveMetrics(req, res, this.metricsAccess, this.metrics.registry);
    if (RESERVED_PATH.test(path)) return this.unknownOperation(req, res, path);
    return this.routes.handle(req, res, signed);
  }

  /** A reserved path with a method or sub-path ESB does not serve: AWS's error, never a user route. */
  private unknownOperation(req: IncomingMessage, res: ServerResponse, path: string): void {
    req.resume();
    if (/^\/(healthz|readyz|metrics)\/?$/.test(path)) {
      res.setHeader("allow", "GET");
      return text(res, 405, `${req.method} is not allowed on ${path}; use GET\n`);
    }
    new LambdaApiError(
      "UnknownOperationException",
      `Unknown operation: ${req.method} ${path} (ESB serves Invoke at POST /2015-03-31/functions/{FunctionName}/invocations and the control-plane operations listed in docs/lambda-api.md)`,
    ).send(res, randomUUID());
  }
}

function text(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, {
    "content-type": "text/plain; charset=utf-8",
    "content-length": Buffer.byteLength(body),
  });
  res.end(body);
}
