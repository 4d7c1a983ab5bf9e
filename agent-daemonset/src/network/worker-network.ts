/**
 * The `WorkerNetwork` interface: gives each worker its own network namespace and
 * an IP address reachable from the agent (and, in cluster mode, from other nodes).
 * `cni-network.ts` implements it with CNI plugins.
 */
export interface WorkerNetwork {
  /** Creates the worker's netns, runs CNI ADD; returns its IP and the netns path. */
  attach(workerId: string): Promise<{ ip: string; netnsPath: string }>;
  /** CNI DEL + removes the netns; idempotent. */
  detach(workerId: string): Promise<void>;
  /** Worker ids that have network allocations (for orphan cleanup). */
  list(): Promise<string[]>;
}
