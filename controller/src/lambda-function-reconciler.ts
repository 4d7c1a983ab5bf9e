import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { agentTransport, type AgentTokenSource } from "@esb/common/agent-credentials";
import {
  functionRevision,
  isValidCodeFileName,
  toAgentFunctionSpec,
  validateLambdaFunction,
  type LambdaFunction,
  type LambdaFunctionStatus,
  type Logger,
  type ResolvedFunctionCode,
} from "@esb/common";
import { AgentService } from "@esb/common/gen/esb/agent/v1/agent_pb";
import { unzipConfigMapCode } from "./configmap-zip-code.js";
import type { AgentDirectory, AgentEndpoint } from "./agent-directory.js";
import { WORKERS_FINALIZER, functionKey, parseFunctionKey, type FunctionSource } from "./function-source.js";
import { CONDITION_ROUTES_ACCEPTED, routesCondition } from "./route-status.js";
import { distribute, type Shares } from "./concurrency-shares.js";
import {
  CONDITION_READY,
  CONDITION_WORKERS_DESTROYED,
  REASON_WAITING_FOR_AGENTS,
  failedConditions,
  mergeConditions,
  preparedConditions,
  sameStatus,
} from "./function-conditions.js";
import type { WorkResult } from "./work-queue.js";

/** Options of {@link LambdaFunctionReconciler}. */
export interface LambdaFunctionReconcilerOptions {
  source: FunctionSource;
  agents: AgentDirectory;
  /** Gateway base URL for `status.url`. */
  gatewayUrl: string;
  /** Namespace whose functions the gateway resolves by bare name. Default `default`. */
  gatewayNamespace?: string;
  /**
   * Namespaces whose HTTP routes the gateway serves (its GATEWAY_ROUTE_NAMESPACES),
   * for the RoutesAccepted condition. Default: the gateway namespace alone.
   */
  routeNamespaces?: readonly string[] | "*";
  /** Timeout of one PrepareFunction call. Default 300 s. */
  prepareTimeoutMs?: number;
  /** Timeout of other agent calls. Default 30 s. */
  callTimeoutMs?: number;
  /** How soon to look again while the warm pool fills up. Default 2 s. */
  warmPollMs?: number;
  /** How soon to try again while no agent is available or a ConfigMap is missing. Default 10 s. */
  waitPollMs?: number;
  /**
   * Workers of a function that is not in the (synced) source are destroyed by
   * {@link LambdaFunctionReconciler.collectOrphans} once the function has been
   * missing for this long, seen at two sweeps at least. Default 60 s.
   */
  orphanGraceMs?: number;
  /** Called with the number of workers destroyed as orphans (metrics). */
  onOrphansDestroyed?: (workers: number) => void;
  /** The controller's bearer token for agents (they refuse anonymous calls). */
  agentToken?: AgentTokenSource;
  logger: Logger;
}

/** Workers of a function destroyed on one agent because the function no longer exists. */
export interface OrphanCollection {
  agent: string;
  function: string;
  destroyedWorkers: number;
}

/** What DestroyFunction on every known agent achieved. */
export interface DestroyOutcome {
  /** Workers destroyed in all. */
  destroyed: number;
  /** Agents (names) that confirmed the function's workers destroyed. */
  cleaned: string[];
  /** Agents that exist but could not confirm it, with why. */
  pending: Array<{ agent: string; reason: string }>;
}

/** Raised (so the work queue backs off and retries) when agents could not do what was asked. */
export class ReconcileError extends Error {
  override name = "ReconcileError";
}

/** An agent client plus how it is reached. */
interface AgentHandle {
  endpoint: AgentEndpoint;
  client: Client<typeof AgentService>;
}

/** Per-agent outcome of PrepareFunction. */
interface PrepareOutcome {
  agent: AgentEndpoint;
  ok: boolean;
  unreachable: boolean;
  error?: string;
  imageDigest?: string;
  readyWorkers: number;
  warmWorkers: number;
  /** Why the agent's provisioned workers do not initialise ("" when they do). */
  initError?: string;
}

/** What the controller last prepared for a function (in memory). */
interface Placement {
  fn: LambdaFunction;
  revision: string;
  agents: Set<string>;
}

