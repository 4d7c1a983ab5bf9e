import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { MetricsAccess, serveMetrics } from "@esb/common/metrics-access";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer as createHttp2Server, type Http2Server, type ServerHttp2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { createLogger, type Logger } from "@esb/common";
import { AgentService } from "@esb/common/gen/esb/agent/v1/agent_pb";
import type { AgentMetrics } from "./agent-metrics.js";
import { authInterceptor, type AgentAuthenticator } from "./auth/agent-auth.js";
import type { NodeAgent } from "./node-agent.js";
import { createAgentService } from "./service/agent-service.js";

/** Options of {@link AgentServer}. */
export interface AgentServerOptions {
  agent: NodeAgent;
  metrics: AgentMetrics;
  /** Checks every AgentService call's bearer token; there is no anonymous mode. */
  authenticator: AgentAuthenticator;
  /** AgentService port (HTTP/2 cleartext: gRPC and Connect). 0 picks a free port. */
  port: number;
  /** /healthz, /readyz, /metrics port (HTTP/1.1). 0 picks a free port. */
  metricsPort: number;
  /** Address to listen on. Default all interfaces. */
  host?: string;
  /** Who may read /metrics; default local callers only. */
  metricsAccess?: MetricsAccess;
  logger?: Logger;
}

/**
 * Serves the AgentService over HTTP/2 cleartext (gRPC and Connect protocols) to
 * authenticated callers only (see auth/agent-auth.ts), and health/metrics over plain HTTP: `/healthz` (process up), `/readyz` (agent
 * started and serving), `/metrics` (Prometheus).
 */
export class AgentServer {
  private readonly opts: AgentServerOptions;
  private readonly metricsAccess: MetricsAccess;
  private readonly log: Logger;
  private grpc?: Http2Server;
  private http?: HttpServer;
  private readonly sessions = new Set<ServerHttp2Session>();
  private serving = false;

  constructor(opts: AgentServerOptions) {
    this.opts = opts;
    this.metricsAccess = opts.metricsAccess ?? new MetricsAccess("local");
    this.log = opts.logger ?? createLogger("agent-server");
  }

  /**
   * Until the agent has re-adopted its workers (NodeAgent.start), every call is
   * `unavailable`, which callers retry: answering earlier said "function not found"
   * and let a prepare race the start-up resync (which removed the new worker's network).
   */
  private readyInterceptor(): Interceptor {
    return (next) => async (req) => {
      if (!this.opts.agent.ready)
        throw new ConnectError(
          "the agent is starting (re-adopting its workers); retry shortly",
          Code.Unavailable,
        );
      return next(req);
    };
  }

  /** Starts both listeners; resolves with the ports actually bound. */
  async start(): Promise<{ port: number; metricsPort: number }> {
    const handler = connectNodeAdapter({
      routes: (router) => router.service(AgentService, createAgentService(this.opts.agent, this.log)),
      grpc: true,
      connect: true,
      grpcWeb: false,
      interceptors: [authInterceptor(this.opts.authenticator, this.log), this.readyInterceptor()],
    });
    this.grpc = createHttp2Server(handler);
    this.grpc.on("session", (s) => {
      this.sessions.add(s);
      s.on("close", () => this.sessions.delete(s));
    });
    this.http = createHttpServer((req, res) => {
      const path = (req.url ?? "/").split("?")[0];
      if (path === "/healthz") {
        res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      } else if (path === "/readyz") {
        const ready = this.serving && this.opts.agent.ready;
        res
          .writeHead(ready ? 200 : 503, { "content-type": "text/plain" })
          .end(ready ? "ready\n" : "not ready\n");
      } else if (path === "/metrics") {
        serveMetrics(req, res, this.metricsAccess, this.opts.metrics.registry).catch((err: unknown) =>
          res.writeHead(500).end(String(err)),
        );
      } else {
        res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      }
    });
    const port = await listen(this.grpc, this.opts.port, this.opts.host);
    const metricsPort = await listen(this.http, this.opts.metricsPort, this.opts.host);
    this.serving = true;
    this.log.info({ port, metricsPort }, "agent serving");
    return { port, metricsPort };
  }

  /**
   * Stops accepting requests: HTTP/2 sessions get a GOAWAY and in-flight calls
   * up to `graceMs` to finish; then both listeners close.
   */
  async stop(graceMs = 5000): Promise<void> {
    this.serving = false;
    const closed = Promise.all([
      this.grpc ? new Promise<void>((r) => this.grpc!.close(() => r())) : undefined,
      this.http ? new Promise<void>((r) => this.http!.close(() => r())) : undefined,
    ]);
    for (const s of this.sessions) s.close();
    this.http?.closeIdleConnections();
    const timer = setTimeout(() => {
      for (const s of this.sessions) s.destroy();
      this.http?.closeAllConnections();
    }, graceMs);
    await closed;
    clearTimeout(timer);
  }
}

function listen(server: HttpServer | Http2Server, port: number, host?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}
