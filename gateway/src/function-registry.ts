import type { LambdaFunction, RouteTable } from "@esb/common";

/**
 * Where the gateway learns which LambdaFunctions exist: the Kubernetes API
 * ({@link KubernetesFunctionRegistry}) or a folder of manifests
 * ({@link FolderFunctionRegistry}). Nothing else in the gateway depends on which.
 */
export interface FunctionRegistry {
  /** Starts watching; resolves once the first full listing is loaded. */
  start(): Promise<void>;
  /** Stops watching. */
  stop(): Promise<void>;
  /** True once the first listing has been loaded. */
  readonly synced: boolean;
  /** The function `namespace/name`, if it exists and is not being deleted. */
  get(namespace: string, name: string): LambdaFunction | undefined;
  /** All known functions. */
  list(): LambdaFunction[];
  /** The HTTP routes of the served namespaces' functions (rebuilt when functions change). */
  routes(): RouteTable;
  /**
   * Chooses the namespaces whose functions' HTTP routes are served, or `"*"`
   * for all (one shared path space). Default: the registry's default namespace.
   */
  serveRoutesOf(namespaces: readonly string[] | "*"): void;
  /** Calls `listener` after every change; returns a function that unsubscribes. */
  onChange(listener: () => void): () => void;
}
