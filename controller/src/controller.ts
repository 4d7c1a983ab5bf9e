import type { KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "@esb/common";
import type { AgentTokenSource } from "@esb/common/agent-credentials";
import type { AgentDirectory } from "./agent-directory.js";
import type { ControllerMetrics } from "./controller-metrics.js";
import type { FunctionSource } from "./function-source.js";
import {
  LambdaFunctionReconciler,
  type LambdaFunctionReconcilerOptions,
} from "./lambda-function-reconciler.js";
import { LeaderElector, type LeaderElectionOptions } from "./leader-election.js";
import { WorkQueue } from "./work-queue.js";

/** Options of {@link Controller}. */
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
  /** Work-queue retry backoff. */
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
 */
export class Controller {
  readonly reconciler: LambdaFunctionReconciler;
  private queue?: WorkQueue;
  private elector?: LeaderElector;
  private resyncTimer?: NodeJS.Timeout;
  private orphanTimer?: NodeJS.Timeout;
  private sweeping?: Promise<void>;
  private started = false;
  private leading = false;

  constructor(private readonly options: ControllerOptions) {
    this.reconciler = new LambdaFunctionReconciler({
      ...options.reconciler,
      source: options.source,
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

  async start(): Promise<void> {
    const { source, agents, logger, metrics } = this.options;
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
        onStoppedLeading: () => this.stopReconciling(),
      });
      this.elector.start();
    } else {
      this.startReconciling();
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.resyncTimer);
    await this.elector?.stop();
    await this.stopReconciling();
    await this.options.source.stop();
    await this.options.agents.stop();
    this.started = false;
  }

  private startReconciling(): void {
    const { metrics, logger } = this.options;
    this.leading = true;
    metrics?.leader.set(1);
    this.queue = new WorkQueue((key) => this.reconciler.reconcile(key), {
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
      .collectOrphans()
      .then(() => undefined)
      .catch((err: unknown) => this.options.logger.warn({ err }, "orphan sweep failed"))
      .finally(() => {
        this.sweeping = undefined;
      });
    return this.sweeping;
  }

  private async stopReconciling(): Promise<void> {
    this.leading = false;
    this.options.metrics?.leader.set(0);
    clearInterval(this.orphanTimer);
    this.orphanTimer = undefined;
    await this.sweeping;
    const q = this.queue;
    this.queue = undefined;
    await q?.stop();
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
