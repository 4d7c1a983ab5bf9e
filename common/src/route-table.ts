import type { LambdaFunction } from "./lambda-function.js";

/** A function by namespace and name. */
export interface FunctionKey {
  namespace: string;
  name: string;
}

/** One HTTP route of one function. */
export interface RouteEntry {
  function: FunctionKey;
  /** Path template as written in the spec, e.g. `/items/{id}`. */
  path: string;
  /** Upper-case method, or `ANY`. */
  method: string;
  /** `"GET /items/{id}"`, as API Gateway's routeKey. */
  routeKey: string;
  payloadFormat: "1.0" | "2.0";
  segments: Segment[];
}

type Segment =
  { kind: "static"; value: string } | { kind: "param"; name: string } | { kind: "greedy"; name: string };

/** A request matched to a route. */
export interface RouteMatch {
  route: RouteEntry;
  /** Values of `{param}` segments (URL-decoded); absent when the route has none. */
  pathParameters?: Record<string, string>;
}

/**
 * A route that is not served: another function declared the same method and
 * path first (`RouteConflict`), or its namespace is not one whose routes the
 * gateway serves (`NamespaceNotServed`).
 */
export interface RefusedRoute {
  routeKey: string;
  function: FunctionKey;
  reason: "RouteConflict" | "NamespaceNotServed";
  /** The function serving the route instead (RouteConflict). */
  servedBy?: FunctionKey;
}

/** Options of {@link RouteTable}. */
export interface RouteTableOptions {
  /**
   * Namespaces whose functions' routes are served, or `"*"` for every
   * namespace (they then share one path space). Default `"*"`; the gateway and
   * controller pass their configured list (default: the gateway's namespace).
   */
  namespaces?: readonly string[] | "*";
}

function parseTemplate(path: string): Segment[] {
  const trimmed = path.replace(/^\/+|\/+$/g, "");
  if (trimmed === "") return [];
  return trimmed.split("/").map((part) => {
    const greedy = /^\{([^{}]+)\+\}$/.exec(part);
    if (greedy) return { kind: "greedy", name: greedy[1] };
    const param = /^\{([^{}]+)\}$/.exec(part);
    if (param) return { kind: "param", name: param[1] };
    return { kind: "static", value: part };
  });
}

function normalizedShape(segments: Segment[]): string {
  return (
    "/" + segments.map((s) => (s.kind === "static" ? s.value : s.kind === "param" ? "{}" : "{+}")).join("/")
  );
}

/**
 * The HTTP routes of all functions, matched the way API Gateway HTTP APIs do:
 * the most specific path wins (more literal segments before parameters, a greedy
 * `{proxy+}` last) and an explicit method wins over `ANY`. Only functions of the
 * served namespaces get routes. When two functions declare the same method and
 * path shape, the older one (creationTimestamp, then namespace/name) keeps it,
 * so a new function cannot take a path that another already serves; the clash
 * is listed in {@link refused}. The gateway serves this table and the
 * controller reports {@link refusalsOf} in each function's status.
 */
export class RouteTable {
  /** Routes in matching-precedence order. */
  readonly routes: RouteEntry[] = [];
  /** Routes that are not served, and why. */
  readonly refused: RefusedRoute[] = [];

  constructor(functions: LambdaFunction[], options: RouteTableOptions = {}) {
    const served = options.namespaces ?? "*";
    const sorted = [...functions].sort(olderFirst);
    const owners = new Map<string, FunctionKey>();
    for (const fn of sorted) {
      const key: FunctionKey = { namespace: fn.metadata.namespace ?? "default", name: fn.metadata.name };
      const payloadFormat = fn.spec.http?.payloadFormat === "1.0" ? "1.0" : "2.0";
      const namespaceServed = served === "*" || served.includes(key.namespace);
      for (const route of fn.spec.http?.routes ?? []) {
        const path = route.path.startsWith("/") ? route.path : `/${route.path}`;
        const segments = parseTemplate(path);
        const methods = route.methods?.length ? route.methods.map((m) => m.toUpperCase()) : ["ANY"];
        for (const method of methods.includes("ANY") ? ["ANY"] : methods) {
          const shape = `${method} ${normalizedShape(segments)}`;
          const owner = owners.get(shape);
          const routeKey = `${method} ${path}`;
          if (!namespaceServed) {
            this.refused.push({ routeKey, function: key, reason: "NamespaceNotServed" });
            continue;
          }
          if (owner) {
            if (owner.namespace !== key.namespace || owner.name !== key.name) {
              this.refused.push({ routeKey, function: key, reason: "RouteConflict", servedBy: owner });
            }
            continue;
          }
          owners.set(shape, key);
          this.routes.push({ function: key, path, method, routeKey, payloadFormat, segments });
        }
      }
    }
    this.routes.sort((a, b) => compareSpecificity(a, b));
  }

