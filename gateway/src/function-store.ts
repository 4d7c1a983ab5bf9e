import type { FunctionCodeSource, LambdaFunction } from "@esb/common";
import type { ZipSummary } from "./function-code-zip.js";

/**
 * Annotations in which a LambdaFunction keeps what the Lambda API says about it and the spec has
 * no field for. They are ordinary metadata: `kubectl get lf -o yaml` shows them, and a function
 * made without them (kubectl apply, a hand-written manifest) simply has none.
 */
export const LAMBDA_ANNOTATIONS = {
  /** Changes with every write through the API: the RevisionId, and how the gateway sees its write land. */
  revisionId: "lambda.esb.dev/revision-id",
  description: "lambda.esb.dev/description",
  role: "lambda.esb.dev/role",
  /** Base64 sha256 of the uploaded zip (AWS's CodeSha256). */
  codeSha256: "lambda.esb.dev/code-sha256",
  /** Bytes of the uploaded zip (AWS's CodeSize). */
  codeSize: "lambda.esb.dev/code-size",
  /** ISO time of the last write through the API (AWS's LastModified). */
  lastModified: "lambda.esb.dev/last-modified",
  /** JSON object of the function's tags. */
  tags: "lambda.esb.dev/tags",
} as const;

/** Code stored for a function: the code source its spec names, and what the zip held. */
export interface StoredCode {
  code: FunctionCodeSource;
  summary: ZipSummary;
}

/**
 * Where the Lambda control-plane API writes LambdaFunctions and their code: the Kubernetes API
 * (objects in the gateway's namespace, code in ConfigMaps) or the functions folder of `esb up`
 * (manifests, code in folders beside them). Reads are authoritative (not a cache). Errors are
 * {@link LambdaApiError}s in AWS's terms (ResourceConflictException for an existing name,
 * ResourceNotFoundException, InvalidParameterValueException for what the store refuses).
 */
export interface FunctionStore {
  /** The function `namespace/name` as stored now, or undefined. */
  get(namespace: string, name: string): Promise<LambdaFunction | undefined>;
  /** Creates the function; ResourceConflictException when the name is taken. */
  create(fn: LambdaFunction): Promise<LambdaFunction>;
  /**
   * Replaces the function with `change(current)`, retrying on a concurrent write;
   * ResourceNotFoundException when it does not exist. `change` may throw to refuse.
   */
  update(
    namespace: string,
    name: string,
    change: (current: LambdaFunction) => LambdaFunction,
  ): Promise<LambdaFunction>;
  /** Deletes the function; ResourceNotFoundException when it does not exist. */
  delete(namespace: string, name: string): Promise<void>;
  /**
   * Stores a deployment package for function `namespace/name` (checked and unpacked safely) and
   * returns the code source that names it. Nothing refers to it until a spec does; unreferenced
   * code is removed by {@link pruneCode}.
   */
  storeCode(namespace: string, name: string, zip: Buffer): Promise<StoredCode>;
  /** Removes stored code of `namespace/name` that its current spec (if any) does not name. */
  pruneCode(namespace: string, name: string): Promise<void>;
}
