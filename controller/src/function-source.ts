import type { LambdaFunction, LambdaFunctionStatus } from "@esb/common";

/** Finalizer that keeps a LambdaFunction until its workers are destroyed on every node. */
export const WORKERS_FINALIZER = "esb.dev/workers";

/** Key of a LambdaFunction in sources and the work queue: `namespace/name`. */
export function functionKey(fn: { metadata: { namespace?: string; name: string } }): string {
  return `${fn.metadata.namespace ?? "default"}/${fn.metadata.name}`;
}

/** Splits a {@link functionKey}. */
export function parseFunctionKey(key: string): { namespace: string; name: string } {
  const i = key.indexOf("/");
  return { namespace: key.slice(0, i), name: key.slice(i + 1) };
}

/**
 * Where LambdaFunctions come from and where their status goes: the Kubernetes
 * API (informer) or a folder of manifests (standalone). The reconciler only
 * talks to this interface, so nothing it does depends on the source.
 */
export interface FunctionSource {
  /** `kubernetes`: finalizers, ConfigMaps and Events exist, `code.path` does not. */
  readonly mode: "kubernetes" | "standalone";
  /** Starts watching; `enqueue(key)` is called for every added, changed or removed function. */
  start(enqueue: (key: string) => void): Promise<void>;
  stop(): Promise<void>;
  /** Keys of all functions currently known (for resync). */
  keys(): string[];
  /**
   * True once `keys()` is the complete set of live functions (Kubernetes: a list
   * of LambdaFunctions succeeded; folder: the first scan is done). Workers of
   * functions missing from it are only treated as orphans when this is true.
   */
  isSynced(): boolean;
  /** True when functions of `namespace` are this source's (a source may watch one namespace only). */
  watches(namespace: string): boolean;
  /** The current (cached) object, or undefined when it no longer exists. */
  get(key: string): LambdaFunction | undefined;
  /** Adds {@link WORKERS_FINALIZER} if missing; returns the updated object. */
  ensureFinalizer(fn: LambdaFunction): Promise<LambdaFunction>;
  /** Removes {@link WORKERS_FINALIZER} (the object may then disappear). */
  removeFinalizer(fn: LambdaFunction): Promise<void>;
  /** Writes `status` (through the status subresource in Kubernetes). */
  updateStatus(fn: LambdaFunction, status: LambdaFunctionStatus): Promise<void>;
  /** Files of a ConfigMap (key → content), or undefined when it does not exist. */
  readConfigMap(namespace: string, name: string): Promise<Record<string, Uint8Array> | undefined>;
  /** Reports a transition or failure (Kubernetes Event; a log line standalone). */
  recordEvent(fn: LambdaFunction, type: "Normal" | "Warning", reason: string, message: string): Promise<void>;
}
