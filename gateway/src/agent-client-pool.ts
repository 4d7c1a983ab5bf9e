import { createClient, type Client } from "@connectrpc/connect";
import type { Http2SessionManager } from "@connectrpc/connect-node";
import { agentSessionManager, agentTransport, type AgentTokenSource } from "@esb/common/agent-credentials";
import type { Logger } from "@esb/common";
import { AgentService, type FunctionPoolStatus } from "@esb/common/gen/esb/agent/v1/agent_pb";
import type { AgentDiscovery } from "./agent-discovery.js";

/** What the gateway knows about one agent (one node). */
export interface AgentConnection {
  /** Base URL, e.g. `http://10.0.0.5:50051`. */
  readonly url: string;
  readonly client: Client<typeof AgentService>;
  /** Node name from the last heartbeat ("" before the first). */
  nodeName: string;
  /** True when the last heartbeat succeeded. */
  healthy: boolean;
  /** Pools by `namespace/name`, from the last heartbeat, adjusted locally as workers are handed out. */
  pools: Map<string, FunctionPoolStatus>;
  /** Workers this gateway holds from this agent now. */
  inflight: number;
  /**
   * Ids of the leases this gateway holds from this agent (acquired, release not
   * yet answered). Heartbeats list them; the agent expires any other lease of this
   * gateway, so a worker the gateway lost track of does not stay busy.
   */
  readonly leases: Set<string>;
  /** The HTTP/2 connection to the agent (closed when the agent goes away or the pool stops). */
  readonly session: Http2SessionManager;
}

/**
 * One AgentService client (gRPC, always over HTTP/2, Connect) per discovered agent, and
 * the heartbeat loop: every `heartbeatMs` each agent is sent `Heartbeat` with the
 * leases this gateway holds from it ({@link AgentConnection.leases}), which keeps
 * those alive (and only those: the agent expires the others) and returns the
 * node's pools (idle, paused, busy workers per function) that placement uses.
 */
export class AgentClientPool {
  private readonly connections = new Map<string, AgentConnection>();
  private timer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly discovery: AgentDiscovery,
    /** Identifies this gateway replica; agents keep its leases while heartbeats arrive. */
    readonly holderId: string,
    private readonly heartbeatMs: number,
    private readonly logger: Logger,
    private readonly onAgentCount: (count: number) => void = () => {},
    /** This gateway's bearer token for agents (they refuse anonymous calls). */
    private readonly agentToken?: AgentTokenSource,
  ) {}

  /** Connects to the discovered agents and sends a first round of heartbeats. */
  async start(): Promise<void> {
    await this.discovery.start();
    this.unsubscribe = this.discovery.onChange(() => {
      this.sync();
      void this.heartbeatAll();
    });
    this.sync();
    await this.heartbeatAll();
    this.timer = setInterval(() => void this.heartbeatAll(), this.heartbeatMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.unsubscribe?.();
    await this.discovery.stop();
    for (const conn of this.connections.values()) conn.session.abort();
  }

  /** The agents known now. */
  list(): AgentConnection[] {
    return [...this.connections.values()];
  }

  /** Sends one heartbeat to every agent now (also done periodically). */
  async heartbeatAll(): Promise<void> {
    await Promise.all(this.list().map((c) => this.heartbeat(c)));
  }

  private async heartbeat(conn: AgentConnection): Promise<void> {
    try {
      const res = await conn.client.heartbeat(
        { holderId: this.holderId, leaseIds: [...conn.leases], leasesListed: true },
        { timeoutMs: Math.max(this.heartbeatMs * 2, 1000) },
      );
      if (res.expiredLeases > 0) {
        // A lease this gateway no longer lists, e.g. from an AcquireWorker answer that never reached it.
        this.logger.info({ agent: conn.url, expired: res.expiredLeases }, "agent expired leases not held");
      }
      const pools = new Map<string, FunctionPoolStatus>();
      for (const p of res.pools) {
        if (p.function) pools.set(`${p.function.namespace}/${p.function.name}`, p);
      }
      conn.pools = pools;
      conn.nodeName = res.nodeName;
      if (!conn.healthy) this.logger.info({ agent: conn.url, node: res.nodeName }, "agent reachable");
      conn.healthy = true;
    } catch (err) {
      if (conn.healthy) this.logger.warn({ agent: conn.url, err: String(err) }, "agent heartbeat failed");
      conn.healthy = false;
    }
  }

  private sync(): void {
    const wanted = new Set(this.discovery.agents());
    for (const url of wanted) {
      if (this.connections.has(url)) continue;
      const session = agentSessionManager(url);
      const transport = agentTransport(url, this.agentToken, session);
      this.connections.set(url, {
        url,
        client: createClient(AgentService, transport),
        nodeName: "",
        healthy: false,
        pools: new Map(),
        inflight: 0,
        leases: new Set(),
        session,
      });
    }
    for (const url of [...this.connections.keys()]) {
      if (wanted.has(url)) continue;
      this.connections.get(url)?.session.abort();
      this.connections.delete(url);
    }
    this.onAgentCount(this.connections.size);
  }
}
