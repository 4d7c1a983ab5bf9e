import type { IncomingMessage, ServerResponse } from "node:http";
import { randomUUID } from "node:crypto";
import type { Logger } from "@esb/common";
import { ZIP_LIMITS } from "./function-code-zip.js";
import { functionArn, parseFunctionName, type FunctionKey } from "./function-name.js";
import type { FunctionRegistry } from "./function-registry.js";
import type { FunctionStatusLookup } from "./function-state.js";
import type { FunctionStore } from "./function-store.js";
import { LambdaApiError } from "./lambda-api-error.js";
import { readRequestBody } from "./request-body-reader.js";
import type { AuthenticatedRequest } from "./sigv4-auth.js";
import { LambdaApiOperations } from "./control-api-versions.js";

const ROUTES: [string, RegExp, keyof LambdaApiOperations, boolean][] = [
  ["POST", /^\/2015-03-31\/functions\/?$/, "createFunction", true],
  ["GET", /^\/2015-03-31\/functions\/?$/, "listFunctions", false],
  ["GET", /^\/2015-03-31\/functions\/([^/]+)\/?$/, "getFunction", false],
  ["DELETE", /^\/2015-03-31\/functions\/([^/]+)\/?$/, "deleteFunction", true],
  ["GET", /^\/2015-03-31\/functions\/([^/]+)\/configuration\/?$/, "getFunctionConfiguration", false],
  ["PUT", /^\/2015-03-31\/functions\/([^/]+)\/configuration\/?$/, "updateFunctionConfiguration", true],
  ["PUT", /^\/2015-03-31\/functions\/([^/]+)\/code\/?$/, "updateFunctionCode", true],
  ["PUT", /^\/2017-10-31\/functions\/([^/]+)\/concurrency\/?$/, "putFunctionConcurrency", true],
  ["DELETE", /^\/2017-10-31\/functions\/([^/]+)\/concurrency\/?$/, "deleteFunctionConcurrency", true],
  ["GET", /^\/2019-09-30\/functions\/([^/]+)\/concurrency\/?$/, "getFunctionConcurrency", false],
  [
    "PUT",
    /^\/2019-09-30\/functions\/([^/]+)\/provisioned-concurrency\/?$/,
    "putProvisionedConcurrencyConfig",
    true,
  ],
  [
    "GET",
    /^\/2019-09-30\/functions\/([^/]+)\/provisioned-concurrency\/?$/,
    "getProvisionedConcurrencyConfig",
    false,
  ],
  [
    "DELETE",
    /^\/2019-09-30\/functions\/([^/]+)\/provisioned-concurrency\/?$/,
    "deleteProvisionedConcurrencyConfig",
    true,
  ],
  ["POST", /^\/2017-03-31\/tags\/([^/]+)\/?$/, "tagResource", true],
  ["DELETE", /^\/2017-03-31\/tags\/([^/]+)\/?$/, "untagResource", true],
  ["GET", /^\/2017-03-31\/tags\/([^/]+)\/?$/, "listTags", false],
  ["POST", /^\/2015-03-31\/functions\/([^/]+)\/versions\/?$/, "publishVersion", true],
  ["GET", /^\/2015-03-31\/functions\/([^/]+)\/versions\/?$/, "listVersionsByFunction", false],
  ["POST", /^\/2015-03-31\/functions\/([^/]+)\/aliases\/?$/, "createAlias", true],
  ["GET", /^\/2015-03-31\/functions\/([^/]+)\/aliases\/?$/, "listAliases", false],
  ["GET", /^\/2015-03-31\/functions\/([^/]+)\/aliases\/([^/]+)\/?$/, "getAlias", false],
  ["PUT", /^\/2015-03-31\/functions\/([^/]+)\/aliases\/([^/]+)\/?$/, "updateAlias", true],
  ["DELETE", /^\/2015-03-31\/functions\/([^/]+)\/aliases\/([^/]+)\/?$/, "deleteAlias", true],
];

/** Operations that take a Qualifier (a version or alias); the others refuse one. */
const QUALIFIED = new Set(["getFunction", "getFunctionConfiguration", "deleteFunction"]);

/** Paths whose request carries a deployment package (a base64 zip in JSON): AWS's larger request limit. */
export function controlRequestLimit(method: string | undefined, path: string): number | undefined {
  if (method === "POST" && /^\/2015-03-31\/functions\/?$/.test(path)) return ZIP_LIMITS.maxRequestBytes;
  if (method === "PUT" && /^\/2015-03-31\/functions\/[^/]+\/code\/?$/.test(path))
    return ZIP_LIMITS.maxRequestBytes;
  return undefined;
}

/** Operation names as AWS spells them in RequestEntityTooLarge messages. */
function operationName(op: keyof LambdaApiOperations): string {
  return op.charAt(0).toUpperCase() + op.slice(1);
}

