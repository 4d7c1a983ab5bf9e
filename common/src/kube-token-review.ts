import { createHash } from "node:crypto";
import { AuthenticationV1Api, AuthorizationV1Api, type KubeConfig } from "@kubernetes/client-node";

/** Who a reviewed token belongs to. */
export interface ReviewedUser {
  username: string;
  groups: string[];
  /** Audiences the API server accepted the token for. */
  audiences: string[];
}

/** Options of {@link KubeTokenReviewer}. */
export interface KubeTokenReviewerOptions {
  /** Audiences to ask for; undefined: the API server's own (a pod's default ServiceAccount token). */
  audiences?: string[];
  /** How long an accepted token is trusted before it is reviewed again (capped by its expiry). Default 60 s. */
  acceptTtlMs?: number;
  /** How long a refused token stays refused without asking again. Default 5 s. */
  refuseTtlMs?: number;
}

const MAX_CACHED = 1000;

/**
 * Kubernetes TokenReview with a cache keyed by the token's hash, so that a caller
 * is not reviewed on every request, and with one review in flight per token. The
 * one place ESB asks the API server who a bearer token belongs to (the agent's
 * callers, every component's /metrics callers).
 */
export class KubeTokenReviewer {
  private readonly api: AuthenticationV1Api;
  private readonly cache = new Map<string, { user: ReviewedUser | undefined; until: number }>();
  private readonly pending = new Map<string, Promise<ReviewedUser | undefined>>();
  private readonly acceptTtlMs: number;
  private readonly refuseTtlMs: number;

  constructor(
    kubeConfig: KubeConfig,
    private readonly options: KubeTokenReviewerOptions = {},
  ) {
    this.api = kubeConfig.makeApiClient(AuthenticationV1Api);
    this.acceptTtlMs = options.acceptTtlMs ?? 60_000;
    this.refuseTtlMs = options.refuseTtlMs ?? 5_000;
  }

  /** The token's user, or undefined when the API server does not accept it (for the audiences asked). Throws when the API server cannot be asked. */
  async review(token: string): Promise<ReviewedUser | undefined> {
    const key = createHash("sha256").update(token).digest("hex");
    const now = Date.now();
    const hit = this.cache.get(key);
    if (hit && hit.until > now) return hit.user;
    let p = this.pending.get(key);
    if (p) return p;
    p = this.ask(token).finally(() => this.pending.delete(key));
    this.pending.set(key, p);
    const user = await p;
    const ttl = user ? this.acceptTtlMs : this.refuseTtlMs;
    if (this.cache.size >= MAX_CACHED) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, { user, until: Math.min(now + ttl, jwtExpiry(token) ?? Infinity) });
    return user;
  }

  private async ask(token: string): Promise<ReviewedUser | undefined> {
    const audiences = this.options.audiences;
    const res = await this.api.createTokenReview({
      body: {
        apiVersion: "authentication.k8s.io/v1",
        kind: "TokenReview",
        spec: { token, ...(audiences ? { audiences } : {}) },
      },
    });
    const st = res.status;
    if (!st?.authenticated || !st.user?.username) return undefined;
    const granted = st.audiences ?? [];
    // An API server that ignores audiences answers without them; require ours explicitly.
    if (audiences && !audiences.every((a) => granted.includes(a))) return undefined;
    return { username: st.user.username, groups: st.user.groups ?? [], audiences: granted };
  }
}

/**
 * Kubernetes SubjectAccessReview for non-resource paths (as the API server and
 * the kubelet authorize `/metrics`), cached per user, groups and request.
 */
export class KubeAccessReviewer {
  private readonly api: AuthorizationV1Api;
  private readonly cache = new Map<string, { allowed: boolean; until: number }>();

  constructor(
    kubeConfig: KubeConfig,
    private readonly ttlMs = 60_000,
  ) {
    this.api = kubeConfig.makeApiClient(AuthorizationV1Api);
  }

  /** True when RBAC lets `user` do `verb` on the non-resource `path`. Throws when the API server cannot be asked. */
  async allowed(user: ReviewedUser, verb: string, path: string): Promise<boolean> {
    const key = JSON.stringify([user.username, [...user.groups].sort(), verb, path]);
    const hit = this.cache.get(key);
    if (hit && hit.until > Date.now()) return hit.allowed;
    const res = await this.api.createSubjectAccessReview({
      body: {
        apiVersion: "authorization.k8s.io/v1",
        kind: "SubjectAccessReview",
        spec: { user: user.username, groups: user.groups, nonResourceAttributes: { path, verb } },
      },
    });
    const allowed = res.status?.allowed === true;
    if (this.cache.size >= MAX_CACHED) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, { allowed, until: Date.now() + this.ttlMs });
    return allowed;
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
