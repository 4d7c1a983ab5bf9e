import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { NodeAgent } from "./node-agent.js";
import type { ResyncReport } from "./agent-resync.js";
import type { PoolEvent } from "./pool/worker-pool.js";
import type { StartPhase } from "./runtime/start-phases.js";
import type { SandboxEvent } from "./pool/sandbox-pool.js";
import type { WorkerLogLine } from "./runtime/runtime.js";

/**
 * The agent's Prometheus metrics, in a registry of their own: cold starts,
 * thaws, pauses, worker removals (and failed removals), acquire latency by
 * start kind, resync passes and their repairs, and pool sizes by state (read
 * from the agent at scrape time).
 */
export class AgentMetrics {
  readonly registry = new Registry();
  private readonly coldStarts: Counter<"function" | "result">;
  private readonly coldStartSeconds: Histogram<"function">;
  private readonly thaws: Counter<"function">;
  private readonly thawSeconds: Histogram<never>;
  private readonly pauses: Counter<"function">;
  private readonly removals: Counter<"function" | "failed">;
  private readonly acquireSeconds: Histogram<"start_kind">;
  private readonly removalFailures: Counter<never>;
  private readonly resyncs: Counter<"result">;
  private readonly resyncRepairs: Counter<"kind">;
  private readonly startPhaseSeconds: Histogram<"phase">;
  private readonly coldStartsFromSandbox: Counter<"function">;
  private readonly sandboxTakes: Counter<"result">;
  private readonly sandboxStarts: Counter<"result">;
  private readonly initSeconds: Histogram<never>;

