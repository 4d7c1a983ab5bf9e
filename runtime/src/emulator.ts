// Runtime Interface Emulator: the process a worker container starts. It serves the
// Invoke endpoint (the AWS RIE contract on :8080) and the Lambda Runtime API
// (127.0.0.1:9001) for one runtime process (the bootstrap), one invocation at a time.
//
// Runs INSIDE the worker image: Node built-ins only, imports only sibling worker files.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { accessSync, constants as fsConstants, existsSync, readFileSync, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { commandInCgroup, functionCgroupFromEnv, type FunctionCgroup } from "./function-cgroup.js";
import { InitStatus, INIT_STATUS_PATH } from "./init-status.js";
import { collectAfterLargePayload } from "./payload-gc.js";
import { restoreRuntimeOnlyEnv } from "./runtime-only-env.js";
import { preBootFits, type PreBootedRuntime } from "./sandbox-standby.js";

/** Largest invocation payload accepted on the Invoke endpoint (AWS synchronous limit, 6 MB). */
export const MAX_REQUEST_BYTES = 6 * 1024 * 1024;
/** Largest response a runtime may post (AWS: 6291556 bytes). */
export const MAX_RESPONSE_BYTES = 6291556;
/** Size of the log tail returned in `X-Amz-Log-Result`. */
export const LOG_TAIL_BYTES = 4096;
/** Where AWS looks for a bootstrap when no command is given, in order. */
export const DEFAULT_BOOTSTRAP_PATHS = ["/var/task/bootstrap", "/opt/bootstrap", "/var/runtime/bootstrap"];
/** Path of the Invoke endpoint (the function name segment is accepted as anything). */
export const INVOKE_PATH = "/2015-03-31/functions/function/invocations";
/** Extra time given to a runtime that is still initialising when an invocation arrives (AWS init limit). */
export const INIT_TIMEOUT_MS = 10_000;

const RUNTIME_PREFIX = "/2018-06-01/runtime/";
const INVOKE_RE = /^\/2015-03-31\/functions\/[^/]+\/invocations(?:\?.*)?$/;

/** Configuration of an {@link Emulator}. Every field has the AWS default. */
export interface EmulatorOptions {
  /** Invoke endpoint address (default 0.0.0.0:8080; port 0 picks a free port). */
  invokeHost?: string;
  invokePort?: number;
  /** Runtime API address given to the runtime as AWS_LAMBDA_RUNTIME_API (default 127.0.0.1:9001; 0 = free port). */
  runtimeApiHost?: string;
  runtimeApiPort?: number;
  /** Explicit bootstrap command (executable + args); when empty the bootstrap paths are searched. */
  command?: string[];
  /** Bootstrap search paths used when `command` is empty (default {@link DEFAULT_BOOTSTRAP_PATHS}). */
  bootstrapPaths?: string[];
  /** Base environment of the runtime process (default process.env); Lambda defaults are added when missing. */
  env?: NodeJS.ProcessEnv;
  /** Function timeout in seconds (default AWS_LAMBDA_FUNCTION_TIMEOUT or 3). */
  timeoutSeconds?: number;
  /** Memory size in MB reported in REPORT lines (default AWS_LAMBDA_FUNCTION_MEMORY_SIZE or 128). */
  memorySizeMb?: number;
  /** Start the runtime when the emulator starts, so init overlaps with the wait for the first request (default true). */
  startRuntimeAtStart?: boolean;
  /** Where log lines (ours and the runtime's stdout/stderr) go (default process.stdout). */
  log?: (chunk: string | Buffer) => void;
  /**
   * Source of "Max Memory Used": the function's cgroup (ESB_FUNCTION_CGROUP) or else the
   * worker's, the runtime process' VmHWM, or auto (a cgroup when found).
   */
  memorySource?: "auto" | "cgroup" | "process";
  /**
   * A runtime booted before the function was known (generic sandbox): it becomes the first
   * runtime process when it fits (same bootstrap and start-up variables, see preBootFits),
   * else it is killed and a fresh one spawned. Init Duration then counts from the hand-over.
   */
  preBooted?: PreBootedRuntime;
}

/** Addresses the emulator listens on after {@link Emulator.start}. */
export interface EmulatorAddresses {
  invoke: { host: string; port: number };
  runtimeApi: { host: string; port: number };
}

interface RuntimeProcess {
  child: ChildProcess;
  spawnedAt: bigint;
  /** The runtime called /next at least once (init finished). */
  ready: boolean;
  initDurationMs: number;
  initReported: boolean;
  killedByUs: boolean;
  restartAfterExit: boolean;
  exitHandled: boolean;
  initErrorReported: boolean;
}

interface Invocation {
  id: string;
  res: ServerResponse;
  body: Buffer;
  tail: boolean;
  runtimeHeaders: Record<string, string>;
  dispatched: boolean;
  started: boolean;
  done: boolean;
  startNs: bigint;
  timer: NodeJS.Timeout | undefined;
  logChunks: Buffer[] | undefined;
  logBytes: number;
}

interface FunctionErrorBody {
  errorType: string;
  errorMessage: string;
}