/**
 * The reconcile logic for LambdaFunctions, shared by the Kubernetes and the
 * folder source. `reconcile(key)` brings the agents in line with the function:
 *
 * - deleted (deletionTimestamp, or gone from the source): DestroyFunction on
 *   every agent that exists (ready or not); the `esb.dev/workers` finalizer is
 *   removed only when the agent directory has synced and every one of them
 *   confirmed it (see `finalize`);
 * - otherwise: adds the finalizer, checks what the schema cannot (ConfigMap
 *   exists and its keys are file names; `code.path` only standalone), computes
 *   the revision, calls PrepareFunction on every available agent with a share
 *   of `provisionedConcurrency` (shares sum to the spec value; agents that do not
 *   answer get none and their share goes to the others), and writes status
 *   (conditions Ready / ImagePrepared / WarmPoolReady with observedGeneration,
 *   worker counts, nodes, url, imageDigest) and Events on transitions.
 *
 * It throws when an agent call failed, so the work queue retries with backoff.
 */
export class LambdaFunctionReconciler {
  private readonly clients = new Map<string, AgentHandle>();
  private readonly placements = new Map<string, Placement>();
  /** `<agent url> <function key>` → when the sweep first found workers of a function missing from the source. */
  private readonly orphanSince = new Map<string, number>();
  private readonly log: Logger;

  constructor(private readonly options: LambdaFunctionReconcilerOptions) {
    this.log = options.logger;
  }

  /** Closes agent clients of agents that no longer exist. */
  pruneClients(): void {
    const urls = new Set(this.options.agents.known().map((a) => a.url));
    for (const url of this.clients.keys()) if (!urls.has(url)) this.clients.delete(url);
  }

  private client(agent: AgentEndpoint): Client<typeof AgentService> {
    let h = this.clients.get(agent.url);
    if (!h) {
      h = {
        endpoint: agent,
        client: createClient(AgentService, agentTransport(agent.url, this.options.agentToken)),
      };
      this.clients.set(agent.url, h);
    }
    return h.client;
  }

  /**
   * Reconciles one function (`namespace/name`). When `signal` fires (the
   * controller lost its leadership), agent calls in flight are cancelled and the
   * reconcile rejects without writing status for what it could not finish.
   */
  async reconcile(key: string, signal?: AbortSignal): Promise<WorkResult> {
    const fn = this.options.source.get(key);
    if (!fn) return this.forget(key, signal);
    if (fn.metadata.deletionTimestamp) return this.finalize(key, fn, signal);
    const withFinalizer =
      this.options.source.mode === "kubernetes" ? await this.options.source.ensureFinalizer(fn) : fn;
    return this.sync(key, { ...withFinalizer, status: fn.status }, signal);
  }

  /** The function disappeared from the source without our cleanup (folder file removed, finalizer removed by hand). */
  private async forget(key: string, signal?: AbortSignal): Promise<WorkResult> {
    const placement = this.placements.get(key);
    if (!placement) return;
    if (!this.options.agents.isSynced())
      throw new ReconcileError(`function ${key} removed; waiting for the agent directory to sync`);
    const out = await this.destroyOnKnownAgents(key, signal);
    if (out.pending.length > 0)
      throw new ReconcileError(`function ${key} removed; workers not yet destroyed on ${pendingText(out)}`);
    this.placements.delete(key);
    this.log.info({ function: key, destroyed: out.destroyed }, "function removed; workers destroyed");
  }

  /**
   * A deleted function keeps {@link WORKERS_FINALIZER} until every agent that
   * exists confirmed its workers destroyed: not while the agent directory has
   * not synced (a new leader does not know the agents yet), and not while an
   * agent is pending, unready or unreachable. Meanwhile the function shows
   * WorkersDestroyed=False (and Ready=False) with reason WaitingForAgents, a
   * Warning Event says why, and the key is retried with the work queue's backoff.
   */
  private async finalize(key: string, fn: LambdaFunction, signal?: AbortSignal): Promise<WorkResult> {
    if (!fn.metadata.finalizers?.includes(WORKERS_FINALIZER)) return;
    const agents = this.options.agents;
    if (!agents.isSynced())
      return this.waitForAgents(
        fn,
        "the controller does not know the ESB agents yet (agent directory not synced); the finalizer stays until every agent has destroyed the function's workers",
      );
    const out = await this.destroyOnKnownAgents(key, signal);
    if (out.pending.length > 0)
      return this.waitForAgents(
        fn,
        `workers not yet destroyed on ${pendingText(out)}${out.cleaned.length ? ` (done on ${out.cleaned.join(", ")})` : ""}; the finalizer stays until every agent has destroyed them`,
      );
    await this.options.source.recordEvent(
      fn,
      "Normal",
      "WorkersDestroyed",
      `destroyed ${out.destroyed} workers on ${out.cleaned.length} nodes`,
    );
    await this.options.source.removeFinalizer(fn);
    this.placements.delete(key);
    this.log.info(
      { function: key, destroyed: out.destroyed, agents: out.cleaned },
      "function deleted; workers destroyed, finalizer removed",
    );
  }

