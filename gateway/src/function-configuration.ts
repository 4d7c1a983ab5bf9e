import {
  LAMBDA_FUNCTION_API_VERSION,
  LAMBDA_FUNCTION_KIND,
  MANAGED_RUNTIMES,
  validateLambdaFunction,
  type LambdaFunction,
  type LambdaFunctionSpec,
} from "@esb/common";
import { functionArn, type FunctionKey } from "./function-name.js";
import { functionStateOf } from "./function-state.js";
import { LAMBDA_ANNOTATIONS as A } from "./function-store.js";
import { LambdaApiError } from "./lambda-api-error.js";

/** The fields of CreateFunction / UpdateFunctionConfiguration that ESB maps onto a LambdaFunction. */
export interface FunctionSettings {
  Runtime?: unknown;
  Handler?: unknown;
  Role?: unknown;
  Description?: unknown;
  Timeout?: unknown;
  MemorySize?: unknown;
  Environment?: { Variables?: unknown } | null;
  ImageConfig?: { EntryPoint?: unknown; Command?: unknown; WorkingDirectory?: unknown } | null;
  EphemeralStorage?: { Size?: unknown } | null;
  Layers?: unknown;
  VpcConfig?: { SubnetIds?: unknown[]; SecurityGroupIds?: unknown[] } | null;
  FileSystemConfigs?: unknown;
  DeadLetterConfig?: { TargetArn?: unknown } | null;
  Architectures?: unknown;
}

const invalid = (message: string) => new LambdaApiError("InvalidParameterValueException", message);

/** The architecture this gateway's nodes run (AWS's names). */
export const NODE_ARCHITECTURE = process.arch === "arm64" ? "arm64" : "x86_64";

/**
 * Applies the settings of a CreateFunction or UpdateFunctionConfiguration request to `fn` (in
 * place): spec fields and the description/role annotations. Refuses what ESB cannot honour
 * (layers, VPC subnets, file systems, dead-letter queues, another architecture) and an unknown
 * runtime with InvalidParameterValueException, rather than accepting and silently ignoring it.
 */
export function applySettings(fn: LambdaFunction, s: FunctionSettings): void {
  const spec = fn.spec;
  const ann = (fn.metadata.annotations ??= {});
  if (s.Runtime !== undefined && s.Runtime !== null) {
    if (typeof s.Runtime !== "string" || !(MANAGED_RUNTIMES as readonly string[]).includes(s.Runtime))
      throw invalid(
        `Value ${JSON.stringify(s.Runtime)} at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: [${MANAGED_RUNTIMES.join(", ")}]`,
      );
    spec.runtime = s.Runtime as LambdaFunctionSpec["runtime"];
  }
  if (s.Handler !== undefined && s.Handler !== null) spec.handler = str(s.Handler, "Handler");
  if (s.Role !== undefined && s.Role !== null) ann[A.role] = str(s.Role, "Role");
  if (s.Description !== undefined && s.Description !== null) {
    const d = str(s.Description, "Description");
    if (d.length > 256) throw invalid("Description must be at most 256 characters");
    if (d) ann[A.description] = d;
    else delete ann[A.description];
  }
  if (s.Timeout !== undefined && s.Timeout !== null) spec.timeout = int(s.Timeout, "Timeout");
  if (s.MemorySize !== undefined && s.MemorySize !== null) spec.memorySize = int(s.MemorySize, "MemorySize");
  if (s.EphemeralStorage?.Size !== undefined)
    spec.ephemeralStorage = int(s.EphemeralStorage.Size, "EphemeralStorage.Size");
  if (s.Environment) {
    const vars = s.Environment.Variables ?? {};
    if (typeof vars !== "object" || vars === null || Array.isArray(vars))
      throw invalid("Environment.Variables must be a map of strings");
    const entries = Object.entries(vars as Record<string, unknown>);
    if (entries.some(([, v]) => typeof v !== "string"))
      throw invalid("Environment.Variables values must be strings");
    if (entries.length > 0)
      spec.environment = { variables: Object.fromEntries(entries) as Record<string, string> };
    else delete spec.environment;
  }
  if (s.ImageConfig) {
    const c = s.ImageConfig;
    const list = (v: unknown, what: string) =>
      v === undefined || v === null
        ? undefined
        : Array.isArray(v) && v.every((x) => typeof x === "string")
          ? (v as string[])
          : (() => {
              throw invalid(`ImageConfig.${what} must be a list of strings`);
            })();
    const imageConfig = {
      ...(list(c.EntryPoint, "EntryPoint") ? { entryPoint: list(c.EntryPoint, "EntryPoint") } : {}),
      ...(list(c.Command, "Command") ? { command: list(c.Command, "Command") } : {}),
      ...(c.WorkingDirectory
        ? { workingDirectory: str(c.WorkingDirectory, "ImageConfig.WorkingDirectory") }
        : {}),
    };
    if (Object.keys(imageConfig).length > 0) spec.imageConfig = imageConfig;
    else delete spec.imageConfig;
  }
  if (Array.isArray(s.Layers) && s.Layers.length > 0)
    throw invalid("Layers are not supported by ESB: put the layer's files in the deployment package");
  if ((s.VpcConfig?.SubnetIds?.length ?? 0) > 0 || (s.VpcConfig?.SecurityGroupIds?.length ?? 0) > 0)
    throw invalid("VpcConfig is not supported by ESB: worker egress is set by the operator (WORKER_EGRESS)");
  if (Array.isArray(s.FileSystemConfigs) && s.FileSystemConfigs.length > 0)
    throw invalid("FileSystemConfigs are not supported by ESB");
  if (s.DeadLetterConfig?.TargetArn) throw invalid("DeadLetterConfig is not supported by ESB");
  if (s.Architectures !== undefined && s.Architectures !== null) {
    const a = s.Architectures;
    if (!Array.isArray(a) || a.length !== 1 || a[0] !== NODE_ARCHITECTURE)
      throw invalid(`Architectures must be ["${NODE_ARCHITECTURE}"]: the architecture of this ESB's nodes`);
  }
}

