import { createHash } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { FunctionSpecSchema, type FunctionSpec } from "./gen/esb/agent/v1/agent_pb.js";
import {
  LAMBDA_FUNCTION_API_VERSION,
  LAMBDA_FUNCTION_DEFAULTS,
  LAMBDA_FUNCTION_KIND,
  MANAGED_RUNTIMES,
  type LambdaFunction,
  type LambdaFunctionSpec,
} from "./lambda-function.js";

/**
 * Messages of the cross-field rules. They are the `message` strings of the CEL
 * rules in crds/esb.dev_lambdafunctions.yaml, so that `kubectl apply` and
 * `esb up` (folder of manifests) report the same thing.
 */
export const LAMBDA_FUNCTION_MESSAGES = {
  imageOrRuntime:
    "spec must set either image (a container image function) or runtime + handler + code (a managed runtime function)",
  imageExclusive:
    "spec.image cannot be combined with runtime, handler or code: set either image or runtime + handler + code",
  codeRequired: "spec.code is required with spec.runtime",
  handlerRequired: "spec.handler is required with a Node.js or Python runtime (for example index.handler)",
  handlerInsideCode:
    "spec.handler must name a file inside the function's code: no leading '/' and no '..' segment",
  provisionedOverReserved: "spec.provisionedConcurrency must not exceed spec.reservedConcurrency",
  codeExactlyOne: "spec.code must set exactly one of configMap, inline or path",
  envName:
    "spec.environment.variables names must start with a letter or '_' and contain only letters, digits and '_'",
  envReserved:
    "spec.environment.variables must not set reserved Lambda variables (AWS_LAMBDA_*, _HANDLER, _X_AMZN_TRACE_ID, AWS_REGION, AWS_DEFAULT_REGION, AWS_EXECUTION_ENV, AWS_ACCESS_KEY, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, LAMBDA_TASK_ROOT, LAMBDA_RUNTIME_DIR)",
  routeSlash: "route path must start with '/'",
  routeForm:
    "route path must be '/' or '/'-separated segments of literal characters or {param}, optionally ending in {proxy+}, without empty segments or a trailing '/'",
  inlineFileName:
    "spec.code.inline file names must be relative paths of letters, digits, '.', '_', '-' and '/', without '.' or '..' segments",
} as const;

/**
 * True when a handler string cannot name a file outside the code folder
 * (/var/task): no leading '/' and no '..' path segment. The CRD's CEL rule on
 * spec.handler says the same.
 */
export function isHandlerInsideCode(handler: string): boolean {
  return !handler.startsWith("/") && !/(^|\/)\.\.(\/|$)/.test(handler);
}

/** Environment variables that Lambda sets itself and a function may not override (besides `AWS_LAMBDA_*`). */
export const RESERVED_ENVIRONMENT_VARIABLES = [
  "_HANDLER",
  "_X_AMZN_TRACE_ID",
  "AWS_REGION",
  "AWS_DEFAULT_REGION",
  "AWS_EXECUTION_ENV",
  "AWS_ACCESS_KEY",
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
  "AWS_SESSION_TOKEN",
  "LAMBDA_TASK_ROOT",
  "LAMBDA_RUNTIME_DIR",
] as const;

const HTTP_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY"];
// Same expression as the CRD's route rule.
const ROUTE_PATH =
  /^(\/([A-Za-z0-9._~:@!$&*,;=-]+|[{][A-Za-z_][A-Za-z0-9_]*[}]))*(\/[{][A-Za-z_][A-Za-z0-9_]*[+][}])?$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
// Kubernetes object names (DNS-1123 subdomain).
const OBJECT_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const FILE_NAME_SEGMENT = /^[A-Za-z0-9._-]+$/;

/** Result of {@link validateLambdaFunction}. */
export type LambdaFunctionValidation = { ok: true; fn: LambdaFunction } | { ok: false; errors: string[] };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * True when `name` is a safe relative file name for function code: `/`-separated
 * segments of letters, digits, `.`, `_`, `-`, none of them `.` or `..`.
 */