  /** Reports that a deletion waits for agents (condition + Event) and throws, so the key is retried with backoff. */
  private async waitForAgents(fn: LambdaFunction, message: string): Promise<never> {
    const generation = fn.metadata.generation ?? 1;
    const conditions = mergeConditions(fn.status?.conditions, [
      {
        type: CONDITION_READY,
        status: "False",
        reason: REASON_WAITING_FOR_AGENTS,
        message,
        observedGeneration: generation,
      },
      {
        type: CONDITION_WORKERS_DESTROYED,
        status: "False",
        reason: REASON_WAITING_FOR_AGENTS,
        message,
        observedGeneration: generation,
      },
    ]);
    const status: LambdaFunctionStatus = { ...fn.status, conditions };
    try {
      await this.options.source.recordEvent(fn, "Warning", REASON_WAITING_FOR_AGENTS, message);
      if (!sameStatus(fn.status, status)) await this.options.source.updateStatus(fn, status);
    } catch (err) {
      this.log.warn(
        { function: functionKey(fn), err: String((err as Error)?.message ?? err) },
        "could not report that the deletion waits for agents",
      );
    }
    throw new ReconcileError(`deletion of ${functionKey(fn)} waits: ${message}`);
  }

  /**
   * DestroyFunction on every agent that exists ({@link AgentDirectory.known}),
   * each address called once. An agent without an address, or whose call
   * failed, is pending: it may still run the function's workers.
   */
  async destroyOnKnownAgents(key: string, signal?: AbortSignal): Promise<DestroyOutcome> {
    const ref = parseFunctionKey(key);
    const known = this.options.agents.known();
    const urls = [...new Set(known.flatMap((a) => (a.url ? [a.url] : [])))];
    const results = new Map<string, { ok: true; destroyed: number } | { ok: false; reason: string }>();
    await Promise.all(
      urls.map(async (url) => {
        const agent = known.find((a) => a.url === url)!;
        try {
          const res = await this.client({ name: agent.name, url }).destroyFunction(
            { function: ref },
            { timeoutMs: this.options.callTimeoutMs ?? 30_000, signal },
          );
          results.set(url, { ok: true, destroyed: res.destroyedWorkers });
        } catch (err) {
          const e = ConnectError.from(err);
          results.set(url, { ok: false, reason: `${Code[e.code]}: ${e.rawMessage}` });
        }
      }),
    );
    // Cancelled calls are not "pending" agents: the caller must not report them.
    signal?.throwIfAborted();
    const out: DestroyOutcome = { destroyed: 0, cleaned: [], pending: [] };
    for (const r of results.values()) if (r.ok) out.destroyed += r.destroyed;
    for (const a of known) {
      const r = a.url ? results.get(a.url) : undefined;
      if (r?.ok) out.cleaned.push(a.name);
      else out.pending.push({ agent: a.name, reason: r ? r.reason : (a.state ?? "no address") });
    }
    return out;
  }

