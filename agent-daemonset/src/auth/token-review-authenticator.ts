import type { KubeConfig } from "@kubernetes/client-node";
import { AGENT_TOKEN_AUDIENCE } from "@esb/common/agent-credentials";
import { KubeTokenReviewer } from "@esb/common/kube-token-review";
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

/**
 * Kubernetes authentication: the caller's projected ServiceAccount token is
 * checked with a TokenReview (which the API server answers for tokens it
 * issued, for the audience asked), and the reviewed user name is mapped to a
 * role. Why TokenReview rather than mTLS: the cluster already issues, rotates
 * and revokes these identities (deleting the ServiceAccount or pod ends them),
 * and the chart needs no CA of its own. Results are cached by the token's hash
 * ({@link KubeTokenReviewer}) so a warm invocation does not wait for the API server.
 */
export class TokenReviewAuthenticator implements AgentAuthenticator {
  readonly name = "kubernetes";
  private readonly reviewer: KubeTokenReviewer;
  private readonly roles = new Map<string, AgentCaller["role"]>();

  constructor(opts: TokenReviewAuthenticatorOptions) {
    for (const u of opts.controllerUsers) this.roles.set(u, "controller");
    for (const u of opts.gatewayUsers) {
      if (this.roles.has(u)) throw new Error(`${u} is named both as the controller and the gateway`);
      this.roles.set(u, "gateway");
    }
    this.reviewer = new KubeTokenReviewer(opts.kubeConfig, {
      audiences: [opts.audience ?? AGENT_TOKEN_AUDIENCE],
      acceptTtlMs: opts.acceptTtlMs,
      refuseTtlMs: opts.refuseTtlMs,
    });
  }

  async authenticate(token: string): Promise<AgentCaller | undefined> {
    const user = await this.reviewer.review(token);
    // A valid token of someone else is authenticated but has no role: permission_denied.
    return user && { identity: user.username, role: this.roles.get(user.username) };
  }
}
