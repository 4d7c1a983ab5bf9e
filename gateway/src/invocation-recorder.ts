import type { Logger } from "@esb/common";
import type { GatewayMetrics, StartKindLabel } from "./gateway-metrics.js";
import { LAMBDA_ERROR_STATUS } from "./lambda-api-error.js";

/** Outcome label of an invocation in logs and metrics. */
export type InvocationStatus =
  "ok" | "function_error" | "throttled" | "not_found" | "client_error" | "service_error";

/** One finished invocation. */
export interface InvocationRecord {
  requestId: string;
  /** `namespace/name`, or the name as given when it did not resolve. */
  function: string;
  /** RequestResponse, Event, DryRun or Http. */
  type: string;
  status: InvocationStatus;
  startKind: StartKindLabel;
  durationMs: number;
  /** Function error type or AWS error type, when not ok. */
  error?: string;
  /** Attempt number for Event invocations (1 = first try). */
  attempt?: number;
}

/**
 * Writes one structured log line and the metrics for each finished invocation,
 * so every entry point (Invoke API, Event queue, HTTP routes) reports alike.
 */
export class InvocationRecorder {
  constructor(
    private readonly metrics: GatewayMetrics,
    private readonly logger: Logger,
  ) {}

  record(r: InvocationRecord): void {
    // Labels are bounded (callers choose names, functions choose error types); logs keep both as given.
    const fn = functionLabel(r);
    this.metrics.invocations.inc({ function: fn, type: r.type, status: r.status });
    if (r.status !== "ok") this.metrics.errors.inc({ function: fn, type: r.type, error: errorLabel(r) });
    if (r.status === "throttled") this.metrics.throttles.inc({ function: fn });
    if (r.startKind !== "none") {
      this.metrics.duration.observe({ function: fn, type: r.type, start: r.startKind }, r.durationMs / 1000);
    }
    const line = {
      requestId: r.requestId,
      function: r.function,
      type: r.type,
      status: r.status,
      start: r.startKind,
      durationMs: Math.round(r.durationMs * 100) / 100,
      ...(r.error ? { error: r.error } : {}),
      ...(r.attempt ? { attempt: r.attempt } : {}),
    };
    if (r.status === "service_error") this.logger.error(line, "invocation");
    else this.logger.info(line, "invocation");
  }
}

/** The `function` label of a name that resolved to no LambdaFunction: one series for all of them. */
export const UNRESOLVED_FUNCTION_LABEL = "(unresolved)";
/** The `error` label of an error type a function chose itself (its `errorType`). */
export const FUNCTION_ERROR_LABEL = "Function";

/** `namespace/name` of a resolved LambdaFunction (Kubernetes name rules). */
const FUNCTION_KEY = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\/[A-Za-z0-9][-A-Za-z0-9_.]{0,252}$/;

/** Error types the platform itself reports: AWS's API errors and the runtime's and sandbox's own. */
const PLATFORM_ERRORS = new Set<string>([
  ...Object.keys(LAMBDA_ERROR_STATUS),
  "Runtime.ExitError",
  "Runtime.OutOfMemory",
  "Runtime.HandlerNotFound",
  "Runtime.ImportModuleError",
  "Runtime.InvalidEntrypoint",
  "Runtime.InvalidResponse",
  "Runtime.MalformedHandlerName",
  "Runtime.PlatformError",
  "Runtime.SerializationError",
  "Runtime.ShellInit",
  "Runtime.UnhandledPromiseRejection",
  "Runtime.Unknown",
  "Runtime.UserCodeSyntaxError",
  "Sandbox.Timedout",
]);

function functionLabel(r: InvocationRecord): string {
  return r.status === "not_found" || !FUNCTION_KEY.test(r.function) ? UNRESOLVED_FUNCTION_LABEL : r.function;
}

function errorLabel(r: InvocationRecord): string {
  if (r.error === undefined) return r.status;
  return PLATFORM_ERRORS.has(r.error) ? r.error : FUNCTION_ERROR_LABEL;
}
