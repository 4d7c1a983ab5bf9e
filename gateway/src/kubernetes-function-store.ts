import { CoreV1Api, CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { createHash } from "node:crypto";
import {
  LAMBDA_FUNCTION_GROUP,
  LAMBDA_FUNCTION_PLURAL,
  LAMBDA_FUNCTION_VERSION,
  type LambdaFunction,
} from "@esb/common";
import { readZipCode } from "./function-code-zip.js";
import type { FunctionStore, StoredCode } from "./function-store.js";
import { VERSION_OF } from "./function-versions.js";
import { LambdaApiError } from "./lambda-api-error.js";

/** Label of the ConfigMaps that hold a function's uploaded code: the function's name. */
export const CODE_CONFIGMAP_LABEL = "lambda.esb.dev/code-of";
/** What a ConfigMap may hold (the API server's limit on data + binaryData). */
const CONFIGMAP_MAX_BYTES = 1024 * 1024;
/** The key of a code ConfigMap that holds the zip (`spec.code.configMap.zipKey`). */
const CODE_ZIP_KEY = "code.zip";

/**
 * {@link FunctionStore} on the Kubernetes API: LambdaFunctions in the gateway's namespace (the
 * chart's Role lets the gateway create, update and delete LambdaFunctions and ConfigMaps there and
 * nowhere else), so `kubectl get lf` and the Lambda API always agree. Updates are optimistic
 * (resourceVersion) and retried on a conflict with another writer.
 *
 * Code: the zip (checked first) is kept as is in an immutable ConfigMap named after the function
 * and the zip's hash (`binaryData` key `code.zip`), which `spec.code.configMap` names with
 * `zipKey`; the controller unpacks it with the same reader and sends the files to every node's
 * agent, as for any ConfigMap code, so every node gets the code through the API server. A
 * ConfigMap holds at most 1 MiB: a larger zip is refused with InvalidParameterValueException (a
 * store for larger code is future work: docs/lambda-api.md).
 */
export class KubernetesFunctionStore implements FunctionStore {
  private readonly objects: CustomObjectsApi;
  private readonly core: CoreV1Api;

  constructor(kubeConfig: KubeConfig) {
    this.objects = kubeConfig.makeApiClient(CustomObjectsApi);
    this.core = kubeConfig.makeApiClient(CoreV1Api);
  }

  async get(namespace: string, name: string): Promise<LambdaFunction | undefined> {
    try {
      return (await this.objects.getNamespacedCustomObject({
        ...this.kind(namespace),
        name,
      })) as LambdaFunction;
    } catch (err) {
      if (status(err) === 404) return undefined;
      throw apiError(err, name);
    }
  }

  async create(fn: LambdaFunction): Promise<LambdaFunction> {
    try {
      return (await this.objects.createNamespacedCustomObject({
        ...this.kind(fn.metadata.namespace!),
        body: fn,
      })) as LambdaFunction;
    } catch (err) {
      throw apiError(err, fn.metadata.name);
    }
  }

  async update(
    namespace: string,
    name: string,
    change: (current: LambdaFunction) => LambdaFunction,
  ): Promise<LambdaFunction> {
    for (let attempt = 0; ; attempt++) {
      const current = await this.get(namespace, name);
      if (!current || current.metadata.deletionTimestamp)
        throw new LambdaApiError("ResourceNotFoundException", `Function not found: ${name}`);
      const next = change(structuredClone(current));
      try {
        return (await this.objects.replaceNamespacedCustomObject({
          ...this.kind(namespace),
          name,
          body: {
            ...next,
            metadata: { ...next.metadata, resourceVersion: current.metadata.resourceVersion },
          },
        })) as LambdaFunction;
      } catch (err) {
        // Someone else (kubectl, another gateway replica) wrote in between: read again and redo.
        if (status(err) === 409 && attempt < 4) continue;
        throw apiError(err, name);
      }
    }
  }

  async delete(namespace: string, name: string): Promise<void> {
    try {
      await this.objects.deleteNamespacedCustomObject({ ...this.kind(namespace), name });
    } catch (err) {
      throw apiError(err, name);
    }
  }

  async storeCode(namespace: string, name: string, zip: Buffer): Promise<StoredCode> {
    // Checked here (names, limits) so that a bad zip is the caller's error, not a Failed function.
    const summary = await readZipCode(zip, async () => {});
    if (zip.length + CODE_ZIP_KEY.length > CONFIGMAP_MAX_BYTES)
      throw new LambdaApiError(
        "InvalidParameterValueException",
        `The zip has ${zip.length} bytes; on Kubernetes, ESB keeps an uploaded zip in a ConfigMap, which holds at most ${CONFIGMAP_MAX_BYTES} bytes (a store for larger code is not available yet; docs/lambda-api.md)`,
      );
    const hex = createHash("sha256").update(zip).digest("hex").slice(0, 10);
    const cmName = `${name.slice(0, 253 - 16)}-code-${hex}`;
    try {
      await this.core.createNamespacedConfigMap({
        namespace,
        body: {
          metadata: { name: cmName, labels: { [CODE_CONFIGMAP_LABEL]: labelValue(name) } },
          binaryData: { [CODE_ZIP_KEY]: zip.toString("base64") },
          immutable: true,
        },
      });
    } catch (err) {
      // Same name = same zip content (the hash is in the name): already stored.
      if (status(err) !== 409) throw apiError(err, name);
    }
    return { code: { configMap: { name: cmName, zipKey: CODE_ZIP_KEY } }, summary };
  }

  async pruneCode(namespace: string, name: string): Promise<void> {
    // The function and its published versions (function-versions.ts) keep their code; one being
    // deleted (the controller's finalizer still runs) needs it no more.
    const listed = (await this.objects.listNamespacedCustomObject(this.kind(namespace))) as {
      items: LambdaFunction[];
    };
    const keep = new Set(
      listed.items
        .filter((f) => f.metadata.name === name || f.metadata.annotations?.[VERSION_OF] === name)
        .filter((f) => !f.metadata.deletionTimestamp)
        .map((f) => f.spec.code?.configMap?.name),
    );
    const list = await this.core.listNamespacedConfigMap({
      namespace,
      labelSelector: `${CODE_CONFIGMAP_LABEL}=${labelValue(name)}`,
    });
    for (const cm of list.items) {
      const n = cm.metadata?.name;
      if (!n || keep.has(n)) continue;
      try {
        await this.core.deleteNamespacedConfigMap({ namespace, name: n });
      } catch (err) {
        if (status(err) !== 404) throw apiError(err, name);
      }
    }
  }

  private kind(namespace: string) {
    return {
      group: LAMBDA_FUNCTION_GROUP,
      version: LAMBDA_FUNCTION_VERSION,
      plural: LAMBDA_FUNCTION_PLURAL,
      namespace,
    };
  }
}

/** Label values are at most 63 characters of a restricted set; long names are shortened with a hash. */
function labelValue(name: string): string {
  if (name.length <= 63 && /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(name)) return name;
  return `${name.slice(0, 40).replace(/[^a-z0-9]+$/, "")}-${createHash("sha256").update(name).digest("hex").slice(0, 16)}`;
}

function status(err: unknown): number | undefined {
  const e = err as { code?: number; statusCode?: number };
  return e?.code ?? e?.statusCode;
}

/** An API server refusal in the Lambda API's terms. */
function apiError(err: unknown, name: string): Error {
  const code = status(err);
  const message = (err as { body?: unknown }).body;
  const text = typeof message === "string" ? safeMessage(message) : (err as Error).message;
  if (code === 404) return new LambdaApiError("ResourceNotFoundException", `Function not found: ${name}`);
  if (code === 409) return new LambdaApiError("ResourceConflictException", `Function already exist: ${name}`);
  // Schema and CEL rules of the CRD: the caller's input was invalid.
  if (code === 422 || code === 400) return new LambdaApiError("InvalidParameterValueException", text);
  if (code === 403)
    return new LambdaApiError(
      "ServiceException",
      `The gateway's Kubernetes permissions do not allow this: ${text}`,
    );
  return err instanceof Error ? err : new Error(String(err));
}

function safeMessage(body: string): string {
  try {
    const parsed = JSON.parse(body) as { message?: string };
    return parsed.message ?? body;
  } catch {
    return body;
  }
}
