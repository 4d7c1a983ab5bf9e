/**
 * The `WorkerNetwork` interface: gives each worker its own network namespace and
 * an IP address reachable from the agent (and, in cluster mode, from other nodes),
 * isolated from other workers, the node and private ranges.
 * `cni-network.ts` implements it with CNI plugins.
 */
export interface WorkerNetwork {
  /**
   * Creates the worker's netns, runs CNI ADD and installs its isolation rules
   * (see worker-firewall.ts); returns its IP and the netns path. Throws, having
   * undone everything, rather than return a namespace without its rules.
   */
  attach(workerId: string): Promise<{ ip: string; netnsPath: string }>;
  /** CNI DEL + removes the netns; idempotent. */
  detach(workerId: string): Promise<void>;
  /** Worker ids that have network allocations (for orphan cleanup). */
  list(): Promise<string[]>;
}