/**
 * Checks the function with the one LambdaFunction validator (the CRD's rules and messages): any
 * problem is an InvalidParameterValueException naming the spec field, before anything is stored.
 */
export function checkFunction(fn: LambdaFunction): void {
  const r = validateLambdaFunction(fn, fn.metadata.namespace);
  if (!r.ok) throw invalid(r.errors.join("; "));
}

/** A new LambdaFunction `key`, empty spec (filled by the caller). */
export function newFunction(key: FunctionKey): LambdaFunction {
  return {
    apiVersion: LAMBDA_FUNCTION_API_VERSION,
    kind: LAMBDA_FUNCTION_KIND,
    metadata: { name: key.name, namespace: key.namespace, annotations: {} },
    spec: {},
  };
}

/**
 * AWS's FunctionConfiguration of `fn`. `stateOf` is the function as the controller last saw it
 * (its Ready condition gives State and LastUpdateStatus). FunctionName is the bare name; the
 * ARN carries the namespace.
 */
export function functionConfiguration(
  fn: LambdaFunction,
  key: FunctionKey,
  stateOf: LambdaFunction,
  region?: string,
): Record<string, unknown> {
  const ann = fn.metadata.annotations ?? {};
  const s = fn.spec;
  const image = s.image !== undefined;
  const variables = s.environment?.variables;
  return {
    FunctionName: key.name,
    FunctionArn: functionArn(key, region),
    ...(image ? {} : { Runtime: s.runtime, Handler: s.handler }),
    Role: ann[A.role] ?? "arn:aws:iam::000000000000:role/esb",
    CodeSize: Number(ann[A.codeSize] ?? 0),
    Description: ann[A.description] ?? "",
    Timeout: s.timeout ?? 3,
    MemorySize: s.memorySize ?? 128,
    LastModified: toAwsTime(ann[A.lastModified] ?? fn.metadata.creationTimestamp),
    CodeSha256: ann[A.codeSha256] ?? "",
    Version: "$LATEST",
    ...(variables ? { Environment: { Variables: variables } } : {}),
    RevisionId: fn.metadata.resourceVersion ?? ann[A.revisionId] ?? "",
    PackageType: image ? "Image" : "Zip",
    ...(image && s.imageConfig
      ? {
          ImageConfigResponse: {
            ImageConfig: {
              EntryPoint: s.imageConfig.entryPoint,
              Command: s.imageConfig.command,
              WorkingDirectory: s.imageConfig.workingDirectory,
            },
          },
        }
      : {}),
    Architectures: [NODE_ARCHITECTURE],
    EphemeralStorage: { Size: s.ephemeralStorage ?? 512 },
    ...functionStateOf(stateOf),
  };
}

/** The `Code` of GetFunction: where the code is (an image, or ESB's own store). */
export function functionCodeLocation(fn: LambdaFunction): Record<string, unknown> {
  if (fn.spec.image)
    return { RepositoryType: "ECR", ImageUri: fn.spec.image, ResolvedImageUri: fn.spec.image };
  return { RepositoryType: "S3", Location: "" };
}

/** Tags kept in the tags annotation. */
export function tagsOf(fn: LambdaFunction): Record<string, string> {
  try {
    const t = JSON.parse(fn.metadata.annotations?.[A.tags] ?? "{}") as unknown;
    return typeof t === "object" && t !== null && !Array.isArray(t) ? (t as Record<string, string>) : {};
  } catch {
    return {};
  }
}

/** Checks tags as AWS does (at most 50, key 1–128 characters, value at most 256) and stores them on `fn`. */
export function setTags(fn: LambdaFunction, tags: Record<string, string>): void {
  const entries = Object.entries(tags);
  if (entries.length > 50) throw invalid("A function can have at most 50 tags");
  for (const [k, v] of entries) {
    if (k.length < 1 || k.length > 128 || k.startsWith("aws:"))
      throw invalid(`Tag key ${JSON.stringify(k)} must be 1 to 128 characters and not start with "aws:"`);
    if (typeof v !== "string" || v.length > 256)
      throw invalid(`Tag value of ${JSON.stringify(k)} must be a string of at most 256 characters`);
  }
  const ann = (fn.metadata.annotations ??= {});
  if (entries.length > 0) ann[A.tags] = JSON.stringify(tags);
  else delete ann[A.tags];
}

// AWS's LastModified form: 2026-12-03T18:41:19.000+0000.
function toAwsTime(iso: string | undefined): string {
  const d = iso ? new Date(iso) : new Date(0);
  return (Number.isNaN(d.getTime()) ? new Date(0) : d).toISOString().replace("Z", "+0000");
}

function str(v: unknown, what: string): string {
  if (typeof v !== "string") throw invalid(`${what} must be a string`);
  return v;
}

function int(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isInteger(v)) throw invalid(`${what} must be an integer`);
  return v;
}