  /**
   * Destroys workers whose function no longer exists: asks every ready agent
   * for its workers (ListWorkers) and, for each function of a watched namespace
   * that the source does not hold, calls DestroyFunction on that agent once the
   * function has been missing for `orphanGraceMs` (seen at two sweeps at least,
   * checked again right before). Does nothing unless both the source and the
   * agent directory are synced: only then is "missing" known to mean "gone".
   * Agents that do not answer are skipped until the next sweep.
   */
  async collectOrphans(signal?: AbortSignal): Promise<OrphanCollection[]> {
    const { source, agents } = this.options;
    if (!source.isSynced() || !agents.isSynced()) return [];
    const grace = this.options.orphanGraceMs ?? 60_000;
    const live = new Set(source.keys());
    const seen = new Set<string>();
    const collected: OrphanCollection[] = [];
    for (const agent of agents.list()) {
      signal?.throwIfAborted();
      let keys: string[];
      try {
        const res = await this.client(agent).listWorkers(
          {},
          { timeoutMs: this.options.callTimeoutMs ?? 30_000, signal },
        );
        keys = [
          ...new Set(
            res.workers.flatMap((w) =>
              w.function?.name && source.watches(w.function.namespace)
                ? [functionKey({ metadata: { namespace: w.function.namespace, name: w.function.name } })]
                : [],
            ),
          ),
        ];
      } catch (err) {
        this.log.debug(
          { agent: agent.name, err: ConnectError.from(err).rawMessage },
          "orphan sweep: ListWorkers failed; agent skipped",
        );
        continue;
      }
      for (const key of keys) {
        if (live.has(key)) continue;
        const id = `${agent.url} ${key}`;
        seen.add(id);
        const since = this.orphanSince.get(id);
        if (since === undefined) {
          this.orphanSince.set(id, Date.now());
          continue;
        }
        if (Date.now() - since < grace || source.get(key)) continue;
        signal?.throwIfAborted();
        try {
          const res = await this.client(agent).destroyFunction(
            { function: parseFunctionKey(key) },
            { timeoutMs: this.options.callTimeoutMs ?? 30_000, signal },
          );
          this.orphanSince.delete(id);
          collected.push({ agent: agent.name, function: key, destroyedWorkers: res.destroyedWorkers });
          this.options.onOrphansDestroyed?.(res.destroyedWorkers);
          this.log.info(
            { function: key, agent: agent.name, destroyed: res.destroyedWorkers },
            "destroyed orphaned workers of a function that no longer exists",
          );
        } catch (err) {
          this.log.warn(
            { function: key, agent: agent.name, err: ConnectError.from(err).rawMessage },
            "orphan sweep: DestroyFunction failed; retried at the next sweep",
          );
        }
      }
    }
    for (const id of this.orphanSince.keys()) if (!seen.has(id)) this.orphanSince.delete(id);
    return collected;
  }

  private async sync(key: string, fn: LambdaFunction, signal?: AbortSignal): Promise<WorkResult> {
    const generation = fn.metadata.generation ?? 1;
    const problem = this.validate(fn);
    if (problem) {
      await this.writeStatus(fn, this.failedStatus(fn, "InvalidSpec", problem));
      return;
    }
    const resolved = await this.resolveCode(fn);
    if ("reason" in resolved) {
      await this.writeStatus(fn, this.failedStatus(fn, resolved.reason, resolved.message));
      return { requeueAfterMs: this.options.waitPollMs ?? 10_000 };
    }
    const code = resolved.code;
    const revision = functionRevision(fn.spec, code);
    // Before the directory knows the agents, "no agents" would be a false report
    // (a new leader would mark every function NoAgents for a moment): wait instead.
    if (!this.options.agents.isSynced())
      return { requeueAfterMs: Math.min(this.options.waitPollMs ?? 10_000, 1000) };
    const agents = this.options.agents.list();
    if (agents.length === 0) {
      await this.writeStatus(
        fn,
        this.failedStatus(fn, "NoAgents", "no ESB agent is available to run the function"),
      );
      return { requeueAfterMs: this.options.waitPollMs ?? 10_000 };
    }
    const provisioned = fn.spec.provisionedConcurrency ?? 0;
    const reserved = fn.spec.reservedConcurrency;
    // Both limits are split over the agents so that they hold cluster-wide: each agent
    // gets a share, the shares sum to the spec value, and with one ranking per function
    // an agent's provisioned share never exceeds its reserved share. (A gateway tries
    // every agent before it answers 429.)
    const shares = (over: AgentEndpoint[]): Shares => ({
      provisioned: distribute(provisioned, over, key),
      reserved: reserved === undefined ? undefined : distribute(reserved, over, key),
    });
    // First pass on every agent; agents that do not answer get no share, and the
    // others are asked again with the shares recomputed over the reachable ones.
    let outcomes = await this.prepareAll(fn, code, revision, agents, shares(agents), signal);
    const reachable = agents.filter((a) => !outcomes.find((o) => o.agent.url === a.url)?.unreachable);
    if (
      reachable.length > 0 &&
      reachable.length < agents.length &&
      (provisioned > 0 || reserved !== undefined)
    ) {
      const second = await this.prepareAll(fn, code, revision, reachable, shares(reachable), signal);
      outcomes = outcomes.map((o) => second.find((s) => s.agent.url === o.agent.url) ?? o);
    }
    const ok = outcomes.filter((o) => o.ok);
    const failed = outcomes.filter((o) => !o.ok);
    const warm = ok.reduce((n, o) => n + o.warmWorkers, 0);
    const ready = ok.reduce((n, o) => n + o.readyWorkers, 0);
    const digest = ok.find((o) => o.imageDigest)?.imageDigest || fn.status?.imageDigest;
    const prev = this.placements.get(key);
    if (ok.length > 0)
      this.placements.set(key, { fn, revision, agents: new Set(ok.map((o) => o.agent.url)) });
    else if (!prev) this.placements.set(key, { fn, revision, agents: new Set() });

    const failureText = failed.map((o) => `${o.agent.name}: ${o.error}`).join("; ");
    const { conditions, warmReady } = preparedConditions({
      generation,
      revision,
      provisioned,
      nodes: agents.length,
      prepared: ok.length,
      warm,
      failureText,
      initErrors: ok.filter((o) => o.initError).map((o) => `${o.agent.name}: ${o.initError}`),
    });
    const status: LambdaFunctionStatus = {
      observedGeneration: generation,
      conditions: mergeConditions(fn.status?.conditions, conditions),
      readyWorkers: ready,
      warmWorkers: warm,
      nodes: ok.map((o) => o.agent.name),
      url: this.invokeUrl(fn),
      revision,
      ...(digest ? { imageDigest: digest } : {}),
    };
    if (fn.status?.revision !== revision && ok.length > 0)
      await this.options.source.recordEvent(
        fn,
        "Normal",
        "Prepared",
        `revision ${revision} (generation ${generation}) prepared on ${ok.map((o) => o.agent.name).join(", ")}`,
      );
    await this.writeStatus(fn, status);
    if (failed.length > 0) throw new ReconcileError(`PrepareFunction failed on ${failureText}`);
    if (!warmReady && provisioned > 0) return { requeueAfterMs: this.options.warmPollMs ?? 2000 };
    return;
  }

