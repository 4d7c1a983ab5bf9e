import type { LambdaFunction, Logger } from "@esb/common";
import type { FunctionRegistry } from "./function-registry.js";
import { RouteTable } from "@esb/common";

/**
 * The in-memory index of LambdaFunctions shared by the registry implementations:
 * lookups, the route table (rebuilt lazily after a change, with route conflicts
 * logged once per rebuild) and change listeners. Subclasses feed it and
 * implement start/stop.
 */
export abstract class FunctionCatalog implements FunctionRegistry {
  private readonly functions = new Map<string, LambdaFunction>();
  private readonly listeners = new Set<() => void>();
  private routeTable: RouteTable | undefined;
  private isSynced = false;

  constructor(
    protected readonly logger: Logger,
    /** Called with the number of route conflicts each time the route table is rebuilt. */
    private readonly onRouteConflicts: (count: number) => void = () => {},
    /** Namespaces whose routes are served until {@link serveRoutesOf} says otherwise. */
    private routeNamespaces: readonly string[] | "*" = "*",
  ) {}

  serveRoutesOf(namespaces: readonly string[] | "*"): void {
    this.routeNamespaces = namespaces;
    this.routeTable = undefined;
    this.routes();
  }

  abstract start(): Promise<void>;
  abstract stop(): Promise<void>;

  get synced(): boolean {
    return this.isSynced;
  }

  get(namespace: string, name: string): LambdaFunction | undefined {
    return this.functions.get(`${namespace}/${name}`);
  }

  list(): LambdaFunction[] {
    return [...this.functions.values()];
  }

  routes(): RouteTable {
    if (!this.routeTable) {
      this.routeTable = new RouteTable(this.list(), { namespaces: this.routeNamespaces });
      for (const c of this.routeTable.conflicts) {
        this.logger.warn(
          {
            routeKey: c.routeKey,
            servedBy: `${c.servedBy?.namespace}/${c.servedBy?.name}`,
            shadowed: `${c.function.namespace}/${c.function.name}`,
          },
          "route conflict: the route is declared by two functions; the older one serves it",
        );
      }
      this.onRouteConflicts(this.routeTable.conflicts.length);
    }
    return this.routeTable;
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Adds or replaces one function; functions being deleted are removed instead. */
  protected upsert(fn: LambdaFunction, defaultNamespace: string): void {
    const key = `${fn.metadata.namespace ?? defaultNamespace}/${fn.metadata.name}`;
    if (fn.metadata.deletionTimestamp) {
      this.functions.delete(key);
    } else {
      this.functions.set(key, {
        ...fn,
        metadata: { ...fn.metadata, namespace: fn.metadata.namespace ?? defaultNamespace },
      });
    }
    this.changed();
  }

  /** Removes one function. */
  protected remove(namespace: string, name: string): void {
    if (this.functions.delete(`${namespace}/${name}`)) this.changed();
  }

  /** Replaces the whole index (a full listing) and marks the registry synced. */
  protected replaceAll(functions: LambdaFunction[], defaultNamespace: string): void {
    this.functions.clear();
    for (const fn of functions) {
      if (fn.metadata.deletionTimestamp) continue;
      const namespace = fn.metadata.namespace ?? defaultNamespace;
      this.functions.set(`${namespace}/${fn.metadata.name}`, {
        ...fn,
        metadata: { ...fn.metadata, namespace },
      });
    }
    this.isSynced = true;
    this.changed();
  }

  /** Marks the registry synced without changing it. */
  protected markSynced(): void {
    this.isSynced = true;
  }

  private changed(): void {
    this.routeTable = undefined;
    // Build the table now so conflicts are reported when they appear, not on the first request.
    this.routes();
    for (const listener of this.listeners) {
      try {
        listener();
      } catch (err) {
        this.logger.error({ err }, "function registry listener failed");
      }
    }
  }
}
