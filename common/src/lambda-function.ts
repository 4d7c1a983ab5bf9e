/**
 * The LambdaFunction custom resource (`esb.dev/v1alpha1`), as TypeScript types.
 * Field names follow AWS CreateFunction where one exists. The CRD schema in
 * `crds/esb.dev_lambdafunctions.yaml` is the authority for validation in
 * Kubernetes; `validateLambdaFunction` (lambda-function-validation.ts) applies
 * the same rules to manifests read from a folder.
 */

/** API group/version of LambdaFunction. */
export const LAMBDA_FUNCTION_API_VERSION = "esb.dev/v1alpha1";
/** Kind name of the custom resource. */
export const LAMBDA_FUNCTION_KIND = "LambdaFunction";
/** Plural resource name used in API paths. */
export const LAMBDA_FUNCTION_PLURAL = "lambdafunctions";
/** API group. */
export const LAMBDA_FUNCTION_GROUP = "esb.dev";
/** API version within the group. */
export const LAMBDA_FUNCTION_VERSION = "v1alpha1";

/** Managed runtimes that ESB provides base images for. */
export const MANAGED_RUNTIMES = [
  "nodejs24.x",
  "nodejs22.x",
  "python3.13",
  "python3.11",
  "provided",
  "provided.al2023",
] as const;
/** One of {@link MANAGED_RUNTIMES}. */
export type ManagedRuntime = (typeof MANAGED_RUNTIMES)[number];

/** Where a managed-runtime function's code comes from (exactly one field). */
export interface FunctionCodeSource {
  /**
   * A ConfigMap in the function's namespace; each key is a file under /var/task, or, with
   * `zipKey`, that key's binary value is a zip of the code (unpacked by the controller).
   */
  configMap?: { name: string; zipKey?: string };
  /** Files given inline: file name (relative to /var/task) → content. */
  inline?: Record<string, string>;
  /** A folder on the machine running ESB (standalone mode only). */
  path?: string;
}

/** An HTTP route served by the gateway for a function. */
export interface HttpRoute {
  /** Path, possibly with `{param}` segments and a trailing `{proxy+}`. */
  path: string;
  /** HTTP methods; absent or `ANY` means all. */
  methods?: string[];
}

/** `spec` of a LambdaFunction. */
export interface LambdaFunctionSpec {
  image?: string;
  runtime?: ManagedRuntime;
  handler?: string;
  code?: FunctionCodeSource;
  imageConfig?: { command?: string[]; entryPoint?: string[]; workingDirectory?: string };
  environment?: { variables?: Record<string, string> };
  memorySize?: number;
  timeout?: number;
  ephemeralStorage?: number;
  reservedConcurrency?: number;
  provisionedConcurrency?: number;
  scaling?: { pauseAfterMs?: number; keepWarmSeconds?: number };
  http?: { routes?: HttpRoute[]; payloadFormat?: "1.0" | "2.0" };
}

/** A condition in `status.conditions`, as Kubernetes API conventions define it. */
export interface Condition {
  type: string;
  status: "True" | "False" | "Unknown";
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

/** `status` of a LambdaFunction, written by the controller. */
export interface LambdaFunctionStatus {
  observedGeneration?: number;
  conditions?: Condition[];
  readyWorkers?: number;
  warmWorkers?: number;
  nodes?: string[];
  url?: string;
  imageDigest?: string;
  /** Revision (content hash of the runnable spec) the agents were last prepared with. */
  revision?: string;
}

/** A LambdaFunction object. */
export interface LambdaFunction {
  apiVersion: typeof LAMBDA_FUNCTION_API_VERSION;
  kind: typeof LAMBDA_FUNCTION_KIND;
  metadata: {
    name: string;
    namespace?: string;
    generation?: number;
    resourceVersion?: string;
    uid?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    finalizers?: string[];
    deletionTimestamp?: string;
    creationTimestamp?: string;
  };
  spec: LambdaFunctionSpec;
  status?: LambdaFunctionStatus;
}

/** Defaults applied when a field is absent (same as the CRD schema defaults). */
export const LAMBDA_FUNCTION_DEFAULTS = {
  memorySize: 128,
  timeout: 3,
  ephemeralStorage: 512,
  pauseAfterMs: 50,
  keepWarmSeconds: 600,
  payloadFormat: "2.0",
} as const;
