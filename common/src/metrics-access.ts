import type { IncomingMessage, ServerResponse } from "node:http";
import { KubeConfig } from "@kubernetes/client-node";
import { KubeAccessReviewer, KubeTokenReviewer } from "./kube-token-review.js";

/**
 * Who may read a component's `/metrics`:
 * - `local`: callers on the machine itself (loopback) only; standalone (`esb up`) and tests.
 * - `kubernetes`: a bearer token the API server accepts (TokenReview) whose user RBAC allows
 *   `get` on the non-resource URL `/metrics` (SubjectAccessReview), as the API server and the
 *   kubelet do; the chart's `<release>-metrics-reader` ClusterRole grants it.
 */
export type MetricsAuthMode = "local" | "kubernetes";

/** What {@link MetricsAccess.check} decided. */
export type MetricsDecision =
  { allowed: true } | { allowed: false; status: 401 | 403 | 503; message: string };

/** The environment variable every component reads its {@link MetricsAuthMode} from. */
export const METRICS_AUTH_ENV = "ESB_METRICS_AUTH";

/** Parses `ESB_METRICS_AUTH` (default `local`); throws a message naming the variable for anything else. */
export function metricsAuthMode(env: NodeJS.ProcessEnv = process.env): MetricsAuthMode {
  const v = env[METRICS_AUTH_ENV]?.trim() || "local";
  if (v !== "local" && v !== "kubernetes")
    throw new Error(`${METRICS_AUTH_ENV}="${v}" must be local or kubernetes`);
  return v;
}

/** Decides whether a request may read `/metrics` (see {@link MetricsAuthMode}). */
export class MetricsAccess {
  private readonly tokens?: KubeTokenReviewer;
  private readonly access?: KubeAccessReviewer;

  constructor(
    readonly mode: MetricsAuthMode,
    kubeConfig?: KubeConfig,
  ) {
    if (mode === "kubernetes") {
      const kc = kubeConfig ?? defaultKubeConfig();
      this.tokens = new KubeTokenReviewer(kc);
      this.access = new KubeAccessReviewer(kc);
    }
  }

  /** Checks `req`; never throws (an API server that cannot be asked is a 503). */
  async check(req: IncomingMessage): Promise<MetricsDecision> {
    if (this.mode === "local") {
      return isLoopback(req.socket.remoteAddress)
        ? { allowed: true }
        : { allowed: false, status: 403, message: "metrics are served to local callers only" };
    }
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? "");
    if (!m) return { allowed: false, status: 401, message: "a bearer token is required" };
    try {
      const user = await this.tokens!.review(m[1]);
      if (!user) return { allowed: false, status: 401, message: "the token was not accepted" };
      if (!(await this.access!.allowed(user, "get", "/metrics")))
        return { allowed: false, status: 403, message: `${user.username} may not get /metrics` };
      return { allowed: true };
    } catch (err) {
      return {
        allowed: false,
        status: 503,
        message: `cannot check the caller with the Kubernetes API: ${(err as Error).message}`,
      };
    }
  }
}

function isLoopback(address: string | undefined): boolean {
  return !!address && (address === "::1" || address.startsWith("127.") || address.startsWith("::ffff:127."));
}

function defaultKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  return kc;
}

/**
 * Answers a `/metrics` request: the registry's text when `access` allows the caller,
 * else the decision's status with a one-line reason (and `WWW-Authenticate` on 401).
 */
export async function serveMetrics(
  req: IncomingMessage,
  res: ServerResponse,
  access: MetricsAccess,
  registry: { contentType: string; metrics(): Promise<string> },
): Promise<void> {
  const decision = await access.check(req);
  if (!decision.allowed) {
    const headers: Record<string, string> = { "content-type": "text/plain; charset=utf-8" };
    if (decision.status === 401) headers["www-authenticate"] = 'Bearer realm="esb-metrics"';
    res.writeHead(decision.status, headers).end(`${decision.message}\n`);
    return;
  }
  const body = await registry.metrics();
  res.writeHead(200, { "content-type": registry.contentType }).end(body);
}
