import type { IncomingMessage, ServerResponse } from "node:http";
import { randomUUID } from "node:crypto";
import type { Logger } from "@esb/common";
import type { EventInvocationQueue } from "./event-invocation-queue.js";
import type { FunctionInvoker } from "./function-invoker.js";
import { functionArn, parseFunctionName, type FunctionKey } from "./function-name.js";
import { resolveQualified } from "./function-versions.js";
import type { FunctionRegistry } from "./function-registry.js";
import type { InvocationRecorder, InvocationStatus } from "./invocation-recorder.js";
import { LambdaApiError } from "./lambda-api-error.js";
import { readRequestBody } from "./request-body-reader.js";
import type { AuthenticatedRequest } from "./sigv4-auth.js";

/** Limits of the Invoke API. */
export interface InvokeApiLimits {
  /** Largest RequestResponse/DryRun payload (AWS: 6 MB). */
  maxSyncPayloadBytes: number;
  /** Largest Event payload (AWS: 1 MB). */
  maxAsyncPayloadBytes: number;
}

const INVOCATION_TYPES = new Set(["RequestResponse", "Event", "DryRun"]);

/**
 * The Lambda Invoke API, `POST /2015-03-31/functions/{FunctionName}/invocations`
 * as the AWS SDKs and CLI speak it (GetFunction and the rest of the control plane:
 * ControlApiHandler):
 *
 * - `X-Amz-Invocation-Type`: RequestResponse (default) → 200 with the function's
 *   result; Event → 202 once stored (see EventInvocationQueue; a full queue is
 *   TooManyRequestsException); DryRun → 204 when the function exists.
 * - `X-Amz-Log-Type: Tail` → `X-Amz-Log-Result` (base64 log tail from the worker).
 * - A failed function → 200 with `X-Amz-Function-Error: Unhandled`.
 * - Errors as AWS types (`x-amzn-errortype`): ResourceNotFoundException,
 *   InvalidRequestContentException, RequestTooLargeException,
 *   TooManyRequestsException, ResourceConflictException, ServiceException.
 *
 * FunctionName forms: see {@link resolveFunctionName}.
 *
 * With gateway auth on, each call comes with its verified caller (`signed`, whose
 * body was read to check the signature) and is refused with AccessDeniedException
 * before the function is looked up when the caller's key does not cover the
 * function's namespace (so a key cannot learn which functions exist elsewhere).
 */
export class InvokeApiHandler {
  constructor(
    private readonly registry: FunctionRegistry,
    private readonly invoker: FunctionInvoker,
    private readonly queue: EventInvocationQueue,
    private readonly recorder: InvocationRecorder,
    private readonly defaultNamespace: string,
    private readonly limits: InvokeApiLimits,
    private readonly logger: Logger,
  ) {}

