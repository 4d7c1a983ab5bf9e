import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** Prometheus metrics of the controller, in their own registry (served on /metrics). */
export class ControllerMetrics {
  readonly registry = new Registry();
  readonly reconciles: Counter<"result">;
  readonly reconcileSeconds: Histogram;
  readonly leader: Gauge;
  readonly agents: Gauge;
  readonly functions: Gauge;
  readonly queueDepth: Gauge;
  readonly orphanedWorkersDestroyed: Counter;

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics) collectDefaultMetrics({ register: this.registry });
    this.reconciles = new Counter({
      name: "esb_controller_reconcile_total",
      help: "Reconciles by result",
      labelNames: ["result"],
      registers: [this.registry],
    });
    this.reconcileSeconds = new Histogram({
      name: "esb_controller_reconcile_duration_seconds",
      help: "Time per reconcile",
      buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
      registers: [this.registry],
    });
    this.leader = new Gauge({
      name: "esb_controller_leader",
      help: "1 while this replica is the leader",
      registers: [this.registry],
    });
    this.agents = new Gauge({
      name: "esb_controller_agents",
      help: "Agents available",
      registers: [this.registry],
    });
    this.functions = new Gauge({
      name: "esb_controller_functions",
      help: "LambdaFunctions known",
      registers: [this.registry],
    });
    this.queueDepth = new Gauge({
      name: "esb_controller_queue_depth",
      help: "Keys waiting in the work queue",
      registers: [this.registry],
    });
    this.orphanedWorkersDestroyed = new Counter({
      name: "esb_controller_orphaned_workers_destroyed_total",
      help: "Workers destroyed because their function no longer exists",
      registers: [this.registry],
    });
  }
}