  /** Checks what the CRD schema cannot (or what a folder manifest may get wrong); returns the problem or undefined. */
  private validate(fn: LambdaFunction): string | undefined {
    const r = validateLambdaFunction({
      apiVersion: fn.apiVersion,
      kind: fn.kind,
      metadata: fn.metadata,
      spec: fn.spec,
    });
    if (!r.ok) return r.errors.join("; ");
    const code = fn.spec.code;
    if (this.options.source.mode === "kubernetes" && code?.path !== undefined)
      return "spec.code.path is only supported by esb up (standalone); in Kubernetes use spec.code.configMap or spec.code.inline";
    if (this.options.source.mode === "standalone" && code?.configMap !== undefined)
      return "spec.code.configMap needs Kubernetes; with esb up use spec.code.path or spec.code.inline";
    return undefined;
  }

  private async resolveCode(
    fn: LambdaFunction,
  ): Promise<{ code: ResolvedFunctionCode | undefined } | { reason: string; message: string }> {
    const code = fn.spec.code;
    if (fn.spec.image !== undefined || !code) return { code: undefined };
    if (code.inline) return { code: { files: code.inline } };
    if (code.path) return { code: { hostPath: code.path } };
    const ns = fn.metadata.namespace ?? "default";
    const name = code.configMap!.name;
    const files = await this.options.source.readConfigMap(ns, name);
    if (!files)
      return {
        reason: "ConfigMapNotFound",
        message: `ConfigMap ${ns}/${name} (spec.code.configMap) not found`,
      };
    const zipKey = code.configMap!.zipKey;
    if (zipKey !== undefined) return unzipConfigMapCode(ns, name, zipKey, files);
    const keys = Object.keys(files);
    if (keys.length === 0)
      return {
        reason: "ConfigMapEmpty",
        message: `ConfigMap ${ns}/${name} (spec.code.configMap) has no keys; each key is a file of the function`,
      };
    const bad = keys.filter((k) => !isValidCodeFileName(k));
    if (bad.length > 0)
      return {
        reason: "InvalidCode",
        message: `ConfigMap ${ns}/${name} has keys that are not file names: ${bad.join(", ")}`,
      };
    return { code: { files } };
  }

