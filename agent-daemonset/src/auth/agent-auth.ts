import { Code, ConnectError, createContextKey, type Interceptor } from "@connectrpc/connect";
import type { AgentRole } from "@esb/common/agent-credentials";
import type { Logger } from "@esb/common";

/** An authenticated caller of the AgentService. */
export interface AgentCaller {
  /** Who it is, for logs: a ServiceAccount user name, or `standalone:<role>`. */
  identity: string;
  /** What it may do; undefined for a known identity that is none of ESB's callers. */
  role?: AgentRole;
}

/**
 * Turns a bearer token into a caller. Resolves `undefined` for a token it does
 * not accept (the call gets `unauthenticated`); rejects only when it could not
 * decide (e.g. the Kubernetes API is unreachable: the call gets `unavailable`).
 */
export interface AgentAuthenticator {
  /** A short name for logs and errors, e.g. `kubernetes` or `token`. */
  readonly name: string;
  authenticate(token: string): Promise<AgentCaller | undefined>;
}

/**
 * The roles allowed to call each AgentService method. A method missing here is
 * refused to everybody, so a new RPC is closed until it is listed.
 */
export const AGENT_METHOD_ROLES: Readonly<Record<string, readonly AgentRole[]>> = {
  PrepareFunction: ["controller"],
  DestroyFunction: ["controller"],
  ListWorkers: ["controller"],
  AcquireWorker: ["gateway"],
  ReleaseWorker: ["gateway"],
  Heartbeat: ["gateway"],
  GetNodeStats: ["controller", "gateway"],
};

/** The caller of the current call, set by {@link authInterceptor} for the service to read. */
export const agentCallerKey = createContextKey<AgentCaller | undefined>(undefined, {
  description: "authenticated AgentService caller",
});

/**
 * A server interceptor that admits only authenticated callers whose role may
 * call the method: no or an unknown token → `unauthenticated`; a known caller
 * calling another role's method → `permission_denied`. Refusals are logged
 * (without the token).
 */
export function authInterceptor(authenticator: AgentAuthenticator, log: Logger): Interceptor {
  return (next) => async (req) => {
    const method = req.method.name;
    const header = req.header.get("authorization") ?? "";
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m) {
      log.warn({ method }, "agent call refused: no bearer token");
      throw new ConnectError(
        "the agent serves authenticated callers only: send authorization: Bearer <token>",
        Code.Unauthenticated,
      );
    }
    let caller: AgentCaller | undefined;
    try {
      caller = await authenticator.authenticate(m[1]);
    } catch (err) {
      log.error({ method, err: (err as Error).message }, "agent call refused: authentication unavailable");
      throw new ConnectError(
        `cannot check the caller's token (${authenticator.name}): ${(err as Error).message}`,
        Code.Unavailable,
      );
    }
    if (!caller) {
      log.warn({ method }, "agent call refused: token not accepted");
      throw new ConnectError(
        `token not accepted (${authenticator.name} authentication)`,
        Code.Unauthenticated,
      );
    }
    const allowed = AGENT_METHOD_ROLES[method] ?? [];
    if (!caller.role || !allowed.includes(caller.role)) {
      log.warn({ method, caller: caller.identity, role: caller.role }, "agent call refused: not permitted");
      throw new ConnectError(
        `${caller.identity} (${caller.role ?? "no ESB role"}) may not call ${method}` +
          (allowed.length ? `; it is for the ${allowed.join(" and ")}` : ""),
        Code.PermissionDenied,
      );
    }
    req.contextValues.set(agentCallerKey, caller);
    return next(req);
  };
}
