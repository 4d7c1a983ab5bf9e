// Node.js runtime client: loads the function's handler and serves invocations from the
// Lambda Runtime API (GET /next, POST /response | /error, POST /init/error).
//
// Runs INSIDE the worker image: Node built-ins only, imports only sibling worker files.
import { existsSync, readFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { createRequire } from "node:module";
import { dirname, resolve as resolvePath } from "node:path";
import { pathToFileURL } from "node:url";
import { format } from "node:util";
import { collectAfterLargePayload } from "./payload-gc.js";

const EMPTY = Buffer.alloc(0);

/** The handler signature the client calls: async (event, context) or callback style (event, context, callback). */
export type Handler = (event: unknown, context: LambdaContext, callback: Callback) => unknown;
/** Node-style callback given to callback handlers. */
export type Callback = (error?: unknown, result?: unknown) => void;

/** The `context` object passed to handlers (AWS field names). */
export interface LambdaContext {
  awsRequestId: string;
  functionName: string;
  functionVersion: string;
  memoryLimitInMB: string;
  invokedFunctionArn: string;
  logGroupName: string;
  logStreamName: string;
  callbackWaitsForEmptyEventLoop: boolean;
  clientContext: unknown;
  identity: unknown;
  getRemainingTimeInMillis(): number;
  succeed(result?: unknown): void;
  fail(error?: unknown): void;
  done(error?: unknown, result?: unknown): void;
}

/** Error body as AWS sends it for Node functions: `{errorType, errorMessage, stackTrace}`. */
export interface SerializedError {
  errorType: string;
  errorMessage: string;
  stackTrace: string[];
}

/** An init-phase failure with its AWS error type (`Runtime.HandlerNotFound`, ...). */
export class RuntimeInitError extends Error {
  constructor(
    readonly errorType: string,
    message: string,
    override readonly cause?: unknown,
  ) {
    super(message);
    this.name = errorType;
  }
}

/** Serialises a thrown value like the AWS Node runtime: errorType from the error's name, stack split in lines. */
export function serializeError(error: unknown): SerializedError {
  if (error instanceof Error) {
    return {
      errorType: error.name || error.constructor?.name || "Error",
      errorMessage: error.message,
      stackTrace: typeof error.stack === "string" ? error.stack.split("\n") : [],
    };
  }
  if (error !== null && typeof error === "object") {
    let message: string;
    try {
      message = JSON.stringify(error);
    } catch {
      message = String(error);
    }
    return { errorType: "object", errorMessage: message, stackTrace: [] };
  }
  return { errorType: typeof error, errorMessage: String(error), stackTrace: [] };
}

/** Minimal keep-alive client of the Lambda Runtime API. */
export class RuntimeApiClient {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 1 });
  private readonly host: string;
  private readonly port: number;

  /** @param endpoint "host:port" as in AWS_LAMBDA_RUNTIME_API. */
  constructor(endpoint: string) {
    const i = endpoint.lastIndexOf(":");
    this.host = i > 0 ? endpoint.slice(0, i) : endpoint;
    this.port = i > 0 ? Number(endpoint.slice(i + 1)) : 80;
  }

  /** Long-polls the next invocation. */
  next(): Promise<{ headers: Record<string, string | string[] | undefined>; body: Buffer }> {
    return this.call("GET", "/2018-06-01/runtime/invocation/next", undefined, {}).then((r) => {
      if (r.status !== 200) throw new Error(`Runtime API /next answered ${r.status}: ${r.body.toString()}`);
      return r;
    });
  }

  /** Posts a handler result. */
  async postResponse(requestId: string, body: string): Promise<void> {
    await this.call(
      "POST",
      `/2018-06-01/runtime/invocation/${encodeURIComponent(requestId)}/response`,
      body,
      {},
    );
  }

  /** Posts a handler error. */
  async postError(requestId: string, error: SerializedError): Promise<void> {
    await this.call(
      "POST",
      `/2018-06-01/runtime/invocation/${encodeURIComponent(requestId)}/error`,
      JSON.stringify(error),
      {
        "Lambda-Runtime-Function-Error-Type": error.errorType,
      },
    );
  }

  /** Posts an init failure. */
  async postInitError(error: SerializedError): Promise<void> {
    await this.call("POST", "/2018-06-01/runtime/init/error", JSON.stringify(error), {
      "Lambda-Runtime-Function-Error-Type": error.errorType,
    });
  }

  private call(
    method: string,
    path: string,
    body: string | undefined,
    headers: Record<string, string>,
  ): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: this.host,
          port: this.port,
          method,
          path,
          agent: this.agent,
          headers:
            body === undefined
              ? headers
              : { ...headers, "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
          );
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end(body);
    });
  }
}

