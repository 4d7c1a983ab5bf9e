import { readFileSync } from "node:fs";
import { parseRouteNamespaces } from "@esb/common";
import { cpusGiven } from "./gateway-cluster.js";
/**
 * Gateway settings, read from the environment and validated once at start-up.
 * Every setting has a default that works on one machine (`esb up`).
 */
export interface GatewayConfig {
  /** Port of the Invoke API and HTTP routes (`GATEWAY_PORT`, default 9000). */
  port: number;
  /** Address to listen on (`GATEWAY_HOST`, default `0.0.0.0`). */
  host: string;
  /** Namespace that bare function names resolve in (`GATEWAY_NAMESPACE`, default `default`). */
  namespace: string;
  /**
   * Namespaces whose functions' HTTP routes are served (`GATEWAY_ROUTE_NAMESPACES`,
   * comma-separated, `*` = all sharing one path space; default: {@link namespace}),
   * so that a function in another namespace cannot take a path.
   */
  routeNamespaces: readonly string[] | "*";
  /**
   * File holding this gateway's bearer token for agents, re-read when it changes
   * (`AGENT_TOKEN_FILE`; in Kubernetes a projected ServiceAccount token). Empty: none.
   */
  agentTokenFile: string;
  /** Static agent URLs, e.g. `http://127.0.0.1:50051` (`AGENT_URLS`, comma-separated). */
  agentUrls: string[];
  /** Label selector of agent pods (`AGENT_SELECTOR`); enables Kubernetes agent discovery. */
  agentSelector?: string;
  /** Namespace of the agent pods (`AGENT_NAMESPACE`, default: `POD_NAMESPACE` or `esb-system`). */
  agentNamespace: string;
  /** gRPC port of agent pods (`AGENT_PORT`, default 50051). */
  agentPort: number;
  /** Folder of LambdaFunction manifests (`FUNCTIONS_DIR`); else the Kubernetes API is used. */
  functionsDir?: string;
  /** Identifies this gateway replica to agents (`GATEWAY_HOLDER_ID`, default: `HOSTNAME`-pid). */
  holderId: string;
  /**
   * Gateway processes sharing the port (`GATEWAY_PROCESSES`: a number from 1 to 64, or
   * `auto` = the CPUs this process may use, see cpusGiven; default `auto`). Each is
   * like a replica: its own agent connections, warm hold, leases and Event queue;
   * `/metrics` sums them. An SQLite Event store has one owner: `auto` is then 1, and
   * more is refused.
   */
  processes: number;
  /** Lease the agent grants per acquired worker, renewed by heartbeats (`GATEWAY_LEASE_MS`). */
  leaseMs: number;
  /** Warm hold: ms a healthy worker is kept after an invocation for reuse without an agent round trip (`GATEWAY_WARM_HOLD_MS`, default 20; 0 = off). Held workers are not paused until released. */
  warmHoldMs: number;
  /** How often agents are heartbeaten and their pools polled (`GATEWAY_HEARTBEAT_MS`). */
  heartbeatMs: number;
  /**
   * How long an invocation waits for an agent that is unreachable or not (yet)
   * discovered, e.g. restarting, before failing with ServiceException
   * (`GATEWAY_AGENT_OUTAGE_WAIT_MS`, default 15000; 0 = fail at once).
   */
  agentOutageWaitMs: number;
  /**
   * The durable Event store (`GATEWAY_EVENT_STORE`): a `nats://host:port` URL
   * (NATS JetStream, shared by every gateway replica naming it), or the file of
   * an SQLite database (created if missing; `esb up` sets
   * `<stateDir>/gateway/events.db`; one gateway per file). Set: accepted Events
   * survive gateway restarts and crashes. Unset: they are kept in memory only
   * (lost when the gateway stops).
   */
  eventStore?: string;
  /** NATS authorization token (`GATEWAY_EVENT_NATS_TOKEN`, or read from `GATEWAY_EVENT_NATS_TOKEN_FILE`). */
  eventNatsToken?: string;
  /** JetStream stream of pending events (`GATEWAY_EVENT_NATS_STREAM`, default ESB_EVENTS; dead letters: `<it>_DEAD`). */
  eventNatsStream: string;
  /** JetStream stream replicas (`GATEWAY_EVENT_NATS_REPLICAS`, default 1). */
  eventNatsReplicas: number;
  /**
   * AckWait of the NATS store (`GATEWAY_EVENT_ACK_WAIT_SECONDS`, default 30):
   * how long the events of a gateway that died wait before another runs them.
   */
  eventAckWaitMs: number;
  /**
   * Most Event invocations stored and not yet finished (`GATEWAY_EVENT_QUEUE_SIZE`;
   * default 100,000 with a store, 1,000 in memory); beyond: 429.
   */
  eventQueueSize: number;
  /**
   * Most bytes of Event payloads stored and not yet finished (`GATEWAY_EVENT_QUEUE_BYTES`;
   * default 256 MiB with a store, 64 MiB in memory); beyond: 429.
   */
  eventQueueBytes: number;
  /** MaximumRetryAttempts of Event invocations (`GATEWAY_EVENT_MAX_RETRY_ATTEMPTS`, 0–2, default 2). */
  eventMaxRetryAttempts: number;
  /** MaximumEventAgeInSeconds (`GATEWAY_EVENT_MAX_AGE_SECONDS`, 60–21600, default 21600). */
  eventMaxAgeSeconds: number;
  /** Event invocations run at once (`GATEWAY_EVENT_CONCURRENCY`). */
  eventConcurrency: number;
  /**
   * Delays before the two retries of a failed Event invocation (`GATEWAY_EVENT_RETRY_DELAYS_MS`);
   * the first is also the base of the exponential backoff after throttles and system errors.
   */
  eventRetryDelaysMs: number[];
  /** Largest RequestResponse payload in bytes (6 MB, as AWS). */
  maxSyncPayloadBytes: number;
  /** Largest Event payload in bytes (1 MB, as AWS). */
  maxAsyncPayloadBytes: number;
  /**
   * File of the access keys callers sign with (`GATEWAY_CREDENTIALS_FILE`, YAML or
   * JSON, re-read when it changes). Set: requests must carry a valid AWS SigV4
   * signature and may only reach their key's namespaces. Unset (default): no auth.
   */
  credentialsFile?: string;
  /** What must be signed (`GATEWAY_AUTH_SCOPE`): `invokeApi` (default) or `all` (HTTP routes too). */
  authScope: "invokeApi" | "all";
  /** How often the credentials file is re-read (`GATEWAY_CREDENTIALS_RELOAD_MS`, default 5000). */
  credentialsReloadMs: number;
}

