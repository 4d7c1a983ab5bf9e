import { createHash } from "node:crypto";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  functionRevision,
  isValidCodeFileName,
  toAgentFunctionSpec,
  validateLambdaFunction,
  type Condition,
  type LambdaFunction,
  type LambdaFunctionStatus,
  type Logger,
  type ResolvedFunctionCode,
} from "@esb/common";
import { AgentService } from "@esb/common/gen/esb/agent/v1/agent_pb";
import type { AgentDirectory, AgentEndpoint } from "./agent-directory.js";
import { WORKERS_FINALIZER, functionKey, parseFunctionKey, type FunctionSource } from "./function-source.js";
import type { WorkResult } from "./work-queue.js";

/** Condition types written to `status.conditions`. */
export const CONDITION_READY = "Ready";
export const CONDITION_IMAGE_PREPARED = "ImagePrepared";
export const CONDITION_WARM_POOL_READY = "WarmPoolReady";

/** Options of {@link LambdaFunctionReconciler}. */
export interface LambdaFunctionReconcilerOptions {
  source: FunctionSource;
  agents: AgentDirectory;
  /** Gateway base URL for `status.url`. */
  gatewayUrl: string;
  /** Namespace whose functions the gateway resolves by bare name. Default `default`. */
  gatewayNamespace?: string;
  /** Timeout of one PrepareFunction call. Default 300 s. */
  prepareTimeoutMs?: number;
  /** Timeout of other agent calls. Default 30 s. */
  callTimeoutMs?: number;
  /** How soon to look again while the warm pool fills up. Default 2 s. */
  warmPollMs?: number;
  /** How soon to try again while no agent is available or a ConfigMap is missing. Default 10 s. */
  waitPollMs?: number;
  logger: Logger;
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
 *   every agent, then the `esb.dev/workers` finalizer is removed;
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
  private readonly log: Logger;

  constructor(private readonly options: LambdaFunctionReconcilerOptions) {
    this.log = options.logger;
  }

  /** Closes agent clients that are no longer listed. */
  pruneClients(): void {
    const urls = new Set(this.options.agents.list().map((a) => a.url));
    for (const url of this.clients.keys()) if (!urls.has(url)) this.clients.delete(url);
  }

  private client(agent: AgentEndpoint): Client<typeof AgentService> {
    let h = this.clients.get(agent.url);
    if (!h) {
      h = {
        endpoint: agent,
        client: createClient(AgentService, createGrpcTransport({ baseUrl: agent.url })),
      };
      this.clients.set(agent.url, h);
    }
    return h.client;
  }

  /** Reconciles one function (`namespace/name`). */
  async reconcile(key: string): Promise<WorkResult> {
    const fn = this.options.source.get(key);
    if (!fn) return this.forget(key);
    if (fn.metadata.deletionTimestamp) return this.finalize(key, fn);
    const withFinalizer =
      this.options.source.mode === "kubernetes" ? await this.options.source.ensureFinalizer(fn) : fn;
    return this.sync(key, { ...withFinalizer, status: fn.status });
  }

  /** The function disappeared from the source without our cleanup (folder file removed, finalizer removed by hand). */
  private async forget(key: string): Promise<WorkResult> {
    const placement = this.placements.get(key);
    if (!placement) return;
    await this.destroyEverywhere(key);
    this.placements.delete(key);
    this.log.info({ function: key }, "function removed; workers destroyed");
  }

  private async finalize(key: string, fn: LambdaFunction): Promise<WorkResult> {
    if (!fn.metadata.finalizers?.includes(WORKERS_FINALIZER)) return;
    const destroyed = await this.destroyEverywhere(key);
    await this.options.source.recordEvent(
      fn,
      "Normal",
      "WorkersDestroyed",
      `destroyed ${destroyed} workers on ${this.options.agents.list().length} nodes`,
    );
    await this.options.source.removeFinalizer(fn);
    this.placements.delete(key);
    this.log.info({ function: key, destroyed }, "function deleted; workers destroyed, finalizer removed");
  }