  /** Refused routes that were declared by two functions (for metrics and logs). */
  get conflicts(): RefusedRoute[] {
    return this.refused.filter((r) => r.reason === "RouteConflict");
  }

  /** The refused routes of one function (empty: all its routes are served). */
  refusalsOf(fn: FunctionKey): RefusedRoute[] {
    return this.refused.filter((r) => r.function.namespace === fn.namespace && r.function.name === fn.name);
  }

  /** Finds the route serving `method` `path` (path without query string), if any. */
  match(method: string, path: string): RouteMatch | undefined {
    const parts = path.replace(/^\/+/, "").split("/");
    if (parts.length === 1 && parts[0] === "") parts.length = 0;
    const upper = method.toUpperCase();
    for (const route of this.routes) {
      if (route.method !== "ANY" && route.method !== upper) continue;
      const params = matchSegments(route.segments, parts);
      if (params) return { route, pathParameters: Object.keys(params).length ? params : undefined };
    }
    return undefined;
  }
}

/** Older functions first (creationTimestamp; folder functions have none and come first), then namespace/name. */
function olderFirst(a: LambdaFunction, b: LambdaFunction): number {
  const ta = a.metadata.creationTimestamp ?? "";
  const tb = b.metadata.creationTimestamp ?? "";
  if (ta !== tb) return Date.parse(ta || "1970-01-01T00:00:00Z") - Date.parse(tb || "1970-01-01T00:00:00Z");
  return `${a.metadata.namespace ?? ""}/${a.metadata.name}`.localeCompare(
    `${b.metadata.namespace ?? ""}/${b.metadata.name}`,
  );
}

function decode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

function matchSegments(segments: Segment[], parts: string[]): Record<string, string> | undefined {
  const params: Record<string, string> = {};
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i];
    if (seg.kind === "greedy") {
      if (i >= parts.length) return undefined;
      params[seg.name] = parts.slice(i).map(decode).join("/");
      return params;
    }
    if (i >= parts.length) return undefined;
    if (seg.kind === "static") {
      if (seg.value !== parts[i]) return undefined;
    } else {
      if (parts[i] === "") return undefined;
      params[seg.name] = decode(parts[i]);
    }
  }
  return parts.length === segments.length ? params : undefined;
}

function compareSpecificity(a: RouteEntry, b: RouteEntry): number {
  // Literal segments earlier in the path beat parameters; greedy segments come last.
  const n = Math.max(a.segments.length, b.segments.length);
  for (let i = 0; i < n; i++) {
    const ra = rank(a.segments[i]);
    const rb = rank(b.segments[i]);
    if (ra !== rb) return ra - rb;
  }
  if (a.segments.length !== b.segments.length) return b.segments.length - a.segments.length;
  if (a.method === "ANY" && b.method !== "ANY") return 1;
  if (b.method === "ANY" && a.method !== "ANY") return -1;
  return 0;
}

function rank(s: Segment | undefined): number {
  if (!s) return 1.5;
  return s.kind === "static" ? 0 : s.kind === "param" ? 1 : 2;
}

/**
 * Reads the namespaces whose routes are served from a setting (the gateway's
 * and controller's `GATEWAY_ROUTE_NAMESPACES`): comma-separated names, or `*`
 * for every namespace; empty or unset means `gatewayNamespace` alone. Throws
 * on a name that is not a Kubernetes namespace name.
 */
export function parseRouteNamespaces(
  value: string | undefined,
  gatewayNamespace: string,
): readonly string[] | "*" {
  const v = (value ?? "").trim();
  if (v === "*") return "*";
  const list = v
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  for (const ns of list) {
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(ns))
      throw new Error(`GATEWAY_ROUTE_NAMESPACES: "${ns}" is not a namespace name (or use * for all)`);
  }
  return list.length ? list : [gatewayNamespace];
}
