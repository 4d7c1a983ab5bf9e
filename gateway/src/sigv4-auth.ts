import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Logger } from "@esb/common";
import type { GatewayMetrics } from "./gateway-metrics.js";
import { LambdaApiError } from "./lambda-api-error.js";
import { readRequestBody } from "./request-body-reader.js";
import type { CredentialStore } from "./sigv4-credentials.js";
import { AuthFailure, verifySigV4, type Caller } from "./sigv4-verifier.js";

/**
 * Which requests must be signed: `invokeApi`, the Lambda API paths only (HTTP
 * routes stay open, like API Gateway routes without an authorizer); `all`, the
 * HTTP routes too (signed for service `execute-api`, like API Gateway's IAM
 * auth). `/healthz`, `/readyz` and `/metrics` are never signed (probes, scrapers).
 */
export type AuthScope = "invokeApi" | "all";

/** Which API a request is for: decides the error shape and the metric label. */
export type AuthApi = "invoke" | "http";

/** A request whose signature was verified, with the body that was read to verify it. */
export interface AuthenticatedRequest {
  caller: Caller;
  /** The whole request body (the handler must not read the request again). */
  body: Buffer;
  /**
   * Checks that the caller's key may act on a function of `namespace`: undefined
   * when it may, else the AccessDeniedException to answer (already counted).
   */
  authorize(namespace: string, action: string, resource: string): AuthFailure | undefined;
}

/**
 * Verifies callers with AWS SigV4 against a {@link CredentialStore} and scopes
 * them to their namespaces. Failures are answered as AWS answers them, counted
 * in `esb_gateway_auth_failures_total` and logged at debug level (never a
 * secret, a signature or the Authorization header).
 */
export class SigV4Authenticator {
  constructor(
    private readonly store: CredentialStore,
    readonly scope: AuthScope,
    private readonly maxBodyBytes: number,
    private readonly metrics: GatewayMetrics,
    private readonly logger: Logger,
  ) {}

  /** Whether a request to the Lambda API (`lambdaApi`) or to an HTTP route must be signed. */
  covers(lambdaApi: boolean): boolean {
    return lambdaApi || this.scope === "all";
  }

  /**
   * Reads the body (the payload hash needs it) and verifies the signature. On
   * failure the error response is sent and undefined is returned.
   */
  async authenticate(
    req: IncomingMessage,
    res: ServerResponse,
    api: AuthApi,
    /** A larger body limit for this request (CreateFunction and UpdateFunctionCode carry a zip). */
    maxBodyBytes?: number,
  ): Promise<AuthenticatedRequest | undefined> {
    const read = await readRequestBody(req, maxBodyBytes ?? this.maxBodyBytes);
    if (read.tooLarge) {
      // Too large to hash: refused before verification, as AWS refuses it before running anything.
      if (maxBodyBytes !== undefined)
        new LambdaApiError(
          "RequestEntityTooLargeException",
          `Request must be smaller than ${maxBodyBytes} bytes for the ${/\/code\/?$/.test(req.url?.split("?")[0] ?? "") ? "UpdateFunctionCode" : "CreateFunction"} operation`,
        ).send(res, randomUUID());
      else if (api === "invoke")
        new LambdaApiError(
          "RequestTooLargeException",
          `Request must be smaller than ${this.maxBodyBytes} bytes for the InvokeFunction operation`,
        ).send(res, randomUUID());
      else sendRouteError(res, 413, { message: "Request Entity Too Large" }, randomUUID());
      return undefined;
    }
    try {
      const caller = await verifySigV4(
        { method: req.method ?? "GET", url: req.url ?? "/", headers: req.headersDistinct, body: read.body },
        (id) => this.store.get(id),
        api === "invoke" ? "lambda" : "execute-api",
      );
      return {
        caller,
        body: read.body,
        authorize: (ns, action, resource) => this.authorize(caller, api, ns, action, resource),
      };
    } catch (err) {
      if (!(err instanceof AuthFailure)) throw err;
      this.refused(err, api, req);
      const requestId = randomUUID();
      if (api === "invoke") err.send(res, requestId);
      else sendRouteAuthError(res, err, requestId);
      return undefined;
    }
  }

  private authorize(
    caller: Caller,
    api: AuthApi,
    namespace: string,
    action: string,
    resource: string,
  ): AuthFailure | undefined {
    const allowed = caller.credential.namespaces;
    if (allowed.includes("*") || allowed.includes(namespace)) return undefined;
    const err = new AuthFailure(
      "access_denied",
      "AccessDeniedException",
      `User: ${caller.userArn} is not authorized to perform: ${action} on resource: ${resource} because no identity-based policy allows the ${action} action`,
      caller.credential.accessKeyId,
    );
    this.metrics.authFailures.inc({ api, reason: err.reason });
    this.logger.debug({ api, reason: err.reason, accessKeyId: err.accessKeyId, namespace }, "caller refused");
    return err;
  }

  private refused(err: AuthFailure, api: AuthApi, req: IncomingMessage): void {
    this.metrics.authFailures.inc({ api, reason: err.reason });
    this.logger.debug(
      { api, reason: err.reason, accessKeyId: err.accessKeyId, remote: req.socket.remoteAddress },
      "request refused: not authenticated",
    );
  }
}

/**
 * An auth error on an HTTP route, as API Gateway answers it: the status, the
 * type in `x-amzn-errortype` and a body of just `{"message": ...}`.
 */
export function sendRouteAuthError(res: ServerResponse, err: LambdaApiError, requestId: string): void {
  sendRouteError(res, err.statusCode, { message: err.message }, requestId, err.type);
}

function sendRouteError(
  res: ServerResponse,
  status: number,
  body: unknown,
  requestId: string,
  type?: string,
): void {
  const text = JSON.stringify(body);
  const headers: Record<string, string | number> = {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    "apigw-requestid": requestId,
  };
  if (type) headers["x-amzn-errortype"] = type;
  res.writeHead(status, headers);
  res.end(text);
}
