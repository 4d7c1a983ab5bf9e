import {
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from "@kubernetes/client-node";
import {
  LAMBDA_FUNCTION_API_VERSION,
  LAMBDA_FUNCTION_GROUP,
  LAMBDA_FUNCTION_KIND,
  LAMBDA_FUNCTION_PLURAL,
  LAMBDA_FUNCTION_VERSION,
  type LambdaFunction,
  type LambdaFunctionStatus,
  type Logger,
} from "@esb/common";
import { KubeInformer } from "@esb/common/kube-informer";
import { WORKERS_FINALIZER, functionKey, parseFunctionKey, type FunctionSource } from "./function-source.js";

/** Options of {@link KubernetesFunctionSource}. */
export interface KubernetesFunctionSourceOptions {
  /** Namespace to watch; empty = all namespaces. */
  namespace: string;
  /** Restart the watch (relist when its resourceVersion expired) when no event, bookmark or listing came for this long. Default 5 min. */
  stallTimeoutMs?: number;
  /** `reportingInstance` of Events (the pod name). */
  instance?: string;
  logger: Logger;
}

type LambdaFunctionObject = KubernetesObject;

/**
 * LambdaFunctions from the Kubernetes API through the shared {@link KubeInformer}
 * (list + watch on `esb.dev/v1alpha1` lambdafunctions, restarted with backoff
 * after failures and after a stall). Status goes through the status subresource
 * with JSON patches; Events are core/v1 Events.
 */
export class KubernetesFunctionSource implements FunctionSource {
  readonly mode = "kubernetes" as const;
  private informer?: KubeInformer<LambdaFunctionObject>;
  private readonly custom: CustomObjectsApi;
  private readonly core: CoreV1Api;
  private readonly recentEvents = new Map<string, number>();

  constructor(
    private readonly kc: KubeConfig,
    private readonly options: KubernetesFunctionSourceOptions,
  ) {
    this.custom = kc.makeApiClient(CustomObjectsApi);
    this.core = kc.makeApiClient(CoreV1Api);
  }

  async start(enqueue: (key: string) => void): Promise<void> {
    const ns = this.options.namespace;
    const g = LAMBDA_FUNCTION_GROUP;
    const v = LAMBDA_FUNCTION_VERSION;
    const list = async (): Promise<KubernetesListObject<LambdaFunctionObject>> =>
      (ns
        ? await this.custom.listNamespacedCustomObject({
            group: g,
            version: v,
            namespace: ns,
            plural: LAMBDA_FUNCTION_PLURAL,
          })
        : await this.custom.listClusterCustomObject({
            group: g,
            version: v,
            plural: LAMBDA_FUNCTION_PLURAL,
          })) as KubernetesListObject<LambdaFunctionObject>;
    const onObject = (obj: LambdaFunctionObject) => enqueue(functionKey(obj as unknown as LambdaFunction));
    this.informer = new KubeInformer<LambdaFunctionObject>(this.kc, {
      what: "LambdaFunction",
      path: ns
        ? `/apis/${g}/${v}/namespaces/${ns}/${LAMBDA_FUNCTION_PLURAL}`
        : `/apis/${g}/${v}/${LAMBDA_FUNCTION_PLURAL}`,
      list,
      logger: this.options.logger,
      stallTimeoutMs: this.options.stallTimeoutMs,
      onAdd: onObject,
      onUpdate: onObject,
      onDelete: onObject,
    });
    await this.informer.start();
  }

  /** The cache is complete once a listing has been processed. */
  isSynced(): boolean {
    return this.informer?.synced ?? false;
  }

  watches(namespace: string): boolean {
    return !this.options.namespace || this.options.namespace === namespace;
  }

  async stop(): Promise<void> {
    await this.informer?.stop();
  }

  keys(): string[] {
    return (this.informer?.list() ?? []).map((o) => functionKey(o as unknown as LambdaFunction));
  }

  get(key: string): LambdaFunction | undefined {
    const { namespace, name } = parseFunctionKey(key);
    return this.informer?.get(name, namespace) as unknown as LambdaFunction | undefined;
  }

  private ref(fn: LambdaFunction) {
    return {
      group: LAMBDA_FUNCTION_GROUP,
      version: LAMBDA_FUNCTION_VERSION,
      plural: LAMBDA_FUNCTION_PLURAL,
      namespace: fn.metadata.namespace ?? "default",
      name: fn.metadata.name,
    };
  }

  async ensureFinalizer(fn: LambdaFunction): Promise<LambdaFunction> {
    if (fn.metadata.finalizers?.includes(WORKERS_FINALIZER)) return fn;
    const fresh = (await this.custom.getNamespacedCustomObject(this.ref(fn))) as LambdaFunction;
    if (fresh.metadata.finalizers?.includes(WORKERS_FINALIZER)) return fresh;
    const body = fresh.metadata.finalizers
      ? [{ op: "add", path: "/metadata/finalizers/-", value: WORKERS_FINALIZER }]
      : [{ op: "add", path: "/metadata/finalizers", value: [WORKERS_FINALIZER] }];
    return (await this.custom.patchNamespacedCustomObject({ ...this.ref(fn), body })) as LambdaFunction;
  }

  async removeFinalizer(fn: LambdaFunction): Promise<void> {
    let fresh: LambdaFunction;
    try {
      fresh = (await this.custom.getNamespacedCustomObject(this.ref(fn))) as LambdaFunction;
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    const i = fresh.metadata.finalizers?.indexOf(WORKERS_FINALIZER) ?? -1;
    if (i < 0) return;
    // `test` guards against the list having changed since we read it.
    const body = [
      { op: "test", path: `/metadata/finalizers/${i}`, value: WORKERS_FINALIZER },
      { op: "remove", path: `/metadata/finalizers/${i}` },
    ];
    try {
      await this.custom.patchNamespacedCustomObject({ ...this.ref(fn), body });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  async updateStatus(fn: LambdaFunction, status: LambdaFunctionStatus): Promise<void> {
    await this.custom.patchNamespacedCustomObjectStatus({
      ...this.ref(fn),
      body: [{ op: "add", path: "/status", value: status }],
    });
  }

  async readConfigMap(namespace: string, name: string): Promise<Record<string, Uint8Array> | undefined> {
    try {
      const cm = await this.core.readNamespacedConfigMap({ namespace, name });
      const files: Record<string, Uint8Array> = {};
      for (const [k, v] of Object.entries(cm.data ?? {})) files[k] = new TextEncoder().encode(v);
      for (const [k, v] of Object.entries(cm.binaryData ?? {}))
        files[k] = new Uint8Array(Buffer.from(v, "base64"));
      return files;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async recordEvent(
    fn: LambdaFunction,
    type: "Normal" | "Warning",
    reason: string,
    message: string,
  ): Promise<void> {
    // Same event for the same object within a minute is recorded once.
    const dedupe = `${fn.metadata.uid}/${type}/${reason}/${message}`;
    const now = Date.now();
    if ((this.recentEvents.get(dedupe) ?? 0) > now - 60_000) return;
    this.recentEvents.set(dedupe, now);
    if (this.recentEvents.size > 1000)
      for (const [k, t] of this.recentEvents) if (t < now - 60_000) this.recentEvents.delete(k);
    const namespace = fn.metadata.namespace ?? "default";
    const time = new Date();
    try {
      await this.core.createNamespacedEvent({
        namespace,
        body: {
          metadata: {
            name: `${fn.metadata.name}.${now.toString(16)}${Math.floor(Math.random() * 0xffff).toString(16)}`,
            namespace,
          },
          involvedObject: {
            apiVersion: LAMBDA_FUNCTION_API_VERSION,
            kind: LAMBDA_FUNCTION_KIND,
            name: fn.metadata.name,
            namespace,
            uid: fn.metadata.uid,
            resourceVersion: fn.metadata.resourceVersion,
          },
          type,
          reason,
          message,
          count: 1,
          firstTimestamp: time,
          lastTimestamp: time,
          source: { component: "esb-controller" },
          reportingComponent: "esb.dev/controller",
          reportingInstance: this.options.instance ?? "esb-controller",
        },
      });
    } catch (err) {
      // Events are best effort: never fail a reconcile because of one.
      this.options.logger.warn(
        { err: String((err as Error)?.message ?? err), reason },
        "could not record event",
      );
    }
  }
}

/** True when a client-node error is a 404 from the API server. */
export function isNotFound(err: unknown): boolean {
  const e = err as { code?: number; statusCode?: number; body?: unknown };
  return e?.code === 404 || e?.statusCode === 404;
}