/** Request id shown in console lines; "undefined" during init, as AWS prints it. */
let currentRequestId = "undefined";

const LEVELS: [keyof Console, string, NodeJS.WriteStream][] = [
  ["log", "INFO", process.stdout],
  ["info", "INFO", process.stdout],
  ["warn", "WARN", process.stderr],
  ["error", "ERROR", process.stderr],
  ["debug", "DEBUG", process.stdout],
  ["trace", "TRACE", process.stderr],
];

/** Makes console.* print `<ISO time>\t<request id>\t<LEVEL>\t<message>` lines as the AWS Node runtime does. */
export function patchConsole(): void {
  for (const [method, level, stream] of LEVELS) {
    (console as unknown as Record<string, unknown>)[method] = (...args: unknown[]): void => {
      let message = format(...args);
      if (method === "trace")
        message = `Trace: ${message}\n${new Error().stack?.split("\n").slice(2).join("\n") ?? ""}`;
      stream.write(`${new Date().toISOString()}\t${currentRequestId}\t${level}\t${message}\n`);
    };
  }
}

function isEsmPackage(file: string, taskRoot: string): boolean {
  let dir = dirname(file);
  for (;;) {
    const pkg = resolvePath(dir, "package.json");
    if (existsSync(pkg)) {
      try {
        return (JSON.parse(readFileSync(pkg, "utf8")) as { type?: string }).type === "module";
      } catch {
        return false;
      }
    }
    const parent = dirname(dir);
    if (parent === dir || (!dir.startsWith(taskRoot) && dir !== taskRoot)) return false;
    dir = parent;
  }
}

function classifyLoadError(err: unknown): unknown {
  const e = err as NodeJS.ErrnoException & { name?: string };
  if (e instanceof SyntaxError) {
    return new RuntimeInitError("Runtime.UserCodeSyntaxError", `${e.name}: ${e.message}`, err);
  }
  if (e && (e.code === "MODULE_NOT_FOUND" || e.code === "ERR_MODULE_NOT_FOUND")) {
    return new RuntimeInitError("Runtime.ImportModuleError", `Error: ${e.message}`, err);
  }
  // Anything else (an error the module throws while loading) keeps its own type, as on AWS.
  return err;
}

/**
 * Loads the handler named `handlerString` ("file.export", "dir/file.export", "file.obj.fn") from
 * `taskRoot`: `.js` (CommonJS, or ESM when the nearest package.json says "type": "module"),
 * `.mjs`, `.cjs`, else a package resolvable from the task root.
 * Throws {@link RuntimeInitError} with AWS types: Runtime.MalformedHandlerName,
 * Runtime.ImportModuleError, Runtime.UserCodeSyntaxError, Runtime.HandlerNotFound; errors the
 * module itself throws propagate unchanged.
 */
