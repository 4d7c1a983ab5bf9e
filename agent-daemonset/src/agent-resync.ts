import { createLogger, type Logger } from "@esb/common";
import type { WorkerNetwork } from "./network/worker-network.js";
import type { PoolWorkerState } from "./pool/worker-pool.js";
import { WORKER_LABELS, type ListedWorker, type Runtime } from "./runtime/runtime.js";

/** What the resync needs from the node agent (NodeAgent implements it). */
export interface ResyncTarget {
  /** Owner label value of this node's workers. */
  readonly nodeName: string;
  /** Every worker a pool tracks (those of functions being destroyed included), with its pool state. */
  trackedWorkers(): { workerId: string; state: PoolWorkerState }[];
  /**
   * Tells the worker's pool that its task is gone (as an exit event would): the
   * pool removes it and replaces it when it was provisioned. False when no pool
   * knows the worker.
   */
  workerLost(workerId: string, reason: string): boolean;
}

/** What one resync pass repaired. */
export interface ResyncReport {
  /** Containers owned by this node that no pool knew, removed. */
  orphanWorkersRemoved: number;
  /** Pool workers whose task was gone or stopped without an exit event, handed back to their pool. */
  lostWorkersReplaced: number;
  /** Network allocations (CNI result and network namespace) of no container and no worker, freed. */
  networkAllocationsFreed: number;
  /** Repairs that failed (they are tried again on the next pass). */
  failedRepairs: number;
  durationMs: number;
}

/** Options of {@link AgentResync}. */
export interface AgentResyncOptions {
  agent: ResyncTarget;
  /** The runtime the agent's workers run on. */
  runtime: Runtime;
  /** The workers' network, when the agent manages it. */
  network?: WorkerNetwork;
  /** Time between the end of a pass and the start of the next; 0 disables the periodic passes. */
  intervalMs: number;
  logger?: Logger;
  /** Receives each finished pass (metrics). */
  onReport?: (report: ResyncReport) => void;
  /** Receives each pass that could not run (runtime unreachable, listing failed). */
  onFailure?: (err: Error) => void;
}

/** Pool states in which a worker's task must exist and run (or be frozen). */
const SETTLED: ReadonlySet<PoolWorkerState> = new Set(["idle", "busy", "paused"]);

/**
 * Self-healing while the agent runs: every `intervalMs` it compares what the
 * pools believe with what containerd and CNI hold, and repairs the difference.
 * Containers owned by this node that no pool knows are removed (which also
 * retries removals that failed earlier); pool workers whose task is gone or
 * stopped without an exit event (a missed event, an out-of-band kill) are
 * handed back to their pool as crashed, which replaces provisioned ones; CNI
 * allocations that belong to no container and no worker are freed. Each
 * repair is logged; counts go to `onReport`.
 */
export class AgentResync {
  private readonly agent: ResyncTarget;
  private readonly runtime: Runtime;
  private readonly network?: WorkerNetwork;
  private readonly intervalMs: number;
  private readonly log: Logger;
  private readonly onReport: (report: ResyncReport) => void;
  private readonly onFailure: (err: Error) => void;
  private timer?: NodeJS.Timeout;
  private stopped = true;
  /** The pass in progress (passes never overlap). */
  private current: Promise<unknown> = Promise.resolve();

  constructor(opts: AgentResyncOptions) {
    this.agent = opts.agent;
    this.runtime = opts.runtime;
    this.network = opts.network;
    this.intervalMs = opts.intervalMs;
    this.log = opts.logger ?? createLogger("agent-resync");
    this.onReport = opts.onReport ?? (() => undefined);
    this.onFailure = opts.onFailure ?? (() => undefined);
  }

  /** Starts the periodic passes (the first one `intervalMs` from now); no-op when the interval is 0. */
  start(): void {
    if (this.intervalMs <= 0 || !this.stopped) return;
    this.stopped = false;
    this.schedule();
  }

