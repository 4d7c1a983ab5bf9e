/** An ESB agent (one per node) as the controller reaches it. */
export interface AgentEndpoint {
  /** Node name (Kubernetes) or a stable label (standalone); shown in `status.nodes`. */
  name: string;
  /** Base URL of its AgentService (gRPC over HTTP/2 cleartext), e.g. `http://10.0.0.5:50051`. */
  url: string;
}

/**
 * Where the controller finds the agents. `list()` returns the agents that are up
 * now, sorted by name; `onChange` is called when that set changes (agents
 * appearing or going away), so that functions are re-placed.
 */
export interface AgentDirectory {
  start(): Promise<void>;
  stop(): Promise<void>;
  list(): AgentEndpoint[];
  onChange(listener: () => void): void;
}

/** Agent names from URLs: the `host:port` part, which is unique per agent. */
export function agentNameFromUrl(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

/**
 * A fixed list of agent URLs (standalone `esb up`, or AGENT_URLS). It never
 * changes; `setAgents` exists for callers (and tests) that manage agents themselves.
 */
export class StaticAgentDirectory implements AgentDirectory {
  private agents: AgentEndpoint[];
  private readonly listeners: Array<() => void> = [];

  constructor(agents: Array<string | AgentEndpoint>) {
    this.agents = StaticAgentDirectory.normalise(agents);
  }

  private static normalise(agents: Array<string | AgentEndpoint>): AgentEndpoint[] {
    return agents
      .map((a) => (typeof a === "string" ? { name: agentNameFromUrl(a), url: a.replace(/\/+$/, "") } : a))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  async start(): Promise<void> {}
  async stop(): Promise<void> {}

  list(): AgentEndpoint[] {
    return [...this.agents];
  }

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  /** Replaces the list and notifies listeners. */
  setAgents(agents: Array<string | AgentEndpoint>): void {
    this.agents = StaticAgentDirectory.normalise(agents);
    for (const l of this.listeners) l();
  }
}