export function isValidCodeFileName(name: string): boolean {
  if (name.length === 0 || name.length > 1024) return false;
  return name.split("/").every((s) => FILE_NAME_SEGMENT.test(s) && s !== "." && s !== "..");
}

/**
 * Validates a LambdaFunction manifest (a parsed YAML/JSON object) with the same
 * rules as the CRD schema and its CEL rules, using the same messages for the
 * cross-field rules. On success returns a copy with the CRD defaults applied
 * (memorySize, timeout, ephemeralStorage, scaling, http.payloadFormat) and
 * `metadata.namespace` defaulted to `defaultNamespace`. Never throws.
 */
export function validateLambdaFunction(obj: unknown, defaultNamespace = "default"): LambdaFunctionValidation {
  const errors: string[] = [];
  if (!isObject(obj)) return { ok: false, errors: ["manifest must be an object"] };
  if (obj.apiVersion !== LAMBDA_FUNCTION_API_VERSION)
    errors.push(`apiVersion must be ${LAMBDA_FUNCTION_API_VERSION} (got ${JSON.stringify(obj.apiVersion)})`);
  if (obj.kind !== LAMBDA_FUNCTION_KIND)
    errors.push(`kind must be ${LAMBDA_FUNCTION_KIND} (got ${JSON.stringify(obj.kind)})`);
  const metadata = obj.metadata;
  if (!isObject(metadata) || typeof metadata.name !== "string" || metadata.name === "") {
    errors.push("metadata.name is required");
  } else if (metadata.name.length > 253 || !OBJECT_NAME.test(metadata.name)) {
    errors.push(
      `metadata.name: Invalid value: "${metadata.name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`,
    );
  }
  if (
    isObject(metadata) &&
    metadata.namespace !== undefined &&
    (typeof metadata.namespace !== "string" || !OBJECT_NAME.test(metadata.namespace))
  )
    errors.push("metadata.namespace must be a valid namespace name");
  const spec = obj.spec;
  if (!isObject(spec)) {
    errors.push("spec is required");
    return { ok: false, errors };
  }
  errors.push(...validateLambdaFunctionSpec(spec));
  if (errors.length > 0) return { ok: false, errors };
  const fn = structuredClone(obj) as unknown as LambdaFunction;
  fn.metadata.namespace ??= defaultNamespace;
  fn.spec = applyLambdaFunctionDefaults(fn.spec);
  return { ok: true, fn };
}

/** Returns a copy of `spec` with the CRD schema defaults applied. */
export function applyLambdaFunctionDefaults(spec: LambdaFunctionSpec): LambdaFunctionSpec {
  const out = structuredClone(spec);
  out.memorySize ??= LAMBDA_FUNCTION_DEFAULTS.memorySize;
  out.timeout ??= LAMBDA_FUNCTION_DEFAULTS.timeout;
  out.ephemeralStorage ??= LAMBDA_FUNCTION_DEFAULTS.ephemeralStorage;
  out.scaling ??= {};
  out.scaling.pauseAfterMs ??= LAMBDA_FUNCTION_DEFAULTS.pauseAfterMs;
  out.scaling.keepWarmSeconds ??= LAMBDA_FUNCTION_DEFAULTS.keepWarmSeconds;
  if (out.http) out.http.payloadFormat ??= LAMBDA_FUNCTION_DEFAULTS.payloadFormat;
  return out;
}

function checkInt(
  errors: string[],
  spec: Record<string, unknown>,
  field: string,
  min: number,
  max?: number,
): void {
  const v = spec[field];
  if (v === undefined) return;
  if (typeof v !== "number" || !Number.isInteger(v)) {
    errors.push(`spec.${field} must be an integer`);
  } else if (v < min || (max !== undefined && v > max)) {
    errors.push(
      max === undefined
        ? `spec.${field} must be >= ${min} (got ${v})`
        : `spec.${field} must be between ${min} and ${max} (got ${v})`,
    );
  }
}

