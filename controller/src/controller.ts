import type { KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "@esb/common";
import type { AgentTokenSource } from "@esb/common/agent-credentials";
import type { AgentDirectory } from "./agent-directory.js";
import type { ControllerMetrics } from "./controller-metrics.js";
import type { FunctionSource } from "./function-source.js";
import type { LambdaFunction, LambdaFunctionStatus } from "@esb/common";
import {
  LambdaFunctionReconciler,
  type LambdaFunctionReconcilerOptions,
} from "./lambda-function-reconciler.js";
import { LeaderElector, type LeaderElectionOptions } from "./leader-election.js";
import { WorkQueue } from "./work-queue.js";

/** Options of {@link Controller}. */
/**
 * Default number of functions reconciled at once. A reconcile mostly waits (the apiserver's
 * writes, the agents' PrepareFunction), so several run side by side; see the function-scale rows
 * of bench/README.md.
 */
export const DEFAULT_RECONCILE_WORKERS = 8;

export interface ControllerOptions {
  source: FunctionSource;
  agents: AgentDirectory;
  gatewayUrl: string;
  gatewayNamespace?: string;
  /** Namespaces whose HTTP routes the gateway serves (RoutesAccepted condition); default: the gateway namespace. */
  routeNamespaces?: readonly string[] | "*";
  /** Every function is reconciled again after this long. Default 30 s. */
  resyncMs?: number;
  /** Leader election (Kubernetes). Absent: this controller always reconciles. */
  leaderElection?: { kubeConfig: KubeConfig } & Omit<
    LeaderElectionOptions,
    "onStartedLeading" | "onStoppedLeading" | "logger"
  >;
  /** Fine-tuning of the reconciler (timeouts, poll intervals). */
  reconciler?: Partial<Omit<LambdaFunctionReconcilerOptions, "source" | "agents" | "gatewayUrl" | "logger">>;
  /**
   * Orphan collection while leading: every `intervalMs` (default: the resync
   * interval) workers of functions that no longer exist are destroyed on the
   * agents (see {@link LambdaFunctionReconciler.collectOrphans}; `graceMs` is
   * its `orphanGraceMs`). `false` turns it off.
   */
  orphanCollection?: false | { intervalMs?: number; graceMs?: number };
  /** The controller's bearer token for agents (they refuse anonymous calls). */
  agentToken?: AgentTokenSource;
  /**
   * Called when leadership is lost while running (not on {@link Controller.stop}):
   * by then reconciling has stopped and in-flight work was aborted. `drained` is
   * false when that work had not ended within `lossDrainTimeoutMs` (default
   * 10 s), i.e. something ignored the abort; a process may then exit so that
   * nothing of the lost term survives (see main.ts).
   */
  onLeadershipLost?: (info: { drained: boolean }) => void;
  lossDrainTimeoutMs?: number;
  /** Work-queue retry backoff. */
  /** Functions reconciled at the same time (the work queue's concurrency). Default {@link DEFAULT_RECONCILE_WORKERS}. */
  reconcileWorkers?: number;
  baseRetryDelayMs?: number;
  maxRetryDelayMs?: number;
  metrics?: ControllerMetrics;
  logger: Logger;
}

/**
 * Runs the LambdaFunction reconciler: the source is watched all the time (so a
 * replica that becomes leader has a warm cache), but keys are only reconciled
 * while this replica leads (always, without leader election). Every function is
 * queued again on resync and whenever the set of agents changes (or the agent
 * directory becomes synced). While leading, orphaned workers (of functions that
 * no longer exist) are collected periodically.
 *
 * Losing the lease stops everything of that term at once: the work queue stops,
 * reconciles and the orphan sweep in flight are aborted (agent calls included),
 * and writes to the source (status, finalizers, Events) are refused from that
 * moment, so a deposed leader never acts beside the new one.
 */
export class Controller {
  readonly reconciler: LambdaFunctionReconciler;
  private queue?: WorkQueue;
  private elector?: LeaderElector;
  private resyncTimer?: NodeJS.Timeout;
  private orphanTimer?: NodeJS.Timeout;
  private sweeping?: Promise<void>;
  /** Aborted when the current leadership term ends (orphan sweeps; the queue has its own). */
  private term?: AbortController;
  private started = false;
  private leading = false;
  private stopping = false;

  constructor(private readonly options: ControllerOptions) {
    this.reconciler = new LambdaFunctionReconciler({
      ...options.reconciler,
      // With leader election, only the current leader may write; without it, this controller always may.
      source: options.leaderElection
        ? leaderOnlyWrites(options.source, () => this.leading && this.elector?.isLeader === true)
        : options.source,
      agents: options.agents,
      gatewayUrl: options.gatewayUrl,
      gatewayNamespace: options.gatewayNamespace,
      routeNamespaces: options.routeNamespaces,
      agentToken: options.agentToken,
      ...(options.orphanCollection && options.orphanCollection.graceMs !== undefined
        ? { orphanGraceMs: options.orphanCollection.graceMs }
        : {}),
      onOrphansDestroyed: (n) => options.metrics?.orphanedWorkersDestroyed.inc(n),
      logger: options.logger,
    });
  }

  /** True once the source and agent directory are started (readiness). */
  get isStarted(): boolean {
    return this.started;
  }

  /** True while this controller reconciles. */
  get isLeader(): boolean {
    return this.leading;
  }

  /** Starts watching and (when leading, or without leader election) reconciling. */
  async start(): Promise<void> {
    const { source, agents, logger, metrics } = this.options;
    this.stopping = false;
    await agents.start();
    agents.onChange(() => {
      metrics?.agents.set(agents.list().length);
      this.reconciler.pruneClients();
      this.enqueueAll();
    });
    metrics?.agents.set(agents.list().length);
    await source.start((key) => this.enqueue(key));
    this.resyncTimer = setInterval(() => this.enqueueAll(), this.options.resyncMs ?? 30_000);
    this.resyncTimer.unref();
    this.started = true;
    const le = this.options.leaderElection;
    if (le) {
      this.elector = new LeaderElector(le.kubeConfig, {
        ...le,
        logger,
        onStartedLeading: () => this.startReconciling(),
        onStoppedLeading: () => this.leadershipLost(),
      });
      this.elector.start();
    } else {
      this.startReconciling();
    }
  }

  /** Stops reconciling (a leader steps down and releases its lease) and stops watching. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.resyncTimer);
    await this.elector?.stop();
    // Without leader election (esb up) a graceful stop lets work in flight finish, as before;
    // with it, the term already ended (aborted) when the elector stepped down.
    await this.stopReconciling(this.elector !== undefined);
    await this.options.source.stop();
    await this.options.agents.stop();
    this.started = false;
  }

  private startReconciling(): void {
    const { metrics, logger } = this.options;
    this.leading = true;
    metrics?.leader.set(1);
    this.term = new AbortController();
    this.queue = new WorkQueue((key, signal) => this.reconciler.reconcile(key, signal), {
      concurrency: this.options.reconcileWorkers ?? DEFAULT_RECONCILE_WORKERS,
      baseDelayMs: this.options.baseRetryDelayMs,
      maxDelayMs: this.options.maxRetryDelayMs,
      logger,
      onResult: (_key, outcome, ms) => {
        metrics?.reconciles.inc({ result: outcome });
        metrics?.reconcileSeconds.observe(ms / 1000);
      },
    });
    this.queue.start();
    this.enqueueAll();
    const orphans = this.options.orphanCollection;
    if (orphans !== false) {
      this.orphanTimer = setInterval(
        () => void this.sweepOrphans(),
        orphans?.intervalMs ?? this.options.resyncMs ?? 30_000,
      );
      this.orphanTimer.unref();
    }
  }

  /** One orphan sweep at a time; failures are logged, never thrown. */
  private sweepOrphans(): Promise<void> {
    if (this.sweeping || !this.leading) return this.sweeping ?? Promise.resolve();
    this.sweeping = this.reconciler
      .collectOrphans(this.term?.signal)
      .then(() => undefined)
      .catch((err: unknown) => this.options.logger.warn({ err }, "orphan sweep failed"))
      .finally(() => {
        this.sweeping = undefined;
      });
    return this.sweeping;
  }

  /**
   * Ends the term: everything that stops new work or cancels work in flight
   * (with `abort`) happens synchronously, before the first await; then waits
   * for that work.
   */
  private async stopReconciling(abort = true): Promise<void> {
    this.leading = false;
    this.options.metrics?.leader.set(0);
    clearInterval(this.orphanTimer);
    this.orphanTimer = undefined;
    const reason = new Error("this controller no longer leads");
    if (abort) this.term?.abort(reason);
    this.term = undefined;
    const q = this.queue;
    this.queue = undefined;
    await Promise.all([q?.stop({ abort, reason }), this.sweeping]);
  }

  /** onStoppedLeading: stop at once, then tell the owner whether the term's work ended in time. */
  private async leadershipLost(): Promise<void> {
    const stopped = this.stopReconciling();
    if (this.stopping || !this.options.onLeadershipLost) return stopped;
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      stopped.then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), this.options.lossDrainTimeoutMs ?? 10_000);
        timer.unref();
      }),
    ]);
    clearTimeout(timer);
    this.options.onLeadershipLost({ drained });
    await stopped;
  }

  private enqueue(key: string): void {
    this.queue?.add(key);
    this.options.metrics?.queueDepth.set(this.queue?.length ?? 0);
  }

  private enqueueAll(): void {
    const keys = this.options.source.keys();
    this.options.metrics?.functions.set(keys.length);
    for (const k of keys) this.enqueue(k);
  }
}

