import { randomBytes } from "node:crypto";
import { chmodSync, readFileSync, statSync, writeFileSync } from "node:fs";
import type { Interceptor, Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

/**
 * Who may call an agent. The controller prepares and destroys functions; the
 * gateway acquires, releases and heartbeats workers. Nobody else is served.
 */
export type AgentRole = "controller" | "gateway";

/** Every {@link AgentRole}, in a fixed order. */
export const AGENT_ROLES: readonly AgentRole[] = ["controller", "gateway"];

/**
 * Audience of the ServiceAccount tokens that the controller and gateway present
 * to agents (projected volume `audience`); a token minted for the Kubernetes API
 * itself is refused, so a token stolen from an agent call opens nothing else.
 */
export const AGENT_TOKEN_AUDIENCE = "esb-agent";

/** Gives the bearer token to send on the next call (cheap: called per request). */
export type AgentTokenSource = () => string;

/** A token that never changes (standalone: made by `esb up` at start). */
export function staticTokenSource(token: string): AgentTokenSource {
  if (!token) throw new Error("agent token is empty");
  return () => token;
}

/**
 * A token read from a file and re-read when the file changes, at most once per
 * `checkMs`: the kubelet rotates projected ServiceAccount tokens in place.
 * Throws at creation when the file cannot be read or is empty.
 */
export function fileTokenSource(path: string, checkMs = 10_000): AgentTokenSource {
  let token = readToken(path);
  let mtimeMs = statSync(path).mtimeMs;
  let checkedAt = Date.now();
  return () => {
    const now = Date.now();
    if (now - checkedAt < checkMs) return token;
    checkedAt = now;
    try {
      const m = statSync(path).mtimeMs;
      if (m !== mtimeMs) {
        token = readToken(path);
        mtimeMs = m;
      }
    } catch {
      // Mid-rotation (the kubelet swaps a symlink): keep the last token, retry on the next check.
    }
    return token;
  };
}

function readToken(path: string): string {
  const token = readFileSync(path, "utf8").trim();
  if (!token) throw new Error(`agent token file ${path} is empty`);
  return token;
}

/** A client interceptor that sends `authorization: Bearer <token>` on every call. */
export function bearerTokenInterceptor(source: AgentTokenSource): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${source()}`);
    return next(req);
  };
}

/** How often an agent connection is checked with an HTTP/2 PING (see {@link agentSessionManager}). */
export const AGENT_PING_INTERVAL_MS = 10_000;

/**
 * The HTTP/2 session to one agent: a PING every `pingIntervalMs` while it is
 * open AND while it is idle (a dead agent is found within `pingIntervalMs` +
 * 5 s). Pinging the idle connection is what keeps calls fast: connect-node
 * otherwise verifies a connection idle for longer than `pingIntervalMs` with a
 * PING round trip before the call, so the first acquire after a lull paid an
 * extra round trip (bench `agent-rpc-after-idle-*`).
 */
export function agentSessionManager(
  baseUrl: string,
  pingIntervalMs = AGENT_PING_INTERVAL_MS,
): Http2SessionManager {
  return new Http2SessionManager(baseUrl, {
    pingIntervalMs,
    pingTimeoutMs: 5_000,
    pingIdleConnection: true,
  });
}

/**
 * The one way ESB components open a transport to an agent: gRPC over HTTP/2,
 * with the caller's bearer token on every call when it has one (an agent refuses
 * calls without one with `unauthenticated`). Without `sessionManager`, one of
 * {@link agentSessionManager}'s.
 */
export function agentTransport(
  baseUrl: string,
  token: AgentTokenSource | undefined,
  sessionManager: Http2SessionManager = agentSessionManager(baseUrl),
): Transport {
  return createGrpcTransport({
    baseUrl,
    sessionManager,
    interceptors: token ? [bearerTokenInterceptor(token)] : [],
  });
}

/** The standalone agent's tokens file: one random token per role. */
export type AgentTokens = Record<AgentRole, string>;

/** New random tokens (256 bits each, base64url). */
export function generateAgentTokens(): AgentTokens {
  return {
    controller: randomBytes(32).toString("base64url"),
    gateway: randomBytes(32).toString("base64url"),
  };
}

/** Writes a tokens file readable and writable by its owner only (mode 0600). */
export function writeAgentTokensFile(path: string, tokens: AgentTokens): void {
  writeFileSync(path, JSON.stringify(tokens) + "\n", { mode: 0o600 });
  // `mode` applies to a new file only; an older file keeps its mode unless set again.
  chmodSync(path, 0o600);
}

/**
 * Reads a tokens file written by {@link writeAgentTokensFile}. Refuses a file
 * that group or others may read or write (its tokens would not be secret) and
 * one without a non-empty token for every role.
 */
export function readAgentTokensFile(path: string): AgentTokens {
  const mode = statSync(path).mode & 0o777;
  if (mode & 0o077) {
    throw new Error(
      `agent tokens file ${path} has mode ${mode.toString(8)}: it must be readable by its owner only (chmod 600)`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(`agent tokens file ${path} is not JSON: ${(err as Error).message}`, { cause: err });
  }
  const tokens = parsed as Partial<Record<string, unknown>>;
  for (const role of AGENT_ROLES) {
    const t = tokens?.[role];
    if (typeof t !== "string" || t.length < 16) {
      throw new Error(`agent tokens file ${path}: "${role}" must be a string of at least 16 characters`);
    }
  }
  return { controller: tokens.controller as string, gateway: tokens.gateway as string };
}
