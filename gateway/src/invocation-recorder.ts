import type { Logger } from "@esb/common";
import type { GatewayMetrics, StartKindLabel } from "./gateway-metrics.js";

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
    this.metrics.invocations.inc({ function: r.function, type: r.type, status: r.status });
    if (r.status !== "ok")
      this.metrics.errors.inc({ function: r.function, type: r.type, error: r.error ?? r.status });
    if (r.status === "throttled") this.metrics.throttles.inc({ function: r.function });
    if (r.startKind !== "none") {
      this.metrics.duration.observe(
        { function: r.function, type: r.type, start: r.startKind },
        r.durationMs / 1000,
      );
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