function checkStringMap(errors: string[], v: unknown, field: string): v is Record<string, string> {
  if (!isObject(v) || !Object.values(v).every((x) => typeof x === "string")) {
    errors.push(`${field} must be a map of strings`);
    return false;
  }
  return true;
}

function checkStringList(errors: string[], v: unknown, field: string): void {
  if (v !== undefined && (!Array.isArray(v) || !v.every((x) => typeof x === "string")))
    errors.push(`${field} must be a list of strings`);
}

/** Validates `spec` alone; returns the error messages (empty when valid). */
export function validateLambdaFunctionSpec(spec: Record<string, unknown>): string[] {
  const errors: string[] = [];
  const has = (k: string): boolean => spec[k] !== undefined && spec[k] !== null;
  // Field shapes (what the OpenAPI schema checks).
  if (has("image") && (typeof spec.image !== "string" || spec.image === ""))
    errors.push("spec.image must be a non-empty string");
  if (has("runtime") && !(MANAGED_RUNTIMES as readonly unknown[]).includes(spec.runtime))
    errors.push(
      `spec.runtime: Unsupported value: ${JSON.stringify(spec.runtime)}: supported values: ${MANAGED_RUNTIMES.map((r) => `"${r}"`).join(", ")}`,
    );
  if (has("handler") && (typeof spec.handler !== "string" || spec.handler === ""))
    errors.push("spec.handler must be a non-empty string");
  else if (typeof spec.handler === "string" && !isHandlerInsideCode(spec.handler))
    errors.push(LAMBDA_FUNCTION_MESSAGES.handlerInsideCode);
  checkInt(errors, spec, "memorySize", 128, 10240);
  checkInt(errors, spec, "timeout", 1, 900);
  checkInt(errors, spec, "ephemeralStorage", 512, 10240);
  checkInt(errors, spec, "reservedConcurrency", 0);
  checkInt(errors, spec, "provisionedConcurrency", 0);
  if (has("scaling")) {
    if (!isObject(spec.scaling)) errors.push("spec.scaling must be an object");
    else {
      for (const f of ["pauseAfterMs", "keepWarmSeconds"]) {
        const v = spec.scaling[f];
        if (v !== undefined && (typeof v !== "number" || !Number.isInteger(v) || v < 0))
          errors.push(`spec.scaling.${f} must be an integer >= 0`);
      }
    }
  }
  if (has("imageConfig")) {
    const ic = spec.imageConfig;
    if (!isObject(ic)) errors.push("spec.imageConfig must be an object");
    else {
      checkStringList(errors, ic.command, "spec.imageConfig.command");
      checkStringList(errors, ic.entryPoint, "spec.imageConfig.entryPoint");
      if (ic.workingDirectory !== undefined && typeof ic.workingDirectory !== "string")
        errors.push("spec.imageConfig.workingDirectory must be a string");
    }
  }
  // Cross-field rules (the CRD's CEL rules, same messages).
  if (!has("image") && !has("runtime")) errors.push(LAMBDA_FUNCTION_MESSAGES.imageOrRuntime);
  if (has("image") && (has("runtime") || has("handler") || has("code")))
    errors.push(LAMBDA_FUNCTION_MESSAGES.imageExclusive);
  if (!has("image") && has("runtime") && !has("code")) errors.push(LAMBDA_FUNCTION_MESSAGES.codeRequired);
  if (
    typeof spec.runtime === "string" &&
    (spec.runtime.startsWith("nodejs") || spec.runtime.startsWith("python")) &&
    !has("handler")
  )
    errors.push(LAMBDA_FUNCTION_MESSAGES.handlerRequired);
  if (
    typeof spec.provisionedConcurrency === "number" &&
    typeof spec.reservedConcurrency === "number" &&
    spec.provisionedConcurrency > spec.reservedConcurrency
  )
    errors.push(LAMBDA_FUNCTION_MESSAGES.provisionedOverReserved);
  if (has("code")) {
    const code = spec.code;
    if (!isObject(code)) errors.push("spec.code must be an object");
    else {
      const n = ["configMap", "inline", "path"].filter(
        (k) => code[k] !== undefined && code[k] !== null,
      ).length;
      if (n !== 1) errors.push(LAMBDA_FUNCTION_MESSAGES.codeExactlyOne);
      if (code.configMap !== undefined) {
        const cm = code.configMap;
        if (!isObject(cm) || typeof cm.name !== "string" || cm.name === "")
          errors.push("spec.code.configMap.name is required");
        else if (
          cm.zipKey !== undefined &&
          (typeof cm.zipKey !== "string" || !/^[-._a-zA-Z0-9]{1,253}$/.test(cm.zipKey))
        )
          errors.push("spec.code.configMap.zipKey must be a ConfigMap key (letters, digits, '-', '_', '.')");
      }
      if (code.inline !== undefined && checkStringMap(errors, code.inline, "spec.code.inline")) {
        if (!Object.keys(code.inline).every(isValidCodeFileName))
          errors.push(LAMBDA_FUNCTION_MESSAGES.inlineFileName);
      }
      if (code.path !== undefined && (typeof code.path !== "string" || code.path === ""))
        errors.push("spec.code.path must be a non-empty string");
    }
  }
  if (has("environment")) {
    const env = spec.environment;
    if (!isObject(env)) errors.push("spec.environment must be an object");
    else if (
      env.variables !== undefined &&
      checkStringMap(errors, env.variables, "spec.environment.variables")
    ) {
      const names = Object.keys(env.variables);
      if (!names.every((k) => k.length <= 256 && ENV_NAME.test(k)))
        errors.push(LAMBDA_FUNCTION_MESSAGES.envName);
      if (names.some(isReservedEnvironmentVariable)) errors.push(LAMBDA_FUNCTION_MESSAGES.envReserved);
    }
  }
  if (has("http")) {
    const http = spec.http;
    if (!isObject(http)) errors.push("spec.http must be an object");
    else {
      if (http.payloadFormat !== undefined && http.payloadFormat !== "1.0" && http.payloadFormat !== "2.0")
        errors.push(
          `spec.http.payloadFormat: Unsupported value: ${JSON.stringify(http.payloadFormat)}: supported values: "1.0", "2.0"`,
        );
      if (http.routes !== undefined) {
        if (!Array.isArray(http.routes)) errors.push("spec.http.routes must be a list");
        else
          http.routes.forEach((r: unknown, i: number) => {
            const at = `spec.http.routes[${i}]`;
            if (!isObject(r) || typeof r.path !== "string") {
              errors.push(`${at}.path is required`);
              return;
            }
            if (!r.path.startsWith("/")) errors.push(`${at}.path: ${LAMBDA_FUNCTION_MESSAGES.routeSlash}`);
            if (r.path !== "/" && !ROUTE_PATH.test(r.path))
              errors.push(`${at}.path: ${LAMBDA_FUNCTION_MESSAGES.routeForm}`);
            if (r.methods !== undefined) {
              if (!Array.isArray(r.methods)) errors.push(`${at}.methods must be a list`);
              else
                for (const m of r.methods)
                  if (!HTTP_METHODS.includes(m as string))
                    errors.push(
                      `${at}.methods: Unsupported value: ${JSON.stringify(m)}: supported values: ${HTTP_METHODS.map((x) => `"${x}"`).join(", ")}`,
                    );
            }
          });
      }
    }
  }
  return errors;
}

