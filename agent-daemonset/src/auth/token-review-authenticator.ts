import { createHash } from "node:crypto";
import { AuthenticationV1Api, type KubeConfig } from "@kubernetes/client-node";
import { AGENT_TOKEN_AUDIENCE } from "@esb/common/agent-credentials";
import type { AgentAuthenticator, AgentCaller } from "./agent-auth.js";

/** Options of {@link TokenReviewAuthenticator}. */
export interface TokenReviewAuthenticatorOptions {
  kubeConfig: KubeConfig;
  /** Kubernetes user names (`system:serviceaccount:<ns>:<name>`) that act as the controller. */
  controllerUsers: string[];
  /** Kubernetes user names that act as the gateway. */
  gatewayUsers: string[];
  /** Audience the tokens must be minted for. Default {@link AGENT_TOKEN_AUDIENCE}. */
  audience?: string;
  /** How long an accepted token is trusted before it is reviewed again (capped by its expiry). Default 60 s. */
  acceptTtlMs?: number;
  /** How long a refused token stays refused without asking again. Default 5 s. */
  refuseTtlMs?: number;
}

const MAX_CACHED = 1000;

/**
 * Kubernetes authentication: the caller's projected ServiceAccount token is
 * checked with a TokenReview (which the API server answers for tokens it
 * issued, for the audience asked), and the reviewed user name is mapped to a
 * role. Why TokenReview rather than mTLS: the cluster already issues, rotates
 * and revokes these identities (deleting the ServiceAccount or pod ends them),
 * and the chart needs no CA of its own. Results are cached by the token's hash
 * so a warm invocation does not wait for the API server.
 */
export class TokenReviewAuthenticator implements AgentAuthenticator {
  readonly name = "kubernetes";
  private readonly api: AuthenticationV1Api;
  private readonly roles = new Map<string, AgentCaller["role"]>();
  private readonly audience: string;
  private readonly acceptTtlMs: number;
  private readonly refuseTtlMs: number;
  private readonly cache = new Map<string, { caller: AgentCaller | undefined; until: number }>();
  private readonly pending = new Map<string, Promise<AgentCaller | undefined>>();

  constructor(opts: TokenReviewAuthenticatorOptions) {
    this.api = opts.kubeConfig.makeApiClient(AuthenticationV1Api);
    for (const u of opts.controllerUsers) this.roles.set(u, "controller");
    for (const u of opts.gatewayUsers) {
      if (this.roles.has(u)) throw new Error(`${u} is named both as the controller and the gateway`);
      this.roles.set(u, "gateway");
    }
    this.audience = opts.audience ?? AGENT_TOKEN_AUDIENCE;
    this.acceptTtlMs = opts.acceptTtlMs ?? 60_000;
    this.refuseTtlMs = opts.refuseTtlMs ?? 5_000;
  }

  async authenticate(token: string): Promise<AgentCaller | undefined> {
    const key = createHash("sha256").update(token).digest("hex");
    const now = Date.now();
    const hit = this.cache.get(key);
    if (hit && hit.until > now) return hit.caller;
    let p = this.pending.get(key);
    if (!p) {
      p = this.review(token).finally(() => this.pending.delete(key));
      this.pending.set(key, p);
      const caller = await p;
      const expiresAt = jwtExpiry(token);
      const ttl = caller ? this.acceptTtlMs : this.refuseTtlMs;
      if (this.cache.size >= MAX_CACHED) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(key, { caller, until: Math.min(now + ttl, expiresAt ?? Infinity) });
      return caller;
    }
    return p;
  }

  private async review(token: string): Promise<AgentCaller | undefined> {
    const res = await this.api.createTokenReview({
      body: {
        apiVersion: "authentication.k8s.io/v1",
        kind: "TokenReview",
        spec: { token, audiences: [this.audience] },
      },
    });
    const st = res.status;
    if (!st?.authenticated || !st.user?.username) return undefined;
    // An API server that ignores audiences answers without them; require ours explicitly.
    if (!(st.audiences ?? []).includes(this.audience)) return undefined;
    // A valid token of someone else is authenticated but has no role: permission_denied.
    return { identity: st.user.username, role: this.roles.get(st.user.username) };
  }
}

/** The `exp` claim of a JWT in ms, unverified (only used to shorten the cache); undefined if absent. */
function jwtExpiry(token: string): number | undefined {
  const parts = token.split(".");
  if (parts.length !== 3) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8")) as { exp?: unknown };
    return typeof claims.exp === "number" ? claims.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}