/** A setting that cannot be used; the message names the variable and what is wrong. */
export class GatewayConfigError extends Error {
  override name = "GatewayConfigError";
}

function integer(env: NodeJS.ProcessEnv, key: string, fallback: number, min: number, max: number): number {
  const raw = env[key];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new GatewayConfigError(`${key}=${raw}: expected an integer from ${min} to ${max}`);
  }
  return value;
}

/** `GATEWAY_PROCESSES`: `auto` (default) or 1–64; an SQLite store (a file, not `nats://`) allows one. */
function processes(raw: string | undefined, eventStore: string | undefined): number {
  const value = raw?.trim() || "auto";
  const sqlite = eventStore !== undefined && !eventStore.startsWith("nats://");
  if (value === "auto") return sqlite ? 1 : Math.min(cpusGiven(), 64);
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 64)
    throw new GatewayConfigError(`GATEWAY_PROCESSES=${value}: expected auto or an integer from 1 to 64`);
  if (n > 1 && sqlite) {
    throw new GatewayConfigError(
      `GATEWAY_PROCESSES=${n}: the SQLite Event store ${eventStore} has one owner; use 1 (or a nats:// store)`,
    );
  }
  return n;
}

function list(raw: string | undefined): string[] {
  return (raw ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

function routeNamespaces(value: string | undefined, namespace: string): readonly string[] | "*" {
  try {
    return parseRouteNamespaces(value, namespace);
  } catch (err) {
    throw new GatewayConfigError((err as Error).message, { cause: err });
  }
}

/**
 * Reads {@link GatewayConfig} from `env`. Throws {@link GatewayConfigError} on a
 * malformed value (bad number, bad URL, no agent source).
 */
export function loadGatewayConfig(env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  const agentUrls = list(env.AGENT_URLS).map((url) => {
    const withScheme = /^[a-z]+:\/\//.test(url) ? url : `http://${url}`;
    try {
      const parsed = new URL(withScheme);
      if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw new Error("scheme");
      return withScheme.replace(/\/+$/, "");
    } catch {
      throw new GatewayConfigError(`AGENT_URLS: "${url}" is not an http(s) URL`);
    }
  });
  const agentSelector = env.AGENT_SELECTOR?.trim() || undefined;
  if (agentUrls.length === 0 && !agentSelector) {
    throw new GatewayConfigError("no agents: set AGENT_URLS (standalone) or AGENT_SELECTOR (Kubernetes)");
  }
  const namespace = env.GATEWAY_NAMESPACE?.trim() || "default";
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(namespace)) {
    throw new GatewayConfigError(`GATEWAY_NAMESPACE=${namespace}: not a Kubernetes namespace name`);
  }
  const delays = list(env.GATEWAY_EVENT_RETRY_DELAYS_MS ?? "1000,2000").map((d) => {
    const n = Number(d);
    if (!Number.isInteger(n) || n < 0) {
      throw new GatewayConfigError(`GATEWAY_EVENT_RETRY_DELAYS_MS: "${d}" is not a non-negative integer`);
    }
    return n;
  });
  if (delays.length !== 2) {
    throw new GatewayConfigError(
      "GATEWAY_EVENT_RETRY_DELAYS_MS: expected two delays (Event invocations are retried twice)",
    );
  }
  const eventStore = env.GATEWAY_EVENT_STORE?.trim() || undefined;
  const credentialsFile = env.GATEWAY_CREDENTIALS_FILE?.trim() || undefined;
  const authScope = env.GATEWAY_AUTH_SCOPE?.trim() || "invokeApi";
  if (authScope !== "invokeApi" && authScope !== "all") {
    throw new GatewayConfigError(`GATEWAY_AUTH_SCOPE=${authScope}: expected invokeApi or all`);
  }
  if (authScope === "all" && !credentialsFile) {
    throw new GatewayConfigError(
      "GATEWAY_AUTH_SCOPE=all needs GATEWAY_CREDENTIALS_FILE (the keys callers sign with)",
    );
  }
  return {
    port: integer(env, "GATEWAY_PORT", 9000, 0, 65535),
    host: env.GATEWAY_HOST?.trim() || "0.0.0.0",
    namespace,
    routeNamespaces: routeNamespaces(env.GATEWAY_ROUTE_NAMESPACES, namespace),
    agentUrls,
    agentTokenFile: env.AGENT_TOKEN_FILE?.trim() ?? "",
    agentSelector,
    agentNamespace: env.AGENT_NAMESPACE?.trim() || env.POD_NAMESPACE?.trim() || "esb-system",
    agentPort: integer(env, "AGENT_PORT", 50051, 1, 65535),
    functionsDir: env.FUNCTIONS_DIR?.trim() || undefined,
    holderId: env.GATEWAY_HOLDER_ID?.trim() || `${env.HOSTNAME ?? "gateway"}-${process.pid}`,
    processes: processes(env.GATEWAY_PROCESSES, eventStore),
    leaseMs: integer(env, "GATEWAY_LEASE_MS", 30000, 1000, 3_600_000),
    warmHoldMs: integer(env, "GATEWAY_WARM_HOLD_MS", 20, 0, 60_000),
    heartbeatMs: integer(env, "GATEWAY_HEARTBEAT_MS", 1000, 100, 60_000),
    agentOutageWaitMs: integer(env, "GATEWAY_AGENT_OUTAGE_WAIT_MS", 15_000, 0, 900_000),
    eventStore,
    eventNatsToken: natsToken(env),
    eventNatsStream: natsStream(env.GATEWAY_EVENT_NATS_STREAM),
    eventNatsReplicas: integer(env, "GATEWAY_EVENT_NATS_REPLICAS", 1, 1, 5),
    eventAckWaitMs: integer(env, "GATEWAY_EVENT_ACK_WAIT_SECONDS", 30, 1, 3600) * 1000,
    eventQueueSize: integer(env, "GATEWAY_EVENT_QUEUE_SIZE", eventStore ? 100_000 : 1000, 1, 10_000_000),
    eventQueueBytes: integer(
      env,
      "GATEWAY_EVENT_QUEUE_BYTES",
      (eventStore ? 256 : 64) * 1024 * 1024,
      1,
      Number.MAX_SAFE_INTEGER,
    ),
    eventMaxRetryAttempts: integer(env, "GATEWAY_EVENT_MAX_RETRY_ATTEMPTS", 2, 0, 2),
    eventMaxAgeSeconds: integer(env, "GATEWAY_EVENT_MAX_AGE_SECONDS", 21600, 60, 21600),
    eventConcurrency: integer(env, "GATEWAY_EVENT_CONCURRENCY", 8, 1, 10_000),
    eventRetryDelaysMs: delays,
    maxSyncPayloadBytes: 6 * 1024 * 1024,
    maxAsyncPayloadBytes: 1024 * 1024,
    credentialsFile,
    authScope,
    credentialsReloadMs: integer(env, "GATEWAY_CREDENTIALS_RELOAD_MS", 5000, 100, 3_600_000),
  };
}

/** `GATEWAY_EVENT_NATS_TOKEN`, else the content of `GATEWAY_EVENT_NATS_TOKEN_FILE` (a mounted Secret). */
function natsToken(env: NodeJS.ProcessEnv): string | undefined {
  const token = env.GATEWAY_EVENT_NATS_TOKEN?.trim();
  if (token) return token;
  const file = env.GATEWAY_EVENT_NATS_TOKEN_FILE?.trim();
  if (!file) return undefined;
  try {
    return readFileSync(file, "utf8").trim() || undefined;
  } catch (err) {
    throw new GatewayConfigError(`GATEWAY_EVENT_NATS_TOKEN_FILE=${file}: ${(err as Error).message}`);
  }
}

function natsStream(value: string | undefined): string {
  const name = value?.trim() || "ESB_EVENTS";
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(name))
    throw new GatewayConfigError(
      `GATEWAY_EVENT_NATS_STREAM=${name}: letters, digits, _ and - only (at most 32)`,
    );
  return name;
}
