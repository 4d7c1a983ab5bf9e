import type { IncomingMessage, ServerResponse } from "node:http";
import { randomUUID } from "node:crypto";
import type { Logger } from "@esb/common";
import { buildHttpApiV2Event, buildRestApiV1Event, mapProxyResponse } from "./api-gateway-events.js";
import type { FunctionInvoker } from "./function-invoker.js";
import type { FunctionRegistry } from "./function-registry.js";
import type { InvocationRecorder, InvocationStatus } from "./invocation-recorder.js";
import { LambdaApiError } from "./lambda-api-error.js";
import { readRequestBody } from "./request-body-reader.js";
import { sendRouteAuthError, type AuthenticatedRequest } from "./sigv4-auth.js";

/**
 * Serves functions' `spec.http.routes` like an API Gateway HTTP API with a
 * Lambda proxy integration: the request becomes a proxy event (payload 2.0 by
 * default, 1.0 when the function asks), the function's result becomes the
 * response. Answers as API Gateway does: 404 `{"message":"Not Found"}` without
 * a route, 413 for bodies over the limit, 502 `{"message":"Internal server
 * error"}` for a function error or malformed result, 429 when throttled, 503
 * when the function is not ready, 500 for gateway/agent failures.
 *
 * With gateway auth scope `all`, requests come verified (`signed`): a caller
 * whose key does not cover the route's namespace gets 403 AccessDeniedException.
 */
export class HttpRouteHandler {
  constructor(
    private readonly registry: FunctionRegistry,
    private readonly invoker: FunctionInvoker,
    private readonly recorder: InvocationRecorder,
    private readonly maxBodyBytes: number,
    private readonly logger: Logger,
  ) {}

  async handle(req: IncomingMessage, res: ServerResponse, signed?: AuthenticatedRequest): Promise<void> {
    const started = performance.now();
    const requestId = randomUUID();
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const rawPath = q >= 0 ? url.slice(0, q) : url;
    const rawQueryString = q >= 0 ? url.slice(q + 1) : "";
    const method = req.method ?? "GET";
    const match = this.registry.routes().match(method, rawPath);
    if (!match) return sendJson(res, 404, { message: "Not Found" }, requestId);
    const key = match.route.function;
    const fnLabel = `${key.namespace}/${key.name}`;
    const fn = this.registry.get(key.namespace, key.name);
    if (!fn) return sendJson(res, 404, { message: "Not Found" }, requestId);
    const record = (
      status: InvocationStatus,
      startKind: "cold" | "warm" | "thawed" | "none",
      error?: string,
    ) =>
      this.recorder.record({
        requestId,
        function: fnLabel,
        type: "Http",
        status,
        startKind,
        durationMs: performance.now() - started,
        error,
      });

    const denied = signed?.authorize(
      key.namespace,
      "execute-api:Invoke",
      `arn:aws:execute-api:${signed.caller.region}:000000000000:${key.namespace}/$default/${method}${rawPath}`,
    );
    if (denied) {
      record("client_error", "none", denied.type);
      return sendRouteAuthError(res, denied, requestId);
    }
    const read = signed
      ? signed.body.length > this.maxBodyBytes
        ? ({ tooLarge: true } as const)
        : { tooLarge: false as const, body: signed.body }
      : await readRequestBody(req, this.maxBodyBytes);
    if (read.tooLarge) {
      record("client_error", "none", "RequestTooLarge");
      return sendJson(res, 413, { message: "Request Entity Too Large" }, requestId);
    }
    const request = {
      method,
      rawPath,
      rawQueryString,
      rawHeaders: req.rawHeaders,
      body: read.body,
      sourceIp: (req.socket.remoteAddress ?? "").replace(/^::ffff:/, ""),
      requestId,
      domainName: (req.headers.host ?? "localhost").replace(/:\d+$/, ""),
      protocol: `HTTP/${req.httpVersion}`,
      now: new Date(),
      match,
    };
    const format = match.route.payloadFormat;
    const event = format === "1.0" ? buildRestApiV1Event(request) : buildHttpApiV2Event(request);
    const payload = Buffer.from(JSON.stringify(event));
    // A binary body grows by a third once base64-encoded into the event: the event, not the body,
    // must fit the invocation limit, or the worker refuses it (and a healthy worker is lost).
    if (payload.length > this.maxBodyBytes) {
      record("client_error", "none", "RequestTooLarge");
      return sendJson(res, 413, { message: "Request Entity Too Large" }, requestId);
    }
    try {
      const result = await this.invoker.invoke({ key, fn, payload, requestId });
      if (result.functionError) {
        record("function_error", result.startKind, result.errorType);
        return sendJson(res, 502, { message: "Internal server error" }, requestId);
      }
      const mapped = mapProxyResponse(result.payload, format);
      if (!mapped) {
        this.logger.warn({ requestId, function: fnLabel }, "function returned a malformed proxy response");
        record("function_error", result.startKind, "MalformedProxyResponse");
        return sendJson(res, 502, { message: "Internal server error" }, requestId);
      }
      const headers: string[] = [];
      for (const [k, v] of mapped.headers) {
        if (k === "content-length" || k === "transfer-encoding" || k === "connection") continue;
        headers.push(k, v);
      }
      headers.push("content-length", String(mapped.body.length), "apigw-requestid", requestId);
      res.writeHead(mapped.statusCode, headers);
      res.end(mapped.body);
      record("ok", result.startKind);
    } catch (err) {
      if (!(err instanceof LambdaApiError)) {
        this.logger.error({ err, requestId }, "HTTP route invocation failed unexpectedly");
        record("service_error", "none", String(err));
        return sendJson(res, 500, { message: "Internal Server Error" }, requestId);
      }
      if (err.type === "TooManyRequestsException") {
        record("throttled", "none", err.type);
        return sendJson(res, 429, { message: "Too Many Requests" }, requestId);
      }
      if (err.type === "ResourceConflictException") {
        record("service_error", "none", err.type);
        return sendJson(res, 503, { message: "Service Unavailable" }, requestId);
      }
      record("service_error", "none", err.type);
      this.logger.error({ requestId, function: fnLabel, err: err.message }, "HTTP route invocation failed");
      return sendJson(res, 500, { message: "Internal Server Error" }, requestId);
    }
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown, requestId: string): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    "apigw-requestid": requestId,
  });
  res.end(text);
}