export async function loadHandler(taskRoot: string, handlerString: string): Promise<Handler> {
  const slash = handlerString.lastIndexOf("/");
  const dirPart = handlerString.slice(0, slash + 1);
  const rest = handlerString.slice(slash + 1);
  const dot = rest.indexOf(".");
  // The module must come from the task root: no absolute path, no '..' segment.
  if (dot <= 0 || dot === rest.length - 1 || dirPart.startsWith("/") || dirPart.split("/").includes("..")) {
    throw new RuntimeInitError("Runtime.MalformedHandlerName", `Bad handler ${handlerString}`);
  }
  const moduleName = dirPart + rest.slice(0, dot);
  const path = rest.slice(dot + 1).split(".");
  const base = resolvePath(taskRoot, moduleName);
  const req = createRequire(resolvePath(taskRoot, "index.js"));
  let mod: unknown;
  try {
    if (existsSync(`${base}.mjs`)) {
      mod = await import(pathToFileURL(`${base}.mjs`).href);
    } else if (existsSync(`${base}.js`)) {
      const file = `${base}.js`;
      mod = isEsmPackage(file, taskRoot) ? await import(pathToFileURL(file).href) : req(file);
    } else if (existsSync(`${base}.cjs`)) {
      mod = req(`${base}.cjs`);
    } else {
      // A package name or directory module, resolved like `require` from the task root.
      let resolved: string;
      try {
        resolved = req.resolve(moduleName.startsWith(".") || moduleName.startsWith("/") ? base : moduleName);
      } catch {
        throw new RuntimeInitError(
          "Runtime.ImportModuleError",
          `Error: Cannot find module '${moduleName}'\nRequire stack:\n- ${resolvePath(taskRoot)}`,
        );
      }
      mod = resolved.endsWith(".mjs") ? await import(pathToFileURL(resolved).href) : req(resolved);
    }
  } catch (err) {
    throw classifyLoadError(err);
  }
  let target: unknown = mod;
  for (const key of path) {
    target = target !== null && target !== undefined ? (target as Record<string, unknown>)[key] : undefined;
  }
  // An ESM namespace of a CommonJS module exposes module.exports as `default`.
  if (typeof target !== "function" && mod && typeof mod === "object" && "default" in mod) {
    let alt: unknown = (mod as { default: unknown }).default;
    for (const key of path)
      alt = alt !== null && alt !== undefined ? (alt as Record<string, unknown>)[key] : undefined;
    if (typeof alt === "function") target = alt;
  }
  if (typeof target !== "function") {
    throw new RuntimeInitError("Runtime.HandlerNotFound", `${rest} is undefined or not exported`);
  }
  return target as Handler;
}

function parseJsonHeader(value: string | string[] | undefined): unknown {
  if (typeof value !== "string" || value === "") return undefined;
  try {
    return JSON.parse(value);
  } catch {
    return undefined;
  }
}

function header(headers: Record<string, string | string[] | undefined>, name: string): string {
  const v = headers[name];
  return typeof v === "string" ? v : "";
}

/** Options of {@link NodeRuntimeClient}; defaults come from the Lambda environment variables. */
export interface NodeRuntimeClientOptions {
  runtimeApi?: string;
  taskRoot?: string;
  handler?: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * The Node.js runtime loop: init (load the handler, report init errors to /init/error and exit),
 * then forever: GET /next, call the handler with (event, context[, callback]), POST the JSON
 * result to /response or the serialised error to /error. Module state lives on between
 * invocations. Callback handlers with `callbackWaitsForEmptyEventLoop` (default true) are
 * answered when the event loop has drained; async handlers when their promise settles.
 */
export class NodeRuntimeClient {
  private readonly client: RuntimeApiClient;
  private readonly taskRoot: string;
  private readonly handlerName: string;
  private readonly env: NodeJS.ProcessEnv;
  /** AWS_LAMBDA_FUNCTION_MEMORY_SIZE, when set. */
  private readonly memoryLimitMb: number | undefined;
  private currentId: string | undefined;

  constructor(options: NodeRuntimeClientOptions = {}) {
    this.env = options.env ?? process.env;
    this.memoryLimitMb = Number(this.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE) || undefined;
    const api = options.runtimeApi ?? this.env.AWS_LAMBDA_RUNTIME_API;
    if (!api) throw new RuntimeInitError("Runtime.PlatformError", "AWS_LAMBDA_RUNTIME_API is not set");
    this.client = new RuntimeApiClient(api);
    this.taskRoot = options.taskRoot ?? this.env.LAMBDA_TASK_ROOT ?? "/var/task";
    this.handlerName = options.handler ?? this.env._HANDLER ?? "";
  }

  /** Runs the init phase then the invocation loop; resolves only if init fails (after reporting it). */
  async run(): Promise<void> {
    patchConsole();
    this.installCrashHandlers();
    let handler: Handler;
    try {
      handler = await loadHandler(this.taskRoot, this.handlerName);
    } catch (err) {
      const body = serializeError(err);
      console.error(JSON.stringify(body));
      await this.client.postInitError(body);
      process.exitCode = 129;
      return;
    }
    for (;;) {
      // Nothing of the invocation stays referenced here once it is done (see collectAfterLargePayload).
      const next = await this.client.next();
      const rss = process.memoryUsage.rss();
      const moved = await this.invoke(handler, next.headers, next.body);
      next.body = EMPTY;
      collectAfterLargePayload(moved, process.memoryUsage.rss() - rss, this.memoryLimitMb);
    }
  }