/**
 * `source` whose writes (finalizers, status, Events) fail while `allowed()` is
 * false: a reconcile that outlives its leadership term (one that ignored the
 * abort, or was between two awaits) cannot change anything any more.
 */
function leaderOnlyWrites(source: FunctionSource, allowed: () => boolean): FunctionSource {
  const check = (what: string) => {
    if (!allowed()) throw new Error(`not the leader: ${what} refused`);
  };
  return {
    get mode() {
      return source.mode;
    },
    start: (enqueue) => source.start(enqueue),
    stop: () => source.stop(),
    keys: () => source.keys(),
    isSynced: () => source.isSynced(),
    watches: (namespace) => source.watches(namespace),
    get: (key) => source.get(key),
    readConfigMap: (namespace, name) => source.readConfigMap(namespace, name),
    ensureFinalizer: async (fn: LambdaFunction) => {
      check("adding the finalizer");
      return source.ensureFinalizer(fn);
    },
    removeFinalizer: async (fn: LambdaFunction) => {
      check("removing the finalizer");
      return source.removeFinalizer(fn);
    },
    updateStatus: async (fn: LambdaFunction, status: LambdaFunctionStatus) => {
      check("status update");
      return source.updateStatus(fn, status);
    },
    recordEvent: async (fn, type, reason, message) => {
      check("event");
      return source.recordEvent(fn, type, reason, message);
    },
  };
}