/**
 * The Lambda control-plane API on the gateway's port (CreateFunction, Get/List/Update/Delete,
 * concurrency, provisioned concurrency, tags), each call mapped onto the LambdaFunction resource
 * through a {@link FunctionStore} (Kubernetes or the functions folder), so the resource stays
 * the one source of truth. Reads come from the gateway's registry (what Invoke uses) and the
 * controller's view of the function (State, LastUpdateStatus).
 *
 * Security: every call that changes a function needs a caller verified by the gateway's SigV4
 * check, in every mode: with gateway auth off they are refused (403
 * MissingAuthenticationTokenException), because they change what runs on the nodes. The caller's
 * key must cover the function's namespace (AccessDeniedException), and the API writes only in the
 * gateway's namespace. Reads follow the Invoke API's rule (signed when auth is on).
 */
export class ControlApiHandler {
  private readonly ops: LambdaApiOperations;

  constructor(
    store: FunctionStore | undefined,
    registry: FunctionRegistry,
    private readonly namespace: string,
    private readonly logger: Logger,
    statusOf?: FunctionStatusLookup,
  ) {
    this.ops = new LambdaApiOperations(store, registry, namespace, logger, statusOf);
  }

  /** The operation `method path` names, or undefined when the path is not the control-plane API's. */
  match(method: string | undefined, path: string): keyof LambdaApiOperations | undefined {
    return ROUTES.find(([m, re]) => m === method && re.test(path))?.[2];
  }

  /** Serves one control-plane call; `signed` is the verified caller when gateway auth is on. */
  async handle(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    query: URLSearchParams,
    signed?: AuthenticatedRequest,
  ): Promise<void> {
    const requestId = randomUUID();
    const route = ROUTES.find(([m, re]) => m === req.method && re.test(path))!;
    const [, re, op, writes] = route;
    const match = re.exec(path);
    const raw = match?.[1];
    try {
      const action = `lambda:${op === "listTags" ? "ListTags" : operationName(op)}`;
      if (writes && !signed) {
        req.resume();
        throw new LambdaApiError(
          "MissingAuthenticationTokenException",
          `${operationName(op)} changes what runs on ESB and needs an authenticated caller: turn on the gateway's AWS SigV4 verification (esb up --credentials FILE, or chart gateway.auth.sigv4.enabled) and sign the request (docs/lambda-api.md)`,
        );
      }
      let key: FunctionKey | undefined;
      let qualifier: string | undefined;
      if (raw !== undefined) ({ key, qualifier } = this.resolve(raw, op, query));
      if (qualifier !== undefined && !QUALIFIED.has(op))
        throw new LambdaApiError(
          "InvalidParameterValueException",
          `${operationName(op)} does not take a qualifier (${qualifier}): name the function itself`,
        );
      const sub = match?.[2] === undefined ? undefined : decode(match[2]);
      if (key && signed) {
        const denied = signed.authorize(key.namespace, action, functionArn(key, signed.caller.region));
        if (denied) throw denied;
      }
      const limit = controlRequestLimit(req.method, path) ?? 6 * 1024 * 1024;
      const read = signed
        ? signed.body.length > limit
          ? ({ tooLarge: true } as const)
          : { tooLarge: false as const, body: signed.body }
        : await readRequestBody(req, limit);
      if (read.tooLarge)
        throw new LambdaApiError(
          "RequestEntityTooLargeException",
          `Request must be smaller than ${limit} bytes for the ${operationName(op)} operation`,
        );
      const body = parseBody(read.body);
      const result = await this.ops[op](
        { key, qualifier, sub, query, body, region: signed?.caller.region },
        signed,
      );
      const headers: Record<string, string | number> = { "x-amzn-requestid": requestId };
      if (result.body === undefined) {
        res.writeHead(result.status, headers);
        res.end();
        return;
      }
      const text = JSON.stringify(result.body);
      headers["content-type"] = "application/json";
      headers["content-length"] = Buffer.byteLength(text);
      res.writeHead(result.status, headers);
      res.end(text);
    } catch (err) {
      if (err instanceof LambdaApiError) return err.send(res, requestId);
      this.logger.error({ err, requestId, operation: op }, "control-plane call failed unexpectedly");
      new LambdaApiError("ServiceException", `ESB gateway internal error: ${(err as Error).message}`).send(
        res,
        requestId,
      );
    }
  }

  private resolve(
    raw: string,
    op: keyof LambdaApiOperations,
    query: URLSearchParams,
  ): { key: FunctionKey; qualifier?: string } {
    const name = decode(raw);
    // Provisioned concurrency names a version or alias; the Qualifier is checked by the operation.
    const qualifier = op.endsWith("ProvisionedConcurrencyConfig")
      ? undefined
      : (query.get("Qualifier") ?? undefined);
    return parseFunctionName(name, qualifier, this.namespace);
  }
}

function decode(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new LambdaApiError("ResourceNotFoundException", `Function not found: ${raw}`);
  }
}

function parseBody(body: Buffer): Record<string, unknown> {
  if (body.length === 0) return {};
  try {
    const v = JSON.parse(body.toString("utf8")) as unknown;
    if (typeof v === "object" && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // answered below
  }
  throw new LambdaApiError("InvalidRequestContentException", "Could not parse request body into json");
}
