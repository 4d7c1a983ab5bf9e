/**
 * Which agents exist: a fixed list (standalone, {@link StaticAgentDiscovery}) or
 * the agent pods of the DaemonSet ({@link KubernetesAgentDiscovery}).
 */
export interface AgentDiscovery {
  /** Starts discovering; resolves once the first list is known. */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Base URLs (`http://host:port`) of the agents known now. */
  agents(): string[];
  /** Calls `listener` whenever the list changes; returns a function that unsubscribes. */
  onChange(listener: () => void): () => void;
}