  private async destroyEverywhere(key: string): Promise<number> {
    const ref = parseFunctionKey(key);
    const agents = this.options.agents.list();
    const results = await Promise.allSettled(
      agents.map((a) =>
        this.client(a).destroyFunction(
          { function: ref },
          { timeoutMs: this.options.callTimeoutMs ?? 30_000 },
        ),
      ),
    );
    const failures = results
      .map((r, i) =>
        r.status === "rejected" ? `${agents[i].name}: ${ConnectError.from(r.reason).message}` : undefined,
      )
      .filter((x): x is string => x !== undefined);
    if (failures.length > 0) throw new ReconcileError(`DestroyFunction failed on ${failures.join("; ")}`);
    return results.reduce((n, r) => n + (r.status === "fulfilled" ? r.value.destroyedWorkers : 0), 0);
  }

  private async sync(key: string, fn: LambdaFunction): Promise<WorkResult> {
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
    const agents = this.options.agents.list();
    if (agents.length === 0) {
      await this.writeStatus(
        fn,
        this.failedStatus(fn, "NoAgents", "no ESB agent is available to run the function"),
      );
      return { requeueAfterMs: this.options.waitPollMs ?? 10_000 };
    }
    const provisioned = fn.spec.provisionedConcurrency ?? 0;
    // First pass on every agent; agents that do not answer get no share, and the
    // others are asked again with the shares recomputed over the reachable ones.
    let outcomes = await this.prepareAll(fn, code, revision, agents, distribute(provisioned, agents, key));
    const reachable = agents.filter((a) => !outcomes.find((o) => o.agent.url === a.url)?.unreachable);
    if (reachable.length > 0 && reachable.length < agents.length && provisioned > 0) {
      const second = await this.prepareAll(
        fn,
        code,
        revision,
        reachable,
        distribute(provisioned, reachable, key),
      );
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
    const imagePrepared: Omit<Condition, "lastTransitionTime"> =
      ok.length === 0
        ? {
            type: CONDITION_IMAGE_PREPARED,
            status: "False",
            reason: "PrepareFailed",
            message: failureText,
            observedGeneration: generation,
          }
        : {
            type: CONDITION_IMAGE_PREPARED,
            status: "True",
            reason: "Prepared",
            message: `revision ${revision} prepared on ${ok.length} of ${agents.length} nodes${failed.length ? ` (failed: ${failureText})` : ""}`,
            observedGeneration: generation,
          };
    const warmReady = ok.length > 0 && warm >= provisioned;
    const warmPool: Omit<Condition, "lastTransitionTime"> =
      provisioned === 0
        ? {
            type: CONDITION_WARM_POOL_READY,
            status: "True",
            reason: "NoProvisionedConcurrency",
            message: "no provisioned concurrency requested",
            observedGeneration: generation,
          }
        : warmReady
          ? {
              type: CONDITION_WARM_POOL_READY,
              status: "True",
              reason: "WarmPoolReady",
              message: `${warm} of ${provisioned} provisioned workers warm`,
              observedGeneration: generation,
            }
          : {
              type: CONDITION_WARM_POOL_READY,
              status: "False",
              reason: "WarmingUp",
              message: `${warm} of ${provisioned} provisioned workers warm`,
              observedGeneration: generation,
            };
    const isReady = imagePrepared.status === "True" && warmPool.status === "True";
    const readyCond: Omit<Condition, "lastTransitionTime"> = isReady
      ? {
          type: CONDITION_READY,
          status: "True",
          reason: "Ready",
          message: `ready on ${ok.length} nodes, ${warm} warm workers`,
          observedGeneration: generation,
        }
      : imagePrepared.status !== "True"
        ? {
            type: CONDITION_READY,
            status: "False",
            reason: imagePrepared.reason,
            message: imagePrepared.message,
            observedGeneration: generation,
          }
        : {
            type: CONDITION_READY,
            status: "False",
            reason: warmPool.reason,
            message: warmPool.message,
            observedGeneration: generation,
          };

    const status: LambdaFunctionStatus = {
      observedGeneration: generation,
      conditions: mergeConditions(fn.status?.conditions, [readyCond, imagePrepared, warmPool]),
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
    shares: Map<string, number>,
  ): Promise<PrepareOutcome[]> {
    return Promise.all(
      agents.map(async (agent): Promise<PrepareOutcome> => {
        const spec = toAgentFunctionSpec(fn, code, {
          revision,
          provisionedConcurrency: shares.get(agent.url) ?? 0,
        });
        try {
          const res = await this.client(agent).prepareFunction(
            { spec },
            { timeoutMs: this.options.prepareTimeoutMs ?? 300_000 },
          );
          return {
            agent,
            ok: true,
            unreachable: false,
            imageDigest: res.imageDigest,
            readyWorkers: res.readyWorkers,
            warmWorkers: res.warmWorkers,
          };
        } catch (err) {
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
    const conditions = mergeConditions(prev.conditions, [
      { type: CONDITION_READY, status: "False", reason, message, observedGeneration: generation },
      ...(reason === "NoAgents"
        ? []
        : [
            {
              type: CONDITION_IMAGE_PREPARED,
              status: "False" as const,
              reason,
              message,
              observedGeneration: generation,
            },
          ]),
    ]);
    return {
      ...prev,
      observedGeneration: generation,
      conditions,
      url: this.invokeUrl(fn),
      readyWorkers: reason === "NoAgents" ? 0 : (prev.readyWorkers ?? 0),
      warmWorkers: reason === "NoAgents" ? 0 : (prev.warmWorkers ?? 0),
    };
  }

  /** Writes status when it differs (ignoring timestamps) and records an Event when Ready changes. */
  private async writeStatus(fn: LambdaFunction, status: LambdaFunctionStatus): Promise<void> {
    const before = fn.status?.conditions?.find((c) => c.type === CONDITION_READY);
    const after = status.conditions?.find((c) => c.type === CONDITION_READY);
    if (after && (before?.status !== after.status || before?.reason !== after.reason)) {
      if (after.status === "True")
        await this.options.source.recordEvent(fn, "Normal", "Ready", after.message);
      else await this.options.source.recordEvent(fn, "Warning", after.reason, after.message);
    }
    if (sameStatus(fn.status, status)) return;
    await this.options.source.updateStatus(fn, status);
  }
}

/**
 * Splits `total` provisioned workers over `agents` (sorted by name): every agent
 * gets ⌊total/n⌋ and the remainder goes to consecutive agents starting at an
 * offset derived from the function key, so that functions spread over nodes.
 * The shares always sum to `total`.
 */
export function distribute(total: number, agents: AgentEndpoint[], key: string): Map<string, number> {
  const shares = new Map<string, number>();
  const n = agents.length;
  if (n === 0) return shares;
  const base = Math.floor(total / n);
  const extra = total % n;
  const offset = createHash("sha256").update(key).digest().readUInt32BE(0) % n;
  agents.forEach((a, i) => shares.set(a.url, base + ((i - offset + n) % n < extra ? 1 : 0)));
  return shares;
}

/** Merges new conditions into old ones, keeping lastTransitionTime when the status did not change. */
export function mergeConditions(
  old: Condition[] | undefined,
  next: Array<Omit<Condition, "lastTransitionTime">>,
): Condition[] {
  const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  const out: Condition[] = (old ?? []).filter((c) => !next.some((n) => n.type === c.type));
  for (const n of next) {
    const o = old?.find((c) => c.type === n.type);
    out.push({ ...n, lastTransitionTime: o && o.status === n.status ? o.lastTransitionTime : now });
  }
  const order = [CONDITION_READY, CONDITION_IMAGE_PREPARED, CONDITION_WARM_POOL_READY];
  const rank = (t: string) => (order.includes(t) ? order.indexOf(t) : order.length);
  return out.sort((a, b) => rank(a.type) - rank(b.type));
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (typeof v === "object" && v !== null)
    return `{${Object.keys(v)
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  return JSON.stringify(v);
}

function sameStatus(a: LambdaFunctionStatus | undefined, b: LambdaFunctionStatus): boolean {
  return a !== undefined && canonical(a) === canonical(b);
}