  /** Stops the periodic passes and waits for a pass in progress to finish. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.current.catch(() => undefined);
  }

  /**
   * Runs one pass now (after the one in progress, if any) and returns what it
   * repaired. Throws when the runtime cannot be listed; failed repairs do not throw.
   */
  runOnce(): Promise<ResyncReport> {
    const run = this.current.catch(() => undefined).then(() => this.pass());
    this.current = run;
    return run;
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.runOnce()
        .catch((err: unknown) => {
          this.log.warn({ err: (err as Error).message }, "resync failed; retried on the next pass");
          this.onFailure(err as Error);
        })
        .finally(() => {
          if (!this.stopped) this.schedule();
        });
    }, this.intervalMs);
    // Never the reason the process stays up: the agent's servers are.
    this.timer.unref();
  }

  private async pass(): Promise<ResyncReport> {
    const t0 = Date.now();
    const report: ResyncReport = {
      orphanWorkersRemoved: 0,
      lostWorkersReplaced: 0,
      networkAllocationsFreed: 0,
      failedRepairs: 0,
      durationMs: 0,
    };
    // Taken before the listing: only a worker settled by then must appear in it.
    const settledBefore = new Set(
      this.agent
        .trackedWorkers()
        .filter((w) => SETTLED.has(w.state))
        .map((w) => w.workerId),
    );
    const listed = new Map((await this.runtime.listWorkers()).map((w) => [w.id, w]));
    // Taken after the listing: a pool registers a worker before creating its container, so any
    // listed container that is not tracked now is nobody's.
    const tracked = this.agent.trackedWorkers();
    await this.repairLostWorkers(tracked, settledBefore, listed, report);
    await this.removeOrphans(new Set(tracked.map((w) => w.workerId)), listed, report);
    await this.freeNetworkAllocations(listed, report);
    report.durationMs = Date.now() - t0;
    const repaired =
      report.orphanWorkersRemoved + report.lostWorkersReplaced + report.networkAllocationsFreed;
    if (repaired > 0 || report.failedRepairs > 0) this.log.info(report, "resync repaired the node");
    else this.log.debug(report, "resync found nothing to repair");
    this.onReport(report);
    return report;
  }

  private async repairLostWorkers(
    tracked: { workerId: string; state: PoolWorkerState }[],
    settledBefore: ReadonlySet<string>,
    listed: ReadonlyMap<string, ListedWorker>,
    report: ResyncReport,
  ): Promise<void> {
    for (const w of tracked) {
      if (!SETTLED.has(w.state) || !settledBefore.has(w.workerId)) continue;
      const found = listed.get(w.workerId);
      // "unknown" is a task containerd cannot tell about now (a busy shim): not proof that it is gone.
      if (found && found.status !== "stopped") continue;
      const reason = found
        ? "its task stopped without an exit event (found by resync)"
        : "its container is gone (found by resync)";
      if (this.agent.workerLost(w.workerId, reason)) {
        report.lostWorkersReplaced++;
        this.log.warn({ workerId: w.workerId, state: w.state, reason }, "resync: pool worker lost");
      }
    }
  }

  private async removeOrphans(
    tracked: ReadonlySet<string>,
    listed: ReadonlyMap<string, ListedWorker>,
    report: ResyncReport,
  ): Promise<void> {
    for (const w of listed.values()) {
      if (w.labels[WORKER_LABELS.owner] !== this.agent.nodeName || tracked.has(w.id)) continue;
      try {
        await this.runtime.removeWorker(w.id);
        report.orphanWorkersRemoved++;
        this.log.info(
          { workerId: w.id, status: w.status, function: w.labels[WORKER_LABELS.function] },
          "resync: removed orphaned worker",
        );
      } catch (err) {
        report.failedRepairs++;
        this.log.warn(
          { workerId: w.id, err: (err as Error).message },
          "resync: orphaned worker not removed; retried on the next pass",
        );
      }
    }
  }

  private async freeNetworkAllocations(
    listed: ReadonlyMap<string, ListedWorker>,
    report: ResyncReport,
  ): Promise<void> {
    if (!this.network) return;
    const isWorker = (id: string, containers: ReadonlyMap<string, unknown>) =>
      containers.has(id) || this.agent.trackedWorkers().some((w) => w.workerId === id);
    const candidates = (await this.network.list()).filter((id) => !isWorker(id, listed));
    if (candidates.length === 0) return;
    // Listed again: a worker may have been created (network first) since the first listing.
    // A network is freed only when no container of that id exists any more.
    const now = new Map((await this.runtime.listWorkers()).map((w) => [w.id, w]));
    for (const id of candidates) {
      if (isWorker(id, now)) continue;
      try {
        await this.network.detach(id);
        report.networkAllocationsFreed++;
        this.log.info({ workerId: id }, "resync: freed orphaned network allocation");
      } catch (err) {
        report.failedRepairs++;
        this.log.warn(
          { workerId: id, err: (err as Error).message },
          "resync: network allocation not freed; retried on the next pass",
        );
      }
    }
  }
}
