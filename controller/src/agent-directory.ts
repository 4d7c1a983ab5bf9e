/** An ESB agent (one per node) as the controller reaches it. */
export interface AgentEndpoint {
  /** Node name (Kubernetes) or a stable label (standalone); shown in `status.nodes`. */
  name: string;
  /** Base URL of its AgentService (gRPC over HTTP/2 cleartext), e.g. `http://10.0.0.5:50051`. */
  url: string;
}

/**
 * An agent that exists, whether or not it can be reached now: in Kubernetes
 * every pod of the agent DaemonSet, ready or not. Workers may live on its node,
 * so a function's workers count as destroyed only once this agent said so.
 */
export interface KnownAgent {
  /** Node name (Kubernetes; the pod name while unscheduled) or a stable label (standalone). */
  name: string;
  /** Where its AgentService is reached; undefined while it has no address (pending pod). */
  url?: string;
  /** True when it is one of {@link AgentDirectory.list}'s agents (up and ready). */
  ready: boolean;
  /** Why it is not ready (e.g. `pod Pending`, `pod not Ready`, `pod terminating`), for messages. */
  state?: string;
}

/**
 * Where the controller finds the agents. `list()` returns the agents that are up
 * now, sorted by name (where functions are placed); `known()` every agent that
 * exists, reachable or not (where workers may be). Neither is complete before
 * `isSynced()` is true: until then the controller must not conclude that a
 * function has no workers left. `onChange` is called when either set changes or
 * the directory becomes synced, so that functions are re-placed.
 */
export interface AgentDirectory {
  start(): Promise<void>;
  stop(): Promise<void>;
  list(): AgentEndpoint[];
  /** Every agent that exists (ready or not), sorted by name; see {@link KnownAgent}. */
  known(): KnownAgent[];
  /** True once the directory has learned which agents exist (Kubernetes: a list of the agent pods succeeded). */
  isSynced(): boolean;
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
 * A fixed list of agent URLs (standalone `esb up`, or AGENT_URLS). It is synced
 * from the start (unless `synced: false`) and every agent in it is known and ready;
 * `setAgents` exists for callers (and tests) that manage agents themselves, and
 * marks it synced.
 */
export class StaticAgentDirectory implements AgentDirectory {
  private agents: AgentEndpoint[];
  private readonly listeners: Array<() => void> = [];
  private synced: boolean;

  /** @param options.synced false: knows no agent yet, like a new leader's Kubernetes directory before its first list. */
  constructor(agents: Array<string | AgentEndpoint>, options: { synced?: boolean } = {}) {
    this.agents = StaticAgentDirectory.normalise(agents);
    this.synced = options.synced ?? true;
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

  known(): KnownAgent[] {
    return this.agents.map((a) => ({ ...a, ready: true }));
  }

  isSynced(): boolean {
    return this.synced;
  }

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  /** Replaces the list, marks the directory synced and notifies listeners. */
  setAgents(agents: Array<string | AgentEndpoint>): void {
    this.agents = StaticAgentDirectory.normalise(agents);
    this.synced = true;
    for (const l of this.listeners) l();
  }
}