const SIGNAL_TEXT: Record<string, string> = {
  SIGKILL: "killed",
  SIGABRT: "aborted",
  SIGTERM: "terminated",
  SIGSEGV: "segmentation fault",
  SIGINT: "interrupt",
  SIGBUS: "bus error",
  SIGILL: "illegal instruction",
  SIGFPE: "floating point exception",
  SIGHUP: "hangup",
  SIGPIPE: "broken pipe",
  SIGQUIT: "quit",
  SIGTRAP: "trace/breakpoint trap",
};

/** Go-style exit description, as AWS prints it ("exit status 1", "signal: killed"). */
export function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  if (signal) return `signal: ${SIGNAL_TEXT[signal] ?? signal}`;
  return `exit status ${code ?? 0}`;
}

function numberFrom(value: string | undefined, fallback: number): number {
  const n = value === undefined || value === "" ? NaN : Number(value);
  return Number.isFinite(n) && n > 0 ? n : fallback;
}

/**
 * Builds emulator options from the worker environment: ESB_EMULATOR_HOST/PORT (default
 * 0.0.0.0:8080), ESB_RUNTIME_API_HOST/PORT (default 127.0.0.1:9001), ESB_BOOTSTRAP_PATHS
 * (colon-separated search list), AWS_LAMBDA_FUNCTION_TIMEOUT, AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
 * ESB_EMULATOR_MEMORY_SOURCE; `args` (the emulator's command line) is the explicit bootstrap command.
 */
export function emulatorOptionsFromEnv(env: NodeJS.ProcessEnv, args: string[]): EmulatorOptions {
  const source = env.ESB_EMULATOR_MEMORY_SOURCE;
  return {
    invokeHost: env.ESB_EMULATOR_HOST || "0.0.0.0",
    invokePort: numberFrom(env.ESB_EMULATOR_PORT, 8080),
    runtimeApiHost: env.ESB_RUNTIME_API_HOST || "127.0.0.1",
    runtimeApiPort: env.ESB_RUNTIME_API_PORT === "0" ? 0 : numberFrom(env.ESB_RUNTIME_API_PORT, 9001),
    command: args.length > 0 ? args : undefined,
    bootstrapPaths: env.ESB_BOOTSTRAP_PATHS ? env.ESB_BOOTSTRAP_PATHS.split(":").filter(Boolean) : undefined,
    env,
    memorySource: source === "cgroup" || source === "process" ? source : "auto",
  };
}

