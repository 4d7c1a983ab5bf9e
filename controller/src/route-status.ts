import { RouteTable, type Condition, type LambdaFunction, type RouteTableOptions } from "@esb/common";

/** Condition type telling whether the gateway serves every HTTP route the function declares. */
export const CONDITION_ROUTES_ACCEPTED = "RoutesAccepted";

/**
 * The {@link CONDITION_ROUTES_ACCEPTED} condition of `fn` among `all` functions,
 * decided by the same {@link RouteTable} the gateway serves (same namespaces,
 * same ownership rule: the older function keeps a contested route). Undefined
 * when the function declares no routes.
 */
export function routesCondition(
  fn: LambdaFunction,
  all: LambdaFunction[],
  options: RouteTableOptions,
): Omit<Condition, "lastTransitionTime"> | undefined {
  const declared = fn.spec.http?.routes ?? [];
  if (declared.length === 0) return undefined;
  const key = { namespace: fn.metadata.namespace ?? "default", name: fn.metadata.name };
  const others = all.filter((f) => f.metadata.namespace !== key.namespace || f.metadata.name !== key.name);
  const refused = new RouteTable([...others, fn], options).refusalsOf(key);
  const observedGeneration = fn.metadata.generation ?? 1;
  if (refused.length === 0) {
    return {
      type: CONDITION_ROUTES_ACCEPTED,
      status: "True",
      reason: "Accepted",
      message: `${declared.length} HTTP route${declared.length === 1 ? "" : "s"} served by the gateway`,
      observedGeneration,
    };
  }
  const notServed = refused.filter((r) => r.reason === "NamespaceNotServed");
  const conflicts = refused.filter((r) => r.reason === "RouteConflict");
  const parts: string[] = [];
  if (conflicts.length) {
    parts.push(
      conflicts
        .map((c) => `${c.routeKey} is already served by ${c.servedBy?.namespace}/${c.servedBy?.name}`)
        .join("; "),
    );
  }
  if (notServed.length) {
    parts.push(
      `the gateway does not serve HTTP routes of namespace ${key.namespace} (${notServed
        .map((r) => r.routeKey)
        .join(", ")}); see the gateway's routeNamespaces setting`,
    );
  }
  return {
    type: CONDITION_ROUTES_ACCEPTED,
    status: "False",
    reason: conflicts.length ? "RouteConflict" : "NamespaceNotServed",
    message: parts.join("; "),
    observedGeneration,
  };
}
