import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** How a worker was obtained for an invocation (label `start`). */
export type StartKindLabel = "cold" | "warm" | "thawed" | "none";

/**
 * The gateway's Prometheus metrics, in their own registry (served on `/metrics`;
 * with several gateway processes, summed over them, see joinGatewayCluster).
 * Labels: `function` is `namespace/name`; `type` is the invocation type
 * (RequestResponse, Event, DryRun, Http); `status` is ok, function_error,
 * throttled, not_found, client_error or service_error.
 */
export class GatewayMetrics {
  readonly registry = new Registry();
  readonly invocations: Counter<"function" | "type" | "status">;
  readonly errors: Counter<"function" | "type" | "error">;
  readonly throttles: Counter<"function">;
  readonly duration: Histogram<"function" | "type" | "start">;
  readonly eventQueueDepth: Gauge;
  readonly eventRetries: Counter<"function">;
  readonly eventsDropped: Counter<"function">;
  readonly routeConflicts: Gauge;
  readonly agents: Gauge;
  /** Requests refused by SigV4 verification, by API (`invoke`, `http`) and reason (a fixed set: see sigv4-verifier's AuthFailureReason). */
  readonly authFailures: Counter<"api" | "reason">;

  constructor(collectDefaults = false) {
    if (collectDefaults) collectDefaultMetrics({ register: this.registry, prefix: "esb_gateway_" });
    const registers = [this.registry];
    this.invocations = new Counter({
      name: "esb_gateway_invocations_total",
      help: "Invocations by function, invocation type and outcome",
      labelNames: ["function", "type", "status"],
      registers,
    });
    this.errors = new Counter({
      name: "esb_gateway_errors_total",
      help: "Failed invocations by error type (function errors, AWS error types)",
      labelNames: ["function", "type", "error"],
      registers,
    });
    this.throttles = new Counter({
      name: "esb_gateway_throttles_total",
      help: "Invocations refused with TooManyRequestsException",
      labelNames: ["function"],
      registers,
    });
    this.duration = new Histogram({
      name: "esb_gateway_invocation_duration_seconds",
      help: "Time from request to response by how the worker was obtained",
      labelNames: ["function", "type", "start"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900],
      registers,
    });
    this.eventQueueDepth = new Gauge({
      name: "esb_gateway_event_queue_depth",
      help: "Event invocations waiting to run",
      registers,
    });
    this.eventRetries = new Counter({
      name: "esb_gateway_event_retries_total",
      help: "Retries of failed Event invocations",
      labelNames: ["function"],
      registers,
    });
    this.eventsDropped = new Counter({
      name: "esb_gateway_events_dropped_total",
      help: "Event invocations that failed after all retries",
      labelNames: ["function"],
      registers,
    });
    this.routeConflicts = new Gauge({
      name: "esb_gateway_route_conflicts",
      help: "HTTP routes declared by more than one function (only the first serves them)",
      // Every process of a multi-process gateway sees the same routes and agents: not summed.
      aggregator: "max",
      registers,
    });
    this.agents = new Gauge({
      name: "esb_gateway_agents",
      help: "Agents known to the gateway",
      aggregator: "max",
      registers,
    });
    this.authFailures = new Counter({
      name: "esb_gateway_auth_failures_total",
      help: "Requests refused by SigV4 verification or namespace scoping, by API (invoke, http) and reason (missing, incomplete, unknown_key, bad_signature, expired, access_denied)",
      labelNames: ["api", "reason"],
      registers,
    });
  }
}
