import {
  CustomObjectsApi,
  KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from "@kubernetes/client-node";
import {
  LAMBDA_FUNCTION_GROUP,
  LAMBDA_FUNCTION_PLURAL,
  LAMBDA_FUNCTION_VERSION,
  type LambdaFunction,
  type Logger,
} from "@esb/common";
import { KubeInformer } from "@esb/common/kube-informer";
import { FunctionCatalog } from "./function-catalog.js";

type LambdaFunctionObject = LambdaFunction & KubernetesObject;

/**
 * Functions from the Kubernetes API: a read-only informer (list + watch) on
 * `esb.dev/v1alpha1` LambdaFunctions in all namespaces, through the shared
 * {@link KubeInformer} (restarts with backoff, stall detection). The index keeps
 * its last known content while the API server is unreachable.
 */
export class KubernetesFunctionRegistry extends FunctionCatalog {
  private informer: KubeInformer<LambdaFunctionObject> | undefined;

  constructor(
    private readonly kubeConfig: KubeConfig,
    private readonly defaultNamespace: string,
    logger: Logger,
    onRouteConflicts?: (count: number) => void,
    /** Restart a watch that delivered nothing (no event, bookmark or listing) for this long. */
    private readonly stallTimeoutMs?: number,
  ) {
    super(logger, onRouteConflicts, [defaultNamespace]);
  }

  async start(): Promise<void> {
    const api = this.kubeConfig.makeApiClient(CustomObjectsApi);
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
    this.informer ??= new KubeInformer<LambdaFunctionObject>(this.kubeConfig, {
      what: "LambdaFunction",
      path: `/apis/${LAMBDA_FUNCTION_GROUP}/${LAMBDA_FUNCTION_VERSION}/${LAMBDA_FUNCTION_PLURAL}`,
      list,
      logger: this.logger,
      stallTimeoutMs: this.stallTimeoutMs,
      onAdd: (fn) => this.upsert(fn, this.defaultNamespace),
      onUpdate: (fn) => this.upsert(fn, this.defaultNamespace),
      onDelete: (fn) => this.remove(fn.metadata.namespace ?? this.defaultNamespace, fn.metadata.name),
    });
    await this.informer.start();
  }

  async stop(): Promise<void> {
    await this.informer?.stop();
  }
}
