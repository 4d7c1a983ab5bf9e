import {
  CustomObjectsApi,
  KubeConfig,
  makeInformer,
  type Informer,
  type KubernetesListObject,
  type KubernetesObject,
  type ObjectCache,
} from "@kubernetes/client-node";
import {
  LAMBDA_FUNCTION_GROUP,
  LAMBDA_FUNCTION_PLURAL,
  LAMBDA_FUNCTION_VERSION,
  type LambdaFunction,
  type Logger,
} from "@esb/common";
import { FunctionCatalog } from "./function-catalog.js";

type LambdaFunctionObject = LambdaFunction & KubernetesObject;

/**
 * Functions from the Kubernetes API: a read-only informer (list + watch) on
 * `esb.dev/v1alpha1` LambdaFunctions in all namespaces. The informer relists by
 * itself when the watch reports 410 Gone; after other errors it is restarted
 * after a delay (the index keeps its last known content meanwhile).
 */
export class KubernetesFunctionRegistry extends FunctionCatalog {
  private informer: (Informer<LambdaFunctionObject> & ObjectCache<LambdaFunctionObject>) | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly kubeConfig: KubeConfig,
    private readonly defaultNamespace: string,
    logger: Logger,
    onRouteConflicts?: (count: number) => void,
    private readonly restartDelayMs = 2000,
  ) {
    super(logger, onRouteConflicts, [defaultNamespace]);
  }

  async start(): Promise<void> {
    this.stopped = false;
    const api = this.kubeConfig.makeApiClient(CustomObjectsApi);
    const path = `/apis/${LAMBDA_FUNCTION_GROUP}/${LAMBDA_FUNCTION_VERSION}/${LAMBDA_FUNCTION_PLURAL}`;
    const list = async (): Promise<KubernetesListObject<LambdaFunctionObject>> => {
      const result = (await api.listClusterCustomObject({
        group: LAMBDA_FUNCTION_GROUP,
        version: LAMBDA_FUNCTION_VERSION,
        plural: LAMBDA_FUNCTION_PLURAL,
      })) as KubernetesListObject<LambdaFunctionObject>;
      // A full listing replaces the index, so deletions missed while disconnected are applied.
      this.replaceAll(result.items, this.defaultNamespace);
      return result;
    };
    const informer = makeInformer<LambdaFunctionObject>(this.kubeConfig, path, list);
    this.informer = informer;
    informer.on("add", (fn) => this.upsert(fn, this.defaultNamespace));
    informer.on("update", (fn) => this.upsert(fn, this.defaultNamespace));
    informer.on("delete", (fn) =>
      this.remove(fn.metadata.namespace ?? this.defaultNamespace, fn.metadata.name),
    );
    informer.on("error", (err: unknown) => {
      if (this.stopped) return;
      this.logger.warn({ err }, "LambdaFunction watch failed; restarting");
      clearTimeout(this.restartTimer);
      this.restartTimer = setTimeout(() => {
        if (!this.stopped)
          informer
            .start()
            .catch((e: unknown) =>
              this.logger.error({ err: e }, "restarting the LambdaFunction informer failed"),
            );
      }, this.restartDelayMs);
    });
    await informer.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    await this.informer?.stop();
  }
}
