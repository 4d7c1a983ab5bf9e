import type { LambdaFunction } from "@esb/common";
import { functionArn, type FunctionKey } from "./function-name.js";
import type { FunctionRegistry } from "./function-registry.js";
import { LambdaApiError } from "./lambda-api-error.js";

/**
 * Versions and aliases on LambdaFunctions. A published version is a LambdaFunction of its own,
 * `<name>.v<N>` in the same namespace (so the controller prepares it and the agents run it like
 * any function), with a copy of the function's runnable spec (no HTTP routes, no concurrency
 * settings) and the annotation {@link VERSION_OF} naming its function. Aliases live in the
 * function's {@link ALIASES} annotation: name → version (or `$LATEST`) and an optional second
 * version with a weight.
 */
export const VERSION_OF = "lambda.esb.dev/version-of";
/** The version number of a version object. */
export const VERSION = "lambda.esb.dev/version";
/** On the function: the last version number published (numbers are never reused). */
export const LAST_VERSION = "lambda.esb.dev/last-version";
/** On the function: JSON object of its aliases. */
export const ALIASES = "lambda.esb.dev/aliases";

/** One alias, as stored (AWS's AliasConfiguration without the ARN). */
export interface StoredAlias {
  FunctionVersion: string;
  Description?: string;
  RoutingConfig?: { AdditionalVersionWeights?: Record<string, number> };
  RevisionId: string;
}

/** Name of the LambdaFunction of version `n` of function `name`. */
export function versionObjectName(name: string, n: number): string {
  return `${name}.v${n}`;
}

/** The versions of `key` the registry knows, by number. */
export function versionsOf(registry: FunctionRegistry, key: FunctionKey): Map<number, LambdaFunction> {
  const out = new Map<number, LambdaFunction>();
  for (const fn of registry.list()) {
    const a = fn.metadata.annotations;
    if (fn.metadata.namespace === key.namespace && a?.[VERSION_OF] === key.name && a[VERSION])
      out.set(Number(a[VERSION]), fn);
  }
  return out;
}

/** True for a version object (hidden from ListFunctions). */
export function isVersionObject(fn: LambdaFunction): boolean {
  return fn.metadata.annotations?.[VERSION_OF] !== undefined;
}

/** The aliases of a function. */
export function aliasesOf(fn: LambdaFunction): Record<string, StoredAlias> {
  try {
    const v = JSON.parse(fn.metadata.annotations?.[ALIASES] ?? "{}") as unknown;
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, StoredAlias>) : {};
  } catch {
    return {};
  }
}

/** A qualified function resolved to the LambdaFunction that runs it. */
export interface QualifiedFunction {
  /** The object to run: the function itself (`$LATEST`) or a version object. */
  key: FunctionKey;
  fn: LambdaFunction;
  /** What X-Amz-Executed-Version says: `$LATEST` or the version number. */
  version: string;
}

/**
 * Resolves `key` with an optional qualifier (a version number, an alias, none = `$LATEST`) to the
 * LambdaFunction that runs it; an alias with a second version picks it with its weight
 * (`random()` in [0, 1)). ResourceNotFoundException for an unknown function, version or alias.
 */
export function resolveQualified(
  registry: FunctionRegistry,
  key: FunctionKey,
  qualifier?: string,
  random: () => number = Math.random,
): QualifiedFunction {
  const base = registry.get(key.namespace, key.name);
  const notFound = (q?: string) =>
    new LambdaApiError(
      "ResourceNotFoundException",
      `Function not found: ${functionArn(key)}${q ? `:${q}` : ""}`,
    );
  if (!base || isVersionObject(base)) throw notFound();
  if (qualifier === undefined || qualifier === "$LATEST") return { key, fn: base, version: "$LATEST" };
  let version = qualifier;
  if (!/^\d+$/.test(qualifier)) {
    const alias = aliasesOf(base)[qualifier];
    if (!alias) throw notFound(qualifier);
    version = alias.FunctionVersion;
    const extra = Object.entries(alias.RoutingConfig?.AdditionalVersionWeights ?? {})[0];
    if (extra && random() < extra[1]) version = extra[0];
    if (version === "$LATEST") return { key, fn: base, version };
  }
  const vkey = { namespace: key.namespace, name: versionObjectName(key.name, Number(version)) };
  const fn = registry.get(vkey.namespace, vkey.name);
  if (!fn || fn.metadata.annotations?.[VERSION_OF] !== key.name) throw notFound(qualifier);
  return { key: vkey, fn, version };
}