/** True for names Lambda reserves (`AWS_LAMBDA_*` and {@link RESERVED_ENVIRONMENT_VARIABLES}). */
export function isReservedEnvironmentVariable(name: string): boolean {
  return (
    name.startsWith("AWS_LAMBDA_") || (RESERVED_ENVIRONMENT_VARIABLES as readonly string[]).includes(name)
  );
}

/** Code of a managed-runtime function as the controller resolved it. */
export interface ResolvedFunctionCode {
  /** Files (relative to /var/task) with their content (from inline or a ConfigMap). */
  files?: Record<string, Uint8Array | string>;
  /** A folder on the agent's host (standalone `code.path`). */
  hostPath?: string;
}

// JSON with sorted keys, so the hash does not depend on key order.
function canonicalJson(v: unknown): string {
  if (v instanceof Uint8Array) return JSON.stringify(Buffer.from(v).toString("base64"));
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (isObject(v))
    return `{${Object.keys(v)
      .filter((k) => v[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(v[k])}`)
      .join(",")}}`;
  return JSON.stringify(v) ?? "null";
}

/**
 * A stable content hash (16 hex digits) of the parts of a spec that workers are
 * built from: image, runtime, handler, code (the resolved files when given, so
 * a changed ConfigMap is a new revision), imageConfig, environment, memory,
 * timeout and ephemeral storage. Concurrency, scaling and HTTP routes are not
 * part of it: changing them never replaces workers. Defaults are applied first,
 * so an explicit default and an absent field give the same revision.
 */
export function functionRevision(spec: LambdaFunctionSpec, resolvedCode?: ResolvedFunctionCode): string {
  const s = applyLambdaFunctionDefaults(spec);
  const runnable = {
    image: s.image,
    runtime: s.runtime,
    handler: s.handler,
    code: resolvedCode ?? s.code,
    imageConfig: s.imageConfig,
    environment: s.environment?.variables ?? {},
    memorySize: s.memorySize,
    timeout: s.timeout,
    ephemeralStorage: s.ephemeralStorage,
  };
  return createHash("sha256").update(canonicalJson(runnable)).digest("hex").slice(0, 16);
}

/** Options of {@link toAgentFunctionSpec}. */
export interface AgentFunctionSpecOptions {
  /** Provisioned workers for this agent (default: the whole spec.provisionedConcurrency). */
  provisionedConcurrency?: number;
  /** Most workers at once on this agent: its share of spec.reservedConcurrency (default: all of it). */
  reservedConcurrency?: number;
  /** Revision (default: {@link functionRevision} of the spec and code). */
  revision?: string;
}

/**
 * Builds the AgentService `FunctionSpec` for a (validated) LambdaFunction.
 * `resolvedCode` is the code of a managed-runtime function (files read from
 * inline or a ConfigMap, or a host path); it is ignored for image functions.
 */
export function toAgentFunctionSpec(
  fn: LambdaFunction,
  resolvedCode?: ResolvedFunctionCode,
  options: AgentFunctionSpecOptions = {},
): FunctionSpec {
  const s = applyLambdaFunctionDefaults(fn.spec);
  const files: Record<string, Uint8Array> = {};
  for (const [name, content] of Object.entries(resolvedCode?.files ?? {}))
    files[name] = typeof content === "string" ? new TextEncoder().encode(content) : content;
  const isImage = s.image !== undefined;
  return create(FunctionSpecSchema, {
    ref: { namespace: fn.metadata.namespace ?? "default", name: fn.metadata.name },
    generation: BigInt(fn.metadata.generation ?? 1),
    revision: options.revision ?? functionRevision(fn.spec, resolvedCode),
    image: s.image ?? "",
    runtime: s.runtime ?? "",
    handler: s.handler ?? "",
    code: isImage ? undefined : { files, hostPath: resolvedCode?.hostPath ?? "" },
    imageConfig: s.imageConfig
      ? {
          entryPoint: s.imageConfig.entryPoint ?? [],
          command: s.imageConfig.command ?? [],
          workingDirectory: s.imageConfig.workingDirectory ?? "",
        }
      : undefined,
    environment: { ...(s.environment?.variables ?? {}) },
    memorySizeMb: s.memorySize,
    timeoutSeconds: s.timeout,
    ephemeralStorageMb: s.ephemeralStorage,
    reservedConcurrency: options.reservedConcurrency ?? s.reservedConcurrency,
    provisionedConcurrency: options.provisionedConcurrency ?? s.provisionedConcurrency ?? 0,
    scaling: { pauseAfterMs: s.scaling?.pauseAfterMs, keepWarmSeconds: s.scaling?.keepWarmSeconds },
  });
}