function isExecutableFile(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Finds the cgroup file holding the memory high-water mark of this worker, if any (startup only). */
function findCgroupMemoryPeak(): string | undefined {
  let cgroups: string;
  try {
    cgroups = readFileSync("/proc/self/cgroup", "utf8");
  } catch {
    return undefined;
  }
  const candidates: string[] = [];
  for (const line of cgroups.split("\n")) {
    const [, controllers, path] = line.split(":");
    if (path === undefined) continue;
    if (controllers.split(",").includes("memory")) {
      candidates.push(`/sys/fs/cgroup/memory${path === "/" ? "" : path}/memory.max_usage_in_bytes`);
      candidates.push("/sys/fs/cgroup/memory/memory.max_usage_in_bytes");
    } else if (controllers === "") {
      candidates.push(`/sys/fs/cgroup${path === "/" ? "" : path}/memory.peak`);
      candidates.push("/sys/fs/cgroup/memory.peak");
    }
  }
  return candidates.find((c) => existsSync(c));
}

/** Files whose `oom_kill N` counter tells that the kernel OOM-killed something in this cgroup. */
function findOomCounters(): string[] {
  return ["/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"].filter((f) =>
    existsSync(f),
  );
}

async function readOomKills(files: string[]): Promise<number> {
  let total = 0;
  for (const file of files) {
    try {
      const m = /(?:^|\n)oom_kill (\d+)/.exec(await readFile(file, "utf8"));
      if (m) total += Number(m[1]);
    } catch {
      // best effort: the counter may be unreadable
    }
  }
  return total;
}

function jsonBody(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

function readBody(
  req: IncomingMessage,
  limit: number,
  done: (body: Buffer | null, size: number) => void,
): void {
  const chunks: Buffer[] = [];
  let size = 0;
  req.on("data", (chunk: Buffer) => {
    size += chunk.length;
    if (size <= limit) chunks.push(chunk);
  });
  req.on("end", () => {
    if (size > limit) done(null, size);
    else done(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size), size);
  });
  req.on("error", () => done(null, -1));
}

/**
 * One Lambda execution environment: an Invoke endpoint (`POST /2015-03-31/functions/function/invocations`)
 * and the Lambda Runtime API served to one runtime process.
 *
 * Contract:
 * - one invocation at a time; a concurrent one gets 429 `TooManyRequestsException` (the caller
 *   should retry on another worker) — never queued, never a crash;
 * - a successful invocation answers 200 with the runtime's response body;
 * - function errors answer 200 with `X-Amz-Function-Error: Unhandled` and an
 *   `{errorType, errorMessage, ...}` body: handler errors (body from the runtime), init errors
 *   (from /init/error, or `Runtime.ExitError` when the runtime exits before asking for work),
 *   crashes (`Runtime.ExitError`, or `Runtime.OutOfMemory` when the cgroup reports an OOM kill),
 *   timeouts (`Sandbox.Timedout`, "<time> <id> Task timed out after N.NN seconds");
 * - after a timeout or crash the runtime is killed (its whole process group) and restarted;
 * - START / END / REPORT lines are logged per request; `X-Amz-Log-Type: Tail` returns the
 *   last 4 KB of the invocation's log base64-encoded in `X-Amz-Log-Result`;
 * - payloads over 6 MB get 413 `RequestTooLargeException`.
 */
export class Emulator {
  private readonly opts: Required<Omit<EmulatorOptions, "command" | "preBooted">> & {
    command: string[] | undefined;
  };
  /** Taken by the first spawn (see EmulatorOptions.preBooted). */
  private preBooted: PreBootedRuntime | undefined;
  /** The function's own memory cgroup the runtime is started in, when the agent made one. */
  private readonly functionCgroup: FunctionCgroup | undefined;
  private readonly invokeServer: Server;
  private readonly runtimeServer: Server;
  private readonly functionName: string;
  private readonly functionVersion: string;
  private readonly functionArn: string;
  private readonly taskRoot: string;
  private readonly timeoutMs: number;
  private readonly memoryPeakFile: string | undefined;
  private readonly oomFiles: string[];
  private runtimeEnv: NodeJS.ProcessEnv = {};
  private proc: RuntimeProcess | null = null;
  private current: Invocation | null = null;
  /** The runtime's pending long poll on /next. */
  private waiter: ServerResponse | null = null;
  /** The invocation whose log tail is being collected. */
  private tailTarget: Invocation | null = null;
  /** Set while END/REPORT of the previous invocation are being written; the next START waits for it. */
  private reporting: Promise<void> | null = null;
  private oomBaseline = 0;
  private lastMaxMemoryMb = 0;
  private memoryRead: Promise<void> | null = null;
  private closed = false;
  /** How the runtime's init went (served at INIT_STATUS_PATH for the agent). */
  readonly initStatus = new InitStatus();

  constructor(options: EmulatorOptions = {}) {
    const env = options.env ?? process.env;
    this.preBooted = options.preBooted;
    this.opts = {
      invokeHost: options.invokeHost ?? "0.0.0.0",
      invokePort: options.invokePort ?? 8080,
      runtimeApiHost: options.runtimeApiHost ?? "127.0.0.1",
      runtimeApiPort: options.runtimeApiPort ?? 9001,
      command: options.command && options.command.length > 0 ? options.command : undefined,
      bootstrapPaths: options.bootstrapPaths ?? DEFAULT_BOOTSTRAP_PATHS,
      env,
      timeoutSeconds: options.timeoutSeconds ?? numberFrom(env.AWS_LAMBDA_FUNCTION_TIMEOUT, 3),
      memorySizeMb: options.memorySizeMb ?? numberFrom(env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE, 128),
      startRuntimeAtStart: options.startRuntimeAtStart ?? true,
      log: options.log ?? ((chunk) => void process.stdout.write(chunk)),
      memorySource: options.memorySource ?? "auto",
    };
    this.functionName = env.AWS_LAMBDA_FUNCTION_NAME || "function";
    this.functionVersion = env.AWS_LAMBDA_FUNCTION_VERSION || "$LATEST";
    const region = env.AWS_REGION || env.AWS_DEFAULT_REGION || "us-east-1";
    this.functionArn =
      env.ESB_FUNCTION_ARN ||
      `arn:aws:lambda:${region}:${env.ESB_ACCOUNT_ID || "000000000000"}:function:${this.functionName}`;
    this.taskRoot = env.LAMBDA_TASK_ROOT || "/var/task";
    this.timeoutMs = Math.round(this.opts.timeoutSeconds * 1000);
    this.functionCgroup = functionCgroupFromEnv(env);
    const fn = this.functionCgroup;
    this.memoryPeakFile =
      this.opts.memorySource === "process" ? undefined : (fn?.peakFile ?? findCgroupMemoryPeak());
    this.oomFiles = fn?.oomFile ? [fn.oomFile] : findOomCounters();
    this.invokeServer = createServer((req, res) => this.onInvokeRequest(req, res));
    this.invokeServer.keepAliveTimeout = 65_000;
    this.invokeServer.requestTimeout = 0;
    this.runtimeServer = createServer((req, res) => this.onRuntimeRequest(req, res));
    // The runtime keeps one connection open for its whole life and long-polls /next.
    this.runtimeServer.keepAliveTimeout = 0;
    this.runtimeServer.requestTimeout = 0;
    this.runtimeServer.headersTimeout = 0;
  }

  /** Starts both servers and (by default) the runtime process. Resolves with the bound addresses. */
  async start(): Promise<EmulatorAddresses> {
    await listen(this.runtimeServer, this.opts.runtimeApiPort, this.opts.runtimeApiHost);
    const rt = this.runtimeServer.address() as AddressInfo;
    this.runtimeEnv = this.buildRuntimeEnv(`${this.opts.runtimeApiHost}:${rt.port}`);
    this.oomBaseline = await readOomKills(this.oomFiles);
    if (this.opts.startRuntimeAtStart) this.spawnRuntime();
    await listen(this.invokeServer, this.opts.invokePort, this.opts.invokeHost);
    const inv = this.invokeServer.address() as AddressInfo;
    return {
      invoke: { host: this.opts.invokeHost, port: inv.port },
      runtimeApi: { host: this.opts.runtimeApiHost, port: rt.port },
    };
  }

  /** Stops accepting invocations, kills the runtime process group and closes both servers. */
  async close(): Promise<void> {
    this.closed = true;
    const proc = this.proc;
    if (proc && proc.child.exitCode === null && proc.child.signalCode === null) {
      const exited = new Promise<void>((resolve) => proc.child.once("exit", () => resolve()));
      this.kill(proc, false);
      await exited;
    }
    this.waiter?.destroy();
    this.waiter = null;
    this.invokeServer.closeAllConnections();
    this.runtimeServer.closeAllConnections();
    await Promise.all([closeServer(this.invokeServer), closeServer(this.runtimeServer)]);
  }

  private buildRuntimeEnv(runtimeApi: string): NodeJS.ProcessEnv {
    // The launcher parked the function's NODE_OPTIONS & co. so they start this runtime, not the emulator.
    const env = restoreRuntimeOnlyEnv(this.opts.env);
    const defaults: Record<string, string> = {
      AWS_LAMBDA_FUNCTION_NAME: this.functionName,
      AWS_LAMBDA_FUNCTION_VERSION: this.functionVersion,
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(this.opts.memorySizeMb),
      AWS_LAMBDA_FUNCTION_TIMEOUT: String(this.opts.timeoutSeconds),
      AWS_LAMBDA_LOG_GROUP_NAME: `/aws/lambda/${this.functionName}`,
      AWS_LAMBDA_LOG_STREAM_NAME: `${new Date().toISOString().slice(0, 10).replaceAll("-", "/")}/[${this.functionVersion}]${randomBytes(16).toString("hex")}`,
      AWS_REGION: "us-east-1",
      LAMBDA_TASK_ROOT: this.taskRoot,
      LAMBDA_RUNTIME_DIR: "/var/runtime",
      AWS_LAMBDA_INITIALIZATION_TYPE: "on-demand",
      TZ: ":UTC",
      PATH: "/var/lang/bin:/usr/local/bin:/usr/bin:/bin:/opt/bin",
    };
    for (const [k, v] of Object.entries(defaults)) if (!env[k]) env[k] = v;
    if (!env.AWS_DEFAULT_REGION) env.AWS_DEFAULT_REGION = env.AWS_REGION;
    env.AWS_LAMBDA_RUNTIME_API = runtimeApi;
    return env;
  }

  private resolveCommand(): string[] | { error: string } {
    if (this.opts.command) return this.opts.command;
    const found = this.opts.bootstrapPaths.find(isExecutableFile);
    if (found) return [found];
    return { error: `Couldn't find valid bootstrap(s): [${this.opts.bootstrapPaths.join(" ")}]` };
  }

  private spawnRuntime(): void {
    if (this.closed || this.proc) return;
    const command = this.resolveCommand();
    if (!Array.isArray(command)) {
      this.failPending("Runtime.InvalidEntrypoint", command.error);
      return;
    }
    const child = this.adoptPreBooted(command) ?? this.spawnCommand(command);
    const proc: RuntimeProcess = {
      child,
      spawnedAt: process.hrtime.bigint(),
      ready: false,
      initDurationMs: 0,
      initReported: false,
      killedByUs: false,
      restartAfterExit: false,
      exitHandled: false,
      initErrorReported: false,
    };
    this.proc = proc;
    const forward = (chunk: Buffer): void => this.writeLog(chunk);
    child.stdout!.on("data", forward);
    child.stderr!.on("data", forward);
    child.on("error", (err: NodeJS.ErrnoException) => {
      // spawn failed (missing file, not executable): no 'exit' follows
      if (proc.exitHandled || child.pid !== undefined) return;
      proc.exitHandled = true;
      if (this.proc === proc) this.proc = null;
      this.failPending("Runtime.InvalidEntrypoint", `fork/exec ${command[0]}: ${err.code ?? err.message}`);
    });
    child.on("exit", (code, signal) => {
      // Kill what the runtime left behind, so its pipes close and 'close' follows promptly.
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {
          // group already gone
        }
      }
      let handled = false;
      const handle = (): void => {
        if (handled) return;
        handled = true;
        clearTimeout(fallback);
        void this.onRuntimeExit(proc, code, signal);
      };
      // 'close' comes after the last output; wait for it (bounded) so crash output lands before END.
      const fallback = setTimeout(handle, 200);
      child.once("close", handle);
    });
  }

  private spawnCommand(command: string[]): ChildProcess {
    const argv = this.functionCgroup ? commandInCgroup(this.functionCgroup, command) : command;
    return spawn(argv[0], argv.slice(1), {
      cwd: existsSync(this.taskRoot) ? this.taskRoot : undefined,
      env: this.runtimeEnv,
      stdio: ["ignore", "pipe", "pipe"],
      // Own process group, so a timeout kills the runtime and everything it started.
      detached: true,
    });
  }

  /** The pre-booted runtime, handed the function's environment, when it fits `command`; else undefined (it is killed). */
  private adoptPreBooted(command: string[]): ChildProcess | undefined {
    const pre = this.preBooted;
    this.preBooted = undefined;
    if (!pre) return undefined;
    if (
      pre.child.exitCode === null &&
      pre.child.signalCode === null &&
      preBootFits(pre, command, this.runtimeEnv)
    ) {
      pre.handOver(this.runtimeEnv);
      return pre.child;
    }
    try {
      process.kill(-pre.child.pid!, "SIGKILL");
    } catch {
      // already gone
    }
    return undefined;
  }

  private kill(proc: RuntimeProcess, restart: boolean): void {
    proc.killedByUs = true;
    proc.restartAfterExit = restart;
    try {
      process.kill(-proc.child.pid!, "SIGKILL");
    } catch {
      proc.child.kill("SIGKILL");
    }
    if (this.waiter) {
      this.waiter.destroy();
      this.waiter = null;
    }
  }

  private async onRuntimeExit(
    proc: RuntimeProcess,
    code: number | null,
    signal: NodeJS.Signals | null,
  ): Promise<void> {
    if (proc.exitHandled) return;
    proc.exitHandled = true;
    if (this.proc === proc) this.proc = null;
    if (this.waiter) {
      this.waiter.destroy();
      this.waiter = null;
    }
    if (this.closed) return;
    if (!proc.ready && !proc.killedByUs && !proc.initErrorReported)
      this.initStatus.failed("Runtime.ExitError", `Runtime exited with error: ${describeExit(code, signal)}`);
    const inv = this.current;
    if (proc.killedByUs) {
      if (proc.restartAfterExit || (inv && !inv.done)) this.spawnRuntime();
      return;
    }
    if (!inv || inv.done || proc.initErrorReported) {
      // Died while idle (or after reporting its init error): start again on the next invocation.
      if (inv && !inv.done) this.spawnRuntime();
      return;
    }
    let errorType = "Runtime.ExitError";
    if (signal === "SIGKILL" && (await readOomKills(this.oomFiles)) > this.oomBaseline) {
      this.oomBaseline = await readOomKills(this.oomFiles);
      errorType = "Runtime.OutOfMemory";
    }
    const message = `RequestId: ${inv.id} Error: Runtime exited with error: ${describeExit(code, signal)}`;
    this.complete(inv, jsonBody({ errorType, errorMessage: message }), true, undefined);
    this.writeLog(`${message}\n${errorType}\n`);
    // A runtime that got as far as serving the invocation is restarted at once; one that died
    // in init is retried by the next invocation (no crash loop while idle).
    if (proc.ready) this.spawnRuntime();
  }

  /** Answers the pending (not yet dispatched) invocation with an init-phase error. */
  private failPending(errorType: string, message: string): void {
    this.initStatus.failed(errorType, message);
    const inv = this.current;
    if (!inv || inv.done || inv.dispatched) return;
    this.complete(
      inv,
      jsonBody({ errorType, errorMessage: `RequestId: ${inv.id} Error: ${message}` }),
      true,
      undefined,
    );
  }

  // ---------------------------------------------------------------- Invoke endpoint

  private onInvokeRequest(req: IncomingMessage, res: ServerResponse): void {
    if (req.method === "GET" && (req.url ?? "").split("?")[0] === INIT_STATUS_PATH) {
      req.resume();
      const waitMs = Math.min(Number(new URL(req.url!, "http://x").searchParams.get("waitMs")) || 0, 30_000);
      void this.initStatus.wait(waitMs).then((state) => {
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(state));
      });
      return;
    }
    if (req.method !== "POST" || !(req.url === INVOKE_PATH || INVOKE_RE.test(req.url ?? ""))) {
      req.resume();
      sendAwsError(
        res,
        404,
        "ResourceNotFoundException",
        `No route for ${req.method} ${req.url}; use POST ${INVOKE_PATH}`,
      );
      return;
    }
    if (this.current || this.closed) {
      req.resume();
      sendAwsError(
        res,
        429,
        "TooManyRequestsException",
        "This execution environment is busy with another invocation (one invocation at a time)",
        "ConcurrentInvocationLimitExceeded",
      );
      return;
    }
    const declared = Number(req.headers["content-length"]);
    if (declared > MAX_REQUEST_BYTES) {
      req.resume();
      req.on("end", () => sendTooLarge(res));
      return;
    }
    const h = req.headers;
    const id =
      (h["x-amz-request-id"] as string) || (h["lambda-runtime-aws-request-id"] as string) || randomUUID();
    let clientContext: string | undefined;
    const rawContext = h["x-amz-client-context"] as string | undefined;
    if (rawContext) {
      clientContext = Buffer.from(rawContext, "base64").toString("utf8");
      try {
        JSON.parse(clientContext);
      } catch {
        req.resume();
        sendAwsError(
          res,
          400,
          "InvalidRequestContentException",
          "Client context must be a valid Base64-encoded JSON object.",
        );
        return;
      }
    }
    const inv: Invocation = {
      id,
      res,
      body: Buffer.alloc(0),
      tail: typeof h["x-amz-log-type"] === "string" && h["x-amz-log-type"].toLowerCase() === "tail",
      runtimeHeaders: {
        "Content-Type": "application/json",
        "Lambda-Runtime-Aws-Request-Id": id,
        "Lambda-Runtime-Deadline-Ms": "0",
        "Lambda-Runtime-Invoked-Function-Arn":
          (h["x-amz-invoked-function-arn"] as string) ||
          (h["lambda-runtime-invoked-function-arn"] as string) ||
          this.functionArn,
        "Lambda-Runtime-Trace-Id":
          (h["x-amzn-trace-id"] as string) || (h["lambda-runtime-trace-id"] as string) || newTraceId(),
      },
      dispatched: false,
      started: false,
      done: false,
      startNs: 0n,
      timer: undefined,
      logChunks: undefined,
      logBytes: 0,
    };
    const clientContextHeader = clientContext ?? (h["lambda-runtime-client-context"] as string | undefined);
    if (clientContextHeader) inv.runtimeHeaders["Lambda-Runtime-Client-Context"] = clientContextHeader;
    const identity =
      (h["x-amz-cognito-identity"] as string) || (h["lambda-runtime-cognito-identity"] as string);
    if (identity) inv.runtimeHeaders["Lambda-Runtime-Cognito-Identity"] = identity;
    if (inv.tail) inv.logChunks = [];
    this.current = inv;
    readBody(req, MAX_REQUEST_BYTES, (body, size) => {
      if (body === null) {
        this.current = null;
        if (size > MAX_REQUEST_BYTES) sendTooLarge(res);
        else res.destroy();
        return;
      }
      inv.body = body;
      // The timer covers the invocation; a runtime still in init gets the AWS init allowance too.
      const ready = this.proc?.ready === true;
      inv.timer = setTimeout(() => this.onTimeout(inv), this.timeoutMs + (ready ? 0 : INIT_TIMEOUT_MS));
      if (!this.proc) this.spawnRuntime();
      this.tryDispatch();
    });
  }

  private tryDispatch(): void {
    const inv = this.current;
    if (!inv || inv.dispatched || inv.done || !this.waiter || inv.timer === undefined) return;
    if (this.reporting) {
      void this.reporting.then(() => this.tryDispatch());
      return;
    }
    const waiter = this.waiter;
    this.waiter = null;
    inv.dispatched = true;
    this.logStart(inv);
    inv.startNs = process.hrtime.bigint();
    if (this.proc?.ready) {
      // Restart the timer from dispatch: the function's own time is what counts.
      clearTimeout(inv.timer);
      inv.timer = setTimeout(() => this.onTimeout(inv), this.timeoutMs);
    }
    inv.runtimeHeaders["Lambda-Runtime-Deadline-Ms"] = String(Date.now() + this.timeoutMs);
    inv.runtimeHeaders["Content-Length"] = String(inv.body.length);
    waiter.writeHead(200, inv.runtimeHeaders);
    waiter.end(inv.body);
  }

  private onTimeout(inv: Invocation): void {
    if (inv.done) return;
    const seconds = (this.timeoutMs / 1000).toFixed(2);
    const message = `${new Date().toISOString()} ${inv.id} Task timed out after ${seconds} seconds`;
    this.complete(
      inv,
      jsonBody({ errorType: "Sandbox.Timedout", errorMessage: message }),
      true,
      `${message}\n`,
    );
    const proc = this.proc;
    if (proc) this.kill(proc, true);
  }

  /** Finishes an invocation: logs END/REPORT and answers the caller (once). */
  private complete(
    inv: Invocation,
    body: Buffer,
    functionError: boolean,
    afterReport: string | undefined,
  ): void {
    if (inv.done) return;
    inv.done = true;
    clearTimeout(inv.timer);
    this.current = null;
    // The event is no longer needed: drop it, so a collection after a large one can free it.
    const moved = inv.body.length + body.length;
    inv.body = Buffer.alloc(0);
    if (!inv.started) this.logStart(inv);
    const durationMs = inv.dispatched ? Number(process.hrtime.bigint() - inv.startNs) / 1e6 : 0;
    const proc = this.proc;
    let initMs: number | undefined;
    if (proc && proc.ready && !proc.initReported) {
      proc.initReported = true;
      initMs = proc.initDurationMs;
    }
    const headers: Record<string, string | number> = {
      "Content-Type": "application/json",
      "Content-Length": body.length,
      "X-Amzn-RequestId": inv.id,
      "X-Amz-Executed-Version": this.functionVersion,
    };
    if (functionError) headers["X-Amz-Function-Error"] = "Unhandled";
    const report = (maxMb: number): void => {
      this.writeLog(`END RequestId: ${inv.id}\n`);
      this.writeLog(
        `REPORT RequestId: ${inv.id}\tDuration: ${durationMs.toFixed(2)} ms\tBilled Duration: ${Math.max(1, Math.ceil(durationMs))} ms\t` +
          `Memory Size: ${this.opts.memorySizeMb} MB\tMax Memory Used: ${maxMb} MB\t` +
          (initMs !== undefined ? `Init Duration: ${initMs.toFixed(2)} ms\t` : "") +
          "\n",
      );
      if (afterReport) this.writeLog(afterReport);
    };
    // One turn of the event loop first: runtime output written before its /response is then
    // read from the pipe and lands before END (and in the tail).
    if (inv.tail) {
      // The tail must hold the REPORT line, so this caller waits for a fresh memory figure.
      const reporting = new Promise<void>((resolve) => {
        setImmediate(() => {
          void this.refreshMaxMemory(proc).then(() => {
            report(this.lastMaxMemoryMb);
            if (this.tailTarget === inv) this.tailTarget = null;
            headers["X-Amz-Log-Result"] = tailOf(inv).toString("base64");
            reply(inv.res, 200, headers, body);
            resolve();
            setImmediate(() => collectAfterLargePayload(moved));
          });
        });
      });
      this.reporting = reporting;
      void reporting.then(() => {
        if (this.reporting === reporting) this.reporting = null;
      });
    } else {
      setImmediate(() => {
        // No file read on the hot path: REPORT uses the figure refreshed in the background
        // after the previous invocation (a high-water mark, so at most one invocation stale).
        report(this.lastMaxMemoryMb);
        reply(inv.res, 200, headers, body);
        void this.refreshMaxMemory(proc);
        setImmediate(() => collectAfterLargePayload(moved));
      });
    }
  }

  private logStart(inv: Invocation): void {
    inv.started = true;
    // The tail starts at START, after the previous invocation's END/REPORT.
    if (inv.tail) this.tailTarget = inv;
    this.writeLog(`START RequestId: ${inv.id} Version: ${this.functionVersion}\n`);
  }

  /** Re-reads the memory high-water mark (cgroup, else the runtime's VmHWM) into lastMaxMemoryMb; one read at a time. */
  private refreshMaxMemory(proc: RuntimeProcess | null): Promise<void> {
    if (this.memoryRead) return this.memoryRead;
    const read = (async () => {
      try {
        if (this.memoryPeakFile) {
          this.lastMaxMemoryMb = Math.ceil(Number(await readFile(this.memoryPeakFile, "utf8")) / 1048576);
        } else if (proc?.child.pid !== undefined && proc.child.exitCode === null) {
          const m = /VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${proc.child.pid}/status`, "utf8"));
          if (m) this.lastMaxMemoryMb = Math.max(this.lastMaxMemoryMb, Math.ceil(Number(m[1]) / 1024));
        }
      } catch {
        // keep the last figure (the process may just have exited)
      }
    })();
    this.memoryRead = read;
    void read.then(() => {
      if (this.memoryRead === read) this.memoryRead = null;
    });
    return read;
  }

  private writeLog(chunk: string | Buffer): void {
    this.opts.log(chunk);
    const inv = this.tailTarget;
    if (inv?.logChunks) {
      const buf = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
      inv.logChunks.push(buf);
      inv.logBytes += buf.length;
      // Bound the memory of chatty functions: keep only what the tail can show.
      if (inv.logBytes > 16 * LOG_TAIL_BYTES) {
        const kept = tailOf(inv);
        inv.logChunks = [kept];
        inv.logBytes = kept.length;
      }
    }
  }

  // ---------------------------------------------------------------- Runtime API

  private onRuntimeRequest(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? "";
    if (!url.startsWith(RUNTIME_PREFIX)) {
      req.resume();
      return runtimeReply(res, 404, { errorType: "NotFound", errorMessage: `Unknown path ${url}` });
    }
    const path = url.slice(RUNTIME_PREFIX.length);
    if (path === "invocation/next" && req.method === "GET") return this.onNext(req, res);
    if (path === "init/error" && req.method === "POST") return this.onInitError(req, res);
    const m = /^invocation\/([^/]+)\/(response|error)$/.exec(path);
    if (m && req.method === "POST")
      return this.onResult(decodeURIComponent(m[1]), m[2] === "error", req, res);
    req.resume();
    runtimeReply(res, 404, { errorType: "NotFound", errorMessage: `Unknown path ${req.method} ${url}` });
  }

  private onNext(req: IncomingMessage, res: ServerResponse): void {
    req.resume();
    const proc = this.proc;
    if (proc && !proc.ready) {
      proc.ready = true;
      this.initStatus.ready();
      proc.initDurationMs = Number(process.hrtime.bigint() - proc.spawnedAt) / 1e6;
      void this.refreshMaxMemory(proc);
    }
    const inv = this.current;
    if (inv && inv.dispatched && !inv.done) {
      runtimeReply(res, 403, {
        errorType: "InvalidStateTransition",
        errorMessage: `Invocation ${inv.id} has no response yet; post /response or /error before asking for the next event`,
      });
      return;
    }
    if (this.waiter) this.waiter.destroy();
    this.waiter = res;
    res.on("close", () => {
      if (this.waiter === res) this.waiter = null;
    });
    this.tryDispatch();
  }

  private onResult(id: string, isError: boolean, req: IncomingMessage, res: ServerResponse): void {
    const inv = this.current;
    if (!inv || inv.id !== id || !inv.dispatched || inv.done) {
      req.resume();
      runtimeReply(res, 400, { errorType: "InvalidRequestID", errorMessage: `Invalid request ID: ${id}` });
      return;
    }
    const errorType = req.headers["lambda-runtime-function-error-type"] as string | undefined;
    readBody(req, MAX_RESPONSE_BYTES, (body, size) => {
      if (inv.done) {
        runtimeReply(res, 400, { errorType: "InvalidRequestID", errorMessage: `Invalid request ID: ${id}` });
        return;
      }
      if (body === null) {
        if (size < 0) return;
        runtimeReply(res, 413, {
          errorType: "RequestEntityTooLarge",
          errorMessage: `Exceeded maximum allowed payload size (${MAX_RESPONSE_BYTES} bytes).`,
        });
        this.complete(
          inv,
          jsonBody({
            errorType: "Function.ResponseSizeTooLarge",
            errorMessage: `Response payload size exceeded maximum allowed payload size (${MAX_RESPONSE_BYTES} bytes).`,
          }),
          true,
          undefined,
        );
        return;
      }
      runtimeReply(res, 202, { status: "OK" });
      if (isError) this.complete(inv, errorBody(body, errorType), true, undefined);
      else this.complete(inv, body, false, undefined);
    });
  }

  private onInitError(req: IncomingMessage, res: ServerResponse): void {
    const proc = this.proc;
    const errorType = req.headers["lambda-runtime-function-error-type"] as string | undefined;
    readBody(req, MAX_RESPONSE_BYTES, (body) => {
      runtimeReply(res, 202, { status: "OK" });
      if (!proc || proc.ready) return;
      proc.initErrorReported = true;
      this.initStatus.failed(errorType ?? "Runtime.Unknown", initErrorMessage(body));
      const inv = this.current;
      if (inv && !inv.done && !inv.dispatched)
        this.complete(inv, errorBody(body ?? Buffer.alloc(0), errorType), true, undefined);
      // The runtime is of no further use; the next invocation starts a fresh one (AWS retries init).
      this.kill(proc, false);
    });
  }
}

function errorBody(body: Buffer, errorType: string | undefined): Buffer {
  if (body.length > 0) {
    try {
      JSON.parse(body.toString("utf8"));
      return body;
    } catch {
      // not JSON: wrap it below
    }
  }
  const shaped: FunctionErrorBody = {
    errorType: errorType || "Runtime.Unknown",
    errorMessage: body.length > 0 ? body.toString("utf8") : "Unknown application error occurred",
  };
  return jsonBody(shaped);
}

function tailOf(inv: Invocation): Buffer {
  const all = Buffer.concat(inv.logChunks ?? [], inv.logBytes);
  return all.length > LOG_TAIL_BYTES ? all.subarray(all.length - LOG_TAIL_BYTES) : all;
}

function newTraceId(): string {
  const hex = randomBytes(20).toString("hex");
  const epoch = Math.floor(Date.now() / 1000).toString(16);
  return `Root=1-${epoch}-${hex.slice(0, 24)};Parent=${hex.slice(24, 40)};Sampled=0`;
}

function reply(
  res: ServerResponse,
  status: number,
  headers: Record<string, string | number>,
  body: Buffer,
): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, headers);
  res.end(body);
}

function runtimeReply(res: ServerResponse, status: number, value: unknown): void {
  reply(res, status, { "Content-Type": "application/json" }, jsonBody(value));
}

/** AWS service error shape: `x-amzn-ErrorType` header plus `{Type, message}` (and errorType/errorMessage for plain clients). */
function sendAwsError(
  res: ServerResponse,
  status: number,
  type: string,
  message: string,
  reason?: string,
): void {
  const body: Record<string, string> = { Type: "User", message, errorType: type, errorMessage: message };
  if (reason) body.Reason = reason;
  const buf = jsonBody(body);
  reply(
    res,
    status,
    { "Content-Type": "application/json", "Content-Length": buf.length, "x-amzn-ErrorType": type },
    buf,
  );
}

function sendTooLarge(res: ServerResponse): void {
  sendAwsError(
    res,
    413,
    "RequestTooLargeException",
    `Request must be smaller than ${MAX_REQUEST_BYTES} bytes for the InvokeFunction operation`,
  );
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** The errorMessage of an init error body (`{errorMessage, errorType}`), or the body's text. */
function initErrorMessage(body: Buffer | null | undefined): string {
  const text = body?.toString("utf8") ?? "";
  try {
    const parsed = JSON.parse(text) as { errorMessage?: unknown };
    if (typeof parsed.errorMessage === "string") return parsed.errorMessage;
  } catch {
    // not JSON: the text itself
  }
  return text.slice(0, 1000);
}