  private async prepareAll(
    fn: LambdaFunction,
    code: ResolvedFunctionCode | undefined,
    revision: string,
    agents: AgentEndpoint[],
    shares: Shares,
    signal?: AbortSignal,
  ): Promise<PrepareOutcome[]> {
    return Promise.all(
      agents.map(async (agent): Promise<PrepareOutcome> => {
        const spec = toAgentFunctionSpec(fn, code, {
          revision,
          provisionedConcurrency: shares.provisioned.get(agent.url) ?? 0,
          reservedConcurrency: shares.reserved ? (shares.reserved.get(agent.url) ?? 0) : undefined,
        });
        try {
          const res = await this.client(agent).prepareFunction(
            { spec },
            { timeoutMs: this.options.prepareTimeoutMs ?? 300_000, signal },
          );
          return {
            agent,
            ok: true,
            unreachable: false,
            imageDigest: res.imageDigest,
            readyWorkers: res.readyWorkers,
            warmWorkers: res.warmWorkers,
            initError: res.initError,
          };
        } catch (err) {
          // Cancelled, not failed: reject so that no PrepareFailed status is written for it.
          signal?.throwIfAborted();
          const e = ConnectError.from(err);
          const unreachable =
            e.code === Code.Unavailable || e.code === Code.DeadlineExceeded || e.code === Code.Unknown;
          this.log.warn(
            { function: functionKey(fn), agent: agent.name, code: Code[e.code], err: e.rawMessage },
            "PrepareFunction failed",
          );
          return {
            agent,
            ok: false,
            unreachable,
            error: `${Code[e.code]}: ${e.rawMessage}`,
            readyWorkers: 0,
            warmWorkers: 0,
          };
        }
      }),
    );
  }

  private invokeUrl(fn: LambdaFunction): string {
    const ns = fn.metadata.namespace ?? "default";
    const name =
      ns === (this.options.gatewayNamespace ?? "default")
        ? fn.metadata.name
        : encodeURIComponent(`${ns}/${fn.metadata.name}`);
    return `${this.options.gatewayUrl.replace(/\/+$/, "")}/2015-03-31/functions/${name}/invocations`;
  }

  private failedStatus(fn: LambdaFunction, reason: string, message: string): LambdaFunctionStatus {
    const generation = fn.metadata.generation ?? 1;
    const prev = fn.status ?? {};
    const conditions = mergeConditions(prev.conditions, failedConditions(reason, message, generation));
    return {
      ...prev,
      observedGeneration: generation,
      conditions,
      url: this.invokeUrl(fn),
      readyWorkers: reason === "NoAgents" ? 0 : (prev.readyWorkers ?? 0),
      warmWorkers: reason === "NoAgents" ? 0 : (prev.warmWorkers ?? 0),
    };
  }

  /**
   * Adds RoutesAccepted (decided like the gateway decides, among all known
   * functions) to a function that declares HTTP routes, removes it from one that
   * no longer does, and records a Warning Event when its routes become refused.
   */
  private async withRoutesCondition(
    fn: LambdaFunction,
    status: LambdaFunctionStatus,
  ): Promise<LambdaFunctionStatus> {
    const { source } = this.options;
    const all = source
      .keys()
      .map((k) => source.get(k))
      .filter((f): f is LambdaFunction => f !== undefined);
    const cond = routesCondition(fn, all, {
      namespaces: this.options.routeNamespaces ?? [this.options.gatewayNamespace ?? "default"],
    });
    const without = (status.conditions ?? []).filter((c) => c.type !== CONDITION_ROUTES_ACCEPTED);
    if (!cond) return { ...status, conditions: without };
    const before = fn.status?.conditions?.find((c) => c.type === CONDITION_ROUTES_ACCEPTED);
    if (cond.status === "False" && (before?.status !== "False" || before.message !== cond.message))
      await source.recordEvent(fn, "Warning", cond.reason, cond.message);
    return { ...status, conditions: mergeConditions(status.conditions, [cond]) };
  }

  /** Writes status when it differs (ignoring timestamps) and records an Event when Ready changes. */
  private async writeStatus(fn: LambdaFunction, statusIn: LambdaFunctionStatus): Promise<void> {
    const status = await this.withRoutesCondition(fn, statusIn);
    const before = fn.status?.conditions?.find((c) => c.type === CONDITION_READY);
    const after = status.conditions?.find((c) => c.type === CONDITION_READY);
    if (after && (before?.status !== after.status || before?.reason !== after.reason)) {
      if (after.status === "True")
        await this.options.source.recordEvent(fn, "Normal", "Ready", after.message);
      // Warming up is progress, not a problem (`kubectl get events --field-selector type=Warning` stays quiet).
      else if (after.reason === "WarmingUp")
        await this.options.source.recordEvent(fn, "Normal", after.reason, after.message);
      else await this.options.source.recordEvent(fn, "Warning", after.reason, after.message);
    }
    if (sameStatus(fn.status, status)) return;
    await this.options.source.updateStatus(fn, status);
  }
}

/** `node-a (Unavailable: …), node-b (pod Pending)` for messages. */
function pendingText(out: DestroyOutcome): string {
  return out.pending.map((p) => `${p.agent} (${p.reason})`).join(", ");
}