  private installCrashHandlers(): void {
    const crash = (errorType: string | undefined) => (err: unknown) => {
      const body = serializeError(err);
      if (errorType) {
        body.errorType = errorType;
        body.errorMessage = `${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`;
      }
      console.error(JSON.stringify(body));
      const id = this.currentId;
      // The process cannot be trusted after an uncaught error: report it, then exit as AWS does.
      const post = id ? this.client.postError(id, body) : Promise.resolve();
      post.finally(() => process.exit(129)).catch(() => process.exit(129));
    };
    process.on("uncaughtException", crash(undefined));
    process.on("unhandledRejection", crash("Runtime.UnhandledPromiseRejection"));
  }

  /** Runs one invocation and posts its outcome; resolves with the bytes of the event and the response. */
  private async invoke(
    handler: Handler,
    headers: Record<string, string | string[] | undefined>,
    raw: Buffer,
  ): Promise<number> {
    const requestId = header(headers, "lambda-runtime-aws-request-id");
    const deadline = Number(header(headers, "lambda-runtime-deadline-ms")) || Date.now() + 3000;
    currentRequestId = requestId;
    this.currentId = requestId;
    const traceId = header(headers, "lambda-runtime-trace-id");
    if (traceId) process.env._X_AMZN_TRACE_ID = traceId;
    else delete process.env._X_AMZN_TRACE_ID;
    let event: unknown;
    try {
      event = raw.length === 0 ? undefined : JSON.parse(raw.toString("utf8"));
    } catch (err) {
      await this.client.postError(requestId, serializeError(err));
      return raw.length;
    }
    const outcome = await new Promise<{ error?: unknown; result?: unknown; isError: boolean }>((settle) => {
      let settled = false;
      const finish = (isError: boolean, value: unknown): void => {
        if (settled) return;
        settled = true;
        const out = isError ? { error: value, isError } : { result: value, isError };
        if (context.callbackWaitsForEmptyEventLoop && viaCallback) {
          // AWS semantics: answer once everything the handler scheduled has run.
          process.once("beforeExit", () => settle(out));
        } else settle(out);
      };
      let viaCallback = false;
      const callback: Callback = (error, result) => {
        viaCallback = true;
        if (error !== undefined && error !== null) finish(true, error);
        else finish(false, result);
      };
      const context: LambdaContext = {
        awsRequestId: requestId,
        functionName: this.env.AWS_LAMBDA_FUNCTION_NAME ?? "",
        functionVersion: this.env.AWS_LAMBDA_FUNCTION_VERSION ?? "$LATEST",
        memoryLimitInMB: this.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE ?? "128",
        invokedFunctionArn: header(headers, "lambda-runtime-invoked-function-arn"),
        logGroupName: this.env.AWS_LAMBDA_LOG_GROUP_NAME ?? "",
        logStreamName: this.env.AWS_LAMBDA_LOG_STREAM_NAME ?? "",
        callbackWaitsForEmptyEventLoop: true,
        clientContext: parseJsonHeader(headers["lambda-runtime-client-context"]),
        identity: parseJsonHeader(headers["lambda-runtime-cognito-identity"]),
        getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
        succeed: (result) => callback(null, result),
        fail: (error) => callback(error ?? "handled"),
        done: (error, result) => callback(error, result),
      };
      let returned: unknown;
      try {
        returned = handler(event, context, callback);
      } catch (err) {
        finish(true, err);
        return;
      }
      if (
        returned !== null &&
        typeof returned === "object" &&
        typeof (returned as Promise<unknown>).then === "function"
      ) {
        (returned as Promise<unknown>).then(
          (value) => finish(false, value),
          (err: unknown) => finish(true, err ?? "handled"),
        );
      } else if (handler.length < 3) {
        // A plain (non-callback, non-async) handler: its return value is the result.
        finish(false, returned);
      }
    });
    if (outcome.isError) {
      await this.client.postError(requestId, serializeError(outcome.error));
      return raw.length;
    }
    let json: string;
    try {
      json = outcome.result === undefined ? "null" : JSON.stringify(outcome.result);
    } catch (err) {
      const e = serializeError(err);
      await this.client.postError(requestId, { ...e, errorType: "Runtime.SerializationError" });
      return raw.length;
    }
    await this.client.postResponse(requestId, json);
    return raw.length + json.length;
  }
}