  /** Handles an Invoke call; `rawFunctionName` is the still URL-encoded path segment. */
  async invoke(
    req: IncomingMessage,
    res: ServerResponse,
    rawFunctionName: string,
    query: URLSearchParams,
    signed?: AuthenticatedRequest,
  ): Promise<void> {
    const started = performance.now();
    const requestId = randomUUID();
    const typeHeader = headerValue(req, "x-amz-invocation-type") ?? "RequestResponse";
    const type = INVOCATION_TYPES.has(typeHeader) ? typeHeader : "RequestResponse";
    let fnLabel = rawFunctionName;
    const fail = (err: LambdaApiError, startKind: "cold" | "warm" | "thawed" | "none" = "none") => {
      err.send(res, requestId);
      this.recorder.record({
        requestId,
        function: fnLabel,
        type,
        status: statusOf(err),
        startKind,
        durationMs: performance.now() - started,
        error: err.type,
      });
    };
    try {
      if (!INVOCATION_TYPES.has(typeHeader)) {
        throw new LambdaApiError(
          "InvalidParameterValueException",
          `Unsupported invocation type: ${typeHeader}. Use RequestResponse, Event or DryRun.`,
        );
      }
      const logType = headerValue(req, "x-amz-log-type") ?? "None";
      if (logType !== "None" && logType !== "Tail") {
        throw new LambdaApiError(
          "InvalidParameterValueException",
          `Unsupported log type: ${logType}. Use None or Tail.`,
        );
      }
      const { key, qualifier } = this.resolve(rawFunctionName, query);
      const denied = signed?.authorize(
        key.namespace,
        "lambda:InvokeFunction",
        functionArn(key, signed.caller.region),
      );
      // Recorded under the raw name (one "(unresolved)" series): a denied caller chooses any name.
      if (denied) throw denied;
      fnLabel = `${key.namespace}/${key.name}`;
      // A version or alias runs its own LambdaFunction (function-versions.ts).
      const target = resolveQualified(this.registry, key, qualifier);
      const fn = target.fn;

      const limit = type === "Event" ? this.limits.maxAsyncPayloadBytes : this.limits.maxSyncPayloadBytes;
      const read = signed
        ? signed.body.length > limit
          ? ({ tooLarge: true } as const)
          : { tooLarge: false as const, body: signed.body }
        : await readRequestBody(req, limit);
      if (read.tooLarge) {
        throw new LambdaApiError(
          "RequestTooLargeException",
          `Request must be smaller than ${limit} bytes for the InvokeFunction operation`,
        );
      }
      if (type === "DryRun") {
        res.writeHead(204, { "x-amzn-requestid": requestId });
        res.end();
        this.recorder.record({
          requestId,
          function: fnLabel,
          type,
          status: "ok",
          startKind: "none",
          durationMs: performance.now() - started,
        });
        return;
      }
      const payload = read.body.length === 0 ? Buffer.from("{}") : read.body;
      try {
        JSON.parse(payload.toString("utf8"));
      } catch (err) {
        throw new LambdaApiError(
          "InvalidRequestContentException",
          `Could not parse request body into json: ${(err as Error).message}`,
        );
      }
      const clientContext = headerValue(req, "x-amz-client-context");
      if (clientContext !== undefined) validateClientContext(clientContext);

      const invocation = {
        key: target.key,
        fn,
        payload,
        requestId,
        clientContext,
        logTail: logType === "Tail",
      };
      if (type === "Event") {
        await this.queue.enqueue(invocation);
        res.writeHead(202, { "x-amzn-requestid": requestId, "content-length": 0 });
        res.end();
        return;
      }
      const result = await this.invoker.invoke(invocation);
      const headers: Record<string, string | number> = {
        "content-type": "application/json",
        "content-length": result.payload.length,
        "x-amzn-requestid": requestId,
        "x-amz-executed-version": target.version,
      };
      if (result.functionError) headers["x-amz-function-error"] = result.functionError;
      if (logType === "Tail" && result.logResult) headers["x-amz-log-result"] = result.logResult;
      res.writeHead(200, headers);
      res.end(result.payload);
      this.recorder.record({
        requestId,
        function: fnLabel,
        type,
        status: result.functionError ? "function_error" : "ok",
        startKind: result.startKind,
        durationMs: performance.now() - started,
        error: result.errorType,
      });
    } catch (err) {
      if (err instanceof LambdaApiError) return fail(err);
      this.logger.error({ err, requestId }, "invoke failed unexpectedly");
      fail(new LambdaApiError("ServiceException", `ESB gateway internal error: ${(err as Error).message}`));
    }
  }

  private resolve(rawFunctionName: string, query: URLSearchParams): { key: FunctionKey; qualifier?: string } {
    let name: string;
    try {
      name = decodeURIComponent(rawFunctionName);
    } catch {
      throw new LambdaApiError("ResourceNotFoundException", `Function not found: ${rawFunctionName}`);
    }
    return parseFunctionName(name, query.get("Qualifier") ?? undefined, this.defaultNamespace);
  }
}

function headerValue(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function validateClientContext(value: string): void {
  let ok: boolean;
  try {
    const decoded = JSON.parse(Buffer.from(value, "base64").toString("utf8")) as unknown;
    ok = typeof decoded === "object" && decoded !== null && !Array.isArray(decoded);
  } catch {
    ok = false;
  }
  if (!ok)
    throw new LambdaApiError(
      "InvalidRequestContentException",
      "Client context must be a valid Base64-encoded JSON object.",
    );
  if (value.length > 3583) {
    throw new LambdaApiError(
      "InvalidParameterValueException",
      "Client context must be at most 3583 bytes once base64 encoded.",
    );
  }
}

function statusOf(err: LambdaApiError): InvocationStatus {
  if (err.type === "TooManyRequestsException") return "throttled";
  if (err.type === "ResourceNotFoundException") return "not_found";
  return err.statusCode >= 500 ? "service_error" : "client_error";
}
