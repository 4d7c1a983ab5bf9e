import type { LambdaFunction, Logger } from "@esb/common";
import { LAMBDA_FUNCTION_DEFAULTS } from "@esb/common";
import type { FunctionKey } from "./function-name.js";
import type { StartKindLabel } from "./gateway-metrics.js";
import { InvocationOutcome, type WorkerBroker, type WorkerLease } from "./worker-broker.js";
import { WorkerUnreachableError, type WorkerHttpClient } from "./worker-http-client.js";

/** One invocation to run on a worker. */
export interface InvocationRequest {
  key: FunctionKey;
  fn: LambdaFunction;
  /** The event (JSON text). */
  payload: Buffer;
  requestId: string;
  /** `X-Amz-Client-Context` as received (base64 JSON). */
  clientContext?: string;
  /** Ask the worker for the log tail (`X-Amz-Log-Result`). */
  logTail?: boolean;
}

/** What the function returned. */
export interface InvocationResult {
  payload: Buffer;
  /** `Unhandled` when the function failed (payload is `{errorMessage, errorType, stackTrace}`). */
  functionError?: string;
  /** Base64 log tail, when asked for and provided by the worker. */
  logResult?: string;
  startKind: StartKindLabel;
  outcome: InvocationOutcome;
  /** errorType of a function error, for logs and metrics. */
  errorType?: string;
}

/** Extra time past the function timeout before the gateway stops waiting for a worker. */
const TIMEOUT_GRACE_MS = 2000;
/**
 * Init budget (AWS's 10 s init limit): a cold worker, or one whose runtime was
 * restarted after a crash or timeout, first initialises, and the worker's
 * emulator does not count that against the function timeout. The gateway's
 * wait is only a backstop for a worker that stops answering at all.
 */
const INIT_BUDGET_MS = 10_000;

/**
 * Runs one invocation: acquires a worker from {@link WorkerBroker}, POSTs the
 * event to it, and releases it in the background with the outcome. A worker
 * that drops the connection yields an Unhandled `Runtime.ExitError` result (and
 * WORKER_FAILED for the agent); one that stays silent past the function timeout
 * yields AWS's "Task timed out after N.NN seconds" (and TIMEOUT). Acquisition
 * failures propagate as {@link LambdaApiError}. Every acquired worker is released,
 * whatever happens: an unexpected error propagates after releasing the worker as
 * WORKER_FAILED (what it did is unknown, so it is replaced).
 */
export class FunctionInvoker {
  constructor(
    private readonly broker: WorkerBroker,
    private readonly workers: WorkerHttpClient,
    private readonly logger: Logger,
  ) {}

  /**
   * Runs `req` on a worker and returns what the function returned (function
   * errors and worker failures included, as results). Throws
   * {@link LambdaApiError} when no worker can be had; any other error is
   * unexpected and propagates, the worker having been released first.
   */
  async invoke(req: InvocationRequest): Promise<InvocationResult> {
    // A caller waits for a busy worker at most the function timeout (plus the broker's grace).
    const lease = await this.broker.acquire(req.key, { timeoutSeconds: req.fn.spec?.timeout });
    // What the agent is told when the invocation ends by an unexpected error.
    let outcome = InvocationOutcome.WORKER_FAILED;
    try {
      const result = await this.runOn(lease, req);
      outcome = result.outcome;
      return result;
    } finally {
      this.broker.release(lease, outcome);
      if (outcome === InvocationOutcome.WORKER_FAILED) this.workers.forget(lease.address);
    }
  }

  /** POSTs the event to the leased worker and maps its answer (or silence) onto a result. */
  private async runOn(lease: WorkerLease, req: InvocationRequest): Promise<InvocationResult> {
    const timeoutSeconds = req.fn.spec.timeout ?? LAMBDA_FUNCTION_DEFAULTS.timeout;
    const headers: Record<string, string> = {
      "content-type": "application/json",
      "x-amz-request-id": req.requestId,
    };
    if (req.clientContext) headers["x-amz-client-context"] = req.clientContext;
    if (req.logTail) headers["x-amz-log-type"] = "Tail";
    let result: InvocationResult;
    try {
      const res = await this.workers.invoke(
        lease.address,
        req.payload,
        headers,
        timeoutSeconds * 1000 + INIT_BUDGET_MS + TIMEOUT_GRACE_MS,
      );
      const functionError = header(res.headers["x-amz-function-error"]);
      const logResult = header(res.headers["x-amz-log-result"]);
      if (res.statusCode >= 200 && res.statusCode < 300) {
        const errorType = functionError ? errorTypeOf(res.body) : undefined;
        result = {
          payload: res.body,
          functionError,
          logResult,
          startKind: lease.startKind,
          outcome: !functionError
            ? InvocationOutcome.SUCCESS
            : isTimeout(res.body)
              ? InvocationOutcome.TIMEOUT
              : InvocationOutcome.FUNCTION_ERROR,
          errorType,
        };
      } else {
        // The worker answered outside its contract: report it as a runtime failure and replace it.
        this.logger.warn(
          { worker: lease.address, status: res.statusCode, requestId: req.requestId },
          "worker answered with an unexpected status",
        );
        result = {
          payload: errorPayload(
            "Runtime.InvalidResponse",
            `RequestId: ${req.requestId} Error: worker answered HTTP ${res.statusCode}: ${res.body.toString("utf8").slice(0, 200)}`,
          ),
          functionError: "Unhandled",
          logResult,
          startKind: lease.startKind,
          outcome: InvocationOutcome.WORKER_FAILED,
          errorType: "Runtime.InvalidResponse",
        };
      }
    } catch (err) {
      if (!(err instanceof WorkerUnreachableError)) throw err;
      this.logger.warn(
        { worker: lease.address, workerId: lease.workerId, requestId: req.requestId, err: err.message },
        "worker failed during the invocation",
      );
      result = err.timedOut
        ? {
            payload: Buffer.from(
              JSON.stringify({
                errorMessage: `${new Date().toISOString()} ${req.requestId} Task timed out after ${timeoutSeconds.toFixed(2)} seconds`,
              }),
            ),
            functionError: "Unhandled",
            startKind: lease.startKind,
            outcome: InvocationOutcome.TIMEOUT,
            errorType: "Sandbox.Timedout",
          }
        : {
            payload: errorPayload(
              "Runtime.ExitError",
              `RequestId: ${req.requestId} Error: Runtime exited without providing a reason`,
            ),
            functionError: "Unhandled",
            startKind: lease.startKind,
            outcome: InvocationOutcome.WORKER_FAILED,
            errorType: "Runtime.ExitError",
          };
    }
    return result;
  }
}

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function errorPayload(errorType: string, errorMessage: string): Buffer {
  return Buffer.from(JSON.stringify({ errorType, errorMessage, stackTrace: [] }));
}

function errorTypeOf(body: Buffer): string {
  try {
    const parsed = JSON.parse(body.toString("utf8")) as { errorType?: unknown };
    return typeof parsed.errorType === "string" ? parsed.errorType : "Unhandled";
  } catch {
    return "Unhandled";
  }
}

function isTimeout(body: Buffer): boolean {
  return body.length < 1024 && body.toString("utf8").includes("Task timed out after");
}
