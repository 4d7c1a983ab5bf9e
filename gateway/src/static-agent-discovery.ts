import type { AgentDiscovery } from "./agent-discovery.js";

/** A fixed list of agent URLs (standalone: the local agent). */
export class StaticAgentDiscovery implements AgentDiscovery {
  constructor(private readonly urls: string[]) {}

  async start(): Promise<void> {}

  async stop(): Promise<void> {}

  agents(): string[] {
    return [...this.urls];
  }

  onChange(): () => void {
    return () => {};
  }
}