  /** @param agent read at scrape time for pool sizes; may be set later with {@link attach}. */
  constructor(private agent?: NodeAgent) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: "esb_agent_" });
    this.coldStarts = new Counter({
      name: "esb_agent_cold_starts_total",
      help: "Workers started (result: ok or failed).",
      labelNames: ["function", "result"],
      registers,
    });
    this.coldStartSeconds = new Histogram({
      name: "esb_agent_cold_start_seconds",
      help: "Time to create and start a worker.",
      labelNames: ["function"],
      buckets: [0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.thaws = new Counter({
      name: "esb_agent_thaws_total",
      help: "Paused workers resumed for an invocation.",
      labelNames: ["function"],
      registers,
    });
    this.thawSeconds = new Histogram({
      name: "esb_agent_thaw_seconds",
      help: "Time to resume a paused worker (the agent's part: pool and freezer write).",
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5],
      registers,
    });
    this.pauses = new Counter({
      name: "esb_agent_pauses_total",
      help: "Idle workers paused (frozen).",
      labelNames: ["function"],
      registers,
    });
    this.removals = new Counter({
      name: "esb_agent_workers_removed_total",
      help: "Workers destroyed (failed: crashed, timed out, lease lost).",
      labelNames: ["function", "failed"],
      registers,
    });
    this.acquireSeconds = new Histogram({
      name: "esb_agent_acquire_seconds",
      help: "AcquireWorker latency by how the worker was obtained.",
      labelNames: ["start_kind"],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5],
      registers,
    });
    this.removalFailures = new Counter({
      name: "esb_agent_worker_removal_failures_total",
      help: "Worker removal steps that failed for another reason than 'already gone' (the resync retries them).",
      registers,
    });
    this.resyncs = new Counter({
      name: "esb_agent_resyncs_total",
      help: "Resync passes against containerd and CNI (result: ok, or failed when the runtime could not be listed).",
      labelNames: ["result"],
      registers,
    });
    this.resyncRepairs = new Counter({
      name: "esb_agent_resync_repairs_total",
      help: "What resync passes repaired (kind: orphan_worker, lost_worker, network_allocation) or failed to (failed).",
      labelNames: ["kind"],
      registers,
    });
    this.startPhaseSeconds = new Histogram({
      name: "esb_agent_worker_start_phase_seconds",
      help: "Time of each step of a worker start by the runtime (phase: network, snapshot, task-create, task-start, ...).",
      labelNames: ["phase"],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
      registers,
    });
    this.coldStartsFromSandbox = new Counter({
      name: "esb_agent_cold_starts_from_sandbox_total",
      help: "Cold starts served by specialising a ready generic sandbox (a subset of esb_agent_cold_starts_total).",
      labelNames: ["function"],
      registers,
    });
    this.sandboxTakes = new Counter({
      name: "esb_agent_sandbox_takes_total",
      help: "Cold starts that asked for a generic sandbox (result: taken, or missed when none was ready).",
      labelNames: ["result"],
      registers,
    });
    this.sandboxStarts = new Counter({
      name: "esb_agent_sandbox_starts_total",
      help: "Generic sandboxes started ahead of demand (result: ok or failed).",
      labelNames: ["result"],
      registers,
    });
    this.initSeconds = new Histogram({
      name: "esb_agent_init_duration_seconds",
      help: "Init Duration of workers' first invocations, as their REPORT lines give it (runtime start, or sandbox hand-over, to the runtime's first /next).",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5, 10],
      registers,
    });
    const sandboxes: Gauge<"state"> = new Gauge({
      name: "esb_agent_sandboxes",
      help: "Generic sandboxes not yet taken, by state (ready, starting).",
      labelNames: ["state"],
      registers,
      collect: () => {
        sandboxes.reset();
        let ready = 0;
        let starting = 0;
        for (const c of this.agent?.sandboxes?.counts() ?? []) {
          ready += c.ready;
          starting += c.starting;
        }
        sandboxes.set({ state: "ready" }, ready);
        sandboxes.set({ state: "starting" }, starting);
      },
    });
    const pools: Gauge<"function" | "state"> = new Gauge({
      name: "esb_agent_pool_workers",
      help: "Workers per function and state.",
      labelNames: ["function", "state"],
      registers,
      collect: () => {
        pools.reset();
        for (const p of this.agent?.pools() ?? []) {
          const fn = `${p.ref.namespace}/${p.ref.name}`;
          for (const [state, n] of Object.entries(p.counts)) pools.set({ function: fn, state }, n);
        }
      },
    });
  }

  /** Sets the agent whose pools are reported. */
  attach(agent: NodeAgent): void {
    this.agent = agent;
  }

  /** Records one pool event; pass as the agent's `onPoolEvent`. */
  record = (e: PoolEvent): void => {
    switch (e.type) {
      case "acquired":
        this.acquireSeconds.observe({ start_kind: e.kind }, e.durationMs / 1000);
        break;
      case "cold-start":
        this.coldStarts.inc({ function: e.function, result: e.ok ? "ok" : "failed" });
        if (e.ok && e.fromSandbox) this.coldStartsFromSandbox.inc({ function: e.function });
        if (e.ok) this.coldStartSeconds.observe({ function: e.function }, e.durationMs / 1000);
        break;
      case "thawed":
        this.thaws.inc({ function: e.function });
        this.thawSeconds.observe(e.durationMs / 1000);
        break;
      case "paused":
        this.pauses.inc({ function: e.function });
        break;
      case "removed":
        this.removals.inc({ function: e.function, failed: String(e.failed) });
        break;
    }
  };

  /** Records one sandbox pool event; pass as the agent's `onSandboxEvent`. */
  recordSandbox = (e: SandboxEvent): void => {
    if (e.type === "taken") this.sandboxTakes.inc({ result: "taken" });
    else if (e.type === "missed") this.sandboxTakes.inc({ result: "missed" });
    else if (e.type === "started") this.sandboxStarts.inc({ result: e.ok ? "ok" : "failed" });
  };

  /** Observes the `Init Duration` of a worker's REPORT line; pass to the runtime's `onWorkerLog`. */
  recordWorkerLog = (l: WorkerLogLine): void => {
    if (!l.line.startsWith("REPORT ")) return;
    const m = /\tInit Duration: ([\d.]+) ms/.exec(l.line);
    if (m) this.initSeconds.observe(Number(m[1]) / 1000);
  };

  /** Records the steps of one worker start; pass as the containerd runtime's `onStartPhases`. */
  recordStartPhases = (_workerId: string, phases: StartPhase[]): void => {
    for (const p of phases) this.startPhaseSeconds.observe({ phase: p.name }, p.ms / 1000);
  };

  /** Counts one failed worker removal; pass as the containerd runtime's `onRemovalError`. */
  recordRemovalFailure = (): void => {
    this.removalFailures.inc();
  };

  /** Counts one finished resync pass and its repairs; pass as the resync's `onReport`. */
  recordResync = (r: ResyncReport): void => {
    this.resyncs.inc({ result: "ok" });
    this.resyncRepairs.inc({ kind: "orphan_worker" }, r.orphanWorkersRemoved);
    this.resyncRepairs.inc({ kind: "lost_worker" }, r.lostWorkersReplaced);
    this.resyncRepairs.inc({ kind: "network_allocation" }, r.networkAllocationsFreed);
    this.resyncRepairs.inc({ kind: "failed" }, r.failedRepairs);
  };

  /** Counts one resync pass that could not run; pass as the resync's `onFailure`. */
  recordResyncFailure = (): void => {
    this.resyncs.inc({ result: "failed" });
  };

  /** The exposition text for /metrics. */
  async text(): Promise<string> {
    return this.registry.metrics();
  }
}
