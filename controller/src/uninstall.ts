import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { agentTransport, type AgentTokenSource } from "@esb/common/agent-credentials";
import {
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
} from "@kubernetes/client-node";
import {
  LAMBDA_FUNCTION_GROUP,
  LAMBDA_FUNCTION_PLURAL,
  LAMBDA_FUNCTION_VERSION,
  type LambdaFunction,
  type Logger,
} from "@esb/common";
import { AgentService } from "@esb/common/gen/esb/agent/v1/agent_pb";
import type { AgentDirectory, KnownAgent } from "./agent-directory.js";
import { WORKERS_FINALIZER, functionKey, parseFunctionKey } from "./function-source.js";
import { KubernetesFunctionSource, isNotFound } from "./kubernetes-function-source.js";

/** Options of {@link Uninstaller}. */
export interface UninstallOptions {
  kubeConfig: KubeConfig;
  /** Namespace whose LambdaFunctions are ESB's (the controller's WATCH_NAMESPACE); empty: all namespaces. */
  watchNamespace: string;
  /** The agents (the agent DaemonSet's pods, or fixed URLs). Started and stopped by the uninstaller. */
  agents: AgentDirectory;
  /**
   * The controllers' Deployment, scaled to 0 replicas first; the uninstaller
   * then waits until its pods are gone, so that no controller re-adds a
   * finalizer or prepares a function again while ESB is torn down.
   */
  controllerDeployment?: { namespace: string; name: string };
  /**
   * Bound on stopping the controllers and reaching every agent. When it is
   * over, finalizers are removed anyway and the report names the agents whose
   * workers may remain. Default 120 s.
   */
  timeoutMs?: number;
  /** Timeout of one agent call. Default 10 s. */
  callTimeoutMs?: number;
  /** Pause between attempts (agents not reached yet, controller pods still there). Default 1 s. */
  pollMs?: number;
  /** `reportingInstance` of the Events recorded on LambdaFunctions (the pod name). */
  instance?: string;
  /** The controller's bearer token for agents. */
  agentToken?: AgentTokenSource;
  logger: Logger;
}

/** Outcome on one agent. */
export interface UninstallAgentResult {
  agent: string;
  url?: string;
  /** True when every function's workers were destroyed there. */
  cleaned: boolean;
  destroyedWorkers: number;
  /** Functions whose DestroyFunction was called there (LambdaFunctions and the agent's own). */
  functions: string[];
  /** Why it was not cleaned (unreachable, pending pod, failed calls). */
  reason?: string;
}

/** What {@link Uninstaller.run} did. */
export interface UninstallReport {
  /**
   * `stopped`: the controller Deployment is at 0 and its pods are gone;
   * `not-found`: no such Deployment; `skipped`: none named; `failed`: it could
   * not be scaled (see warnings); `timeout`: its pods were still there at the deadline.
   */
  controllers: "stopped" | "not-found" | "skipped" | "failed" | "timeout";
  /** Controller pods still present at the deadline. */
  controllerPodsLeft: string[];
  /** Whether the agent directory learned which agents exist before the deadline. */
  agentsSynced: boolean;
  /** LambdaFunctions found (`namespace/name`). */
  functions: string[];
  agents: UninstallAgentResult[];
  /** Functions an agent had workers of but no LambdaFunction exists for (collected too). */
  orphanFunctions: string[];
  /** LambdaFunctions whose `esb.dev/workers` finalizer was removed. */
  finalizersRemoved: string[];
  /** LambdaFunctions whose finalizer could not be removed, with the error. */
  finalizerFailures: Array<{ function: string; error: string }>;
  /** Human-readable warnings: what may remain and why. */
  warnings: string[];
  /** True when every agent was cleaned and every finalizer removed. */
  complete: boolean;
}

/**
 * Tears ESB down before its release is deleted (`esb-controller uninstall`,
 * run by the chart's pre-delete hook): stops the controllers (scales their
 * Deployment to 0 and waits for their pods to be gone), destroys the workers of
 * every LambdaFunction, and of any other function an agent still runs, on
 * every agent, then removes ESB's finalizer from every LambdaFunction. The
 * LambdaFunctions themselves stay (they are the user's; a later install
 * reconciles them again). Agents that cannot be reached within the timeout are
 * reported and do not block the rest: the finalizers are removed anyway.
 */
export class Uninstaller {
  private readonly log: Logger;
  private readonly custom: CustomObjectsApi;
  private readonly clients = new Map<string, Client<typeof AgentService>>();

  constructor(private readonly options: UninstallOptions) {
    this.log = options.logger;
    this.custom = options.kubeConfig.makeApiClient(CustomObjectsApi);
  }

  async run(): Promise<UninstallReport> {
    const deadline = Date.now() + (this.options.timeoutMs ?? 120_000);
    const report: UninstallReport = {
      controllers: "skipped",
      controllerPodsLeft: [],
      agentsSynced: false,
      functions: [],
      agents: [],
      orphanFunctions: [],
      finalizersRemoved: [],
      finalizerFailures: [],
      warnings: [],
      complete: false,
    };
    if (this.options.controllerDeployment) await this.stopControllers(deadline, report);
    else
      report.warnings.push(
        "no controller Deployment given: a running controller may add its finalizer again or restart workers",
      );

    const { agents } = this.options;
    try {
      await agents.start();
      while (!agents.isSynced() && Date.now() < deadline) await sleep(this.pollMs());
      report.agentsSynced = agents.isSynced();
      report.functions = (await this.listFunctions()).map(functionKey).sort();
      this.log.info(
        { functions: report.functions.length, agents: agents.known().length, synced: report.agentsSynced },
        "uninstall: destroying workers on every agent",
      );
      await this.destroyEverywhere(deadline, report);
    } finally {
      await agents.stop().catch(() => undefined);
    }
    await this.removeFinalizers(report);

    if (!report.agentsSynced)
      report.warnings.push(
        "the agents could not be listed before the timeout: workers may remain on every node",
      );
    for (const a of report.agents.filter((x) => !x.cleaned))
      report.warnings.push(
        `agent ${a.agent} not reached (${a.reason}): workers of ${a.functions.length ? a.functions.join(", ") : "any ESB function"} may remain on that node`,
      );
    report.complete =
      report.agentsSynced &&
      report.agents.every((a) => a.cleaned) &&
      report.finalizerFailures.length === 0 &&
      report.controllers !== "timeout" &&
      report.controllers !== "failed";
    return report;
  }

  private pollMs(): number {
    return this.options.pollMs ?? 1000;
  }

  /** Scales the controller Deployment to 0 and waits until its pods are gone (until the deadline). */
  private async stopControllers(deadline: number, report: UninstallReport): Promise<void> {
    const { namespace, name } = this.options.controllerDeployment!;
    const apps = this.options.kubeConfig.makeApiClient(AppsV1Api);
    const core = this.options.kubeConfig.makeApiClient(CoreV1Api);
    let selector: string;
    try {
      const d = await apps.readNamespacedDeployment({ namespace, name });
      selector = Object.entries(d.spec?.selector?.matchLabels ?? {})
        .map(([k, v]) => `${k}=${v}`)
        .join(",");
      if ((d.spec?.replicas ?? 1) !== 0)
        await apps.patchNamespacedDeploymentScale(
          { namespace, name, body: { spec: { replicas: 0 } } },
          setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
        );
      this.log.info({ deployment: `${namespace}/${name}` }, "uninstall: controller Deployment scaled to 0");
    } catch (err) {
      if (isNotFound(err)) {
        report.controllers = "not-found";
        return;
      }
      // E.g. RBAC without the Deployment rules (rbac.create=false): go on, and say what that risks.
      report.controllers = "failed";
      report.warnings.push(
        `could not scale the controller Deployment ${namespace}/${name} to 0 (${describe(err)}): a running controller may add its finalizer again or restart workers`,
      );
      return;
    }
    // The Deployment's pods are those of its ReplicaSets (`<name>-<hash>`); a
    // terminating leader may still finish a reconcile, so wait until they are gone.
    for (;;) {
      const pods = await core.listNamespacedPod({ namespace, labelSelector: selector || undefined });
      const left = pods.items
        .filter((p) =>
          (p.metadata?.ownerReferences ?? []).some(
            (o) => o.kind === "ReplicaSet" && o.name.startsWith(`${name}-`),
          ),
        )
        .map((p) => p.metadata?.name ?? "");
      if (left.length === 0) {
        report.controllers = "stopped";
        return;
      }
      if (Date.now() >= deadline) {
        report.controllers = "timeout";
        report.controllerPodsLeft = left;
        report.warnings.push(
          `controller pods still present at the timeout (${left.join(", ")}): they may add the finalizer again`,
        );
        return;
      }
      await sleep(this.pollMs());
    }
  }

  private async listFunctions(): Promise<LambdaFunction[]> {
    const ns = this.options.watchNamespace;
    const common = {
      group: LAMBDA_FUNCTION_GROUP,
      version: LAMBDA_FUNCTION_VERSION,
      plural: LAMBDA_FUNCTION_PLURAL,
    };
    const list = (
      ns
        ? await this.custom.listNamespacedCustomObject({ ...common, namespace: ns })
        : await this.custom.listClusterCustomObject(common)
    ) as { items: LambdaFunction[] };
    return list.items;
  }

  private client(url: string): Client<typeof AgentService> {
    let c = this.clients.get(url);
    if (!c) {
      c = createClient(AgentService, agentTransport(url, this.options.agentToken));
      this.clients.set(url, c);
    }
    return c;
  }

  private watches(namespace: string): boolean {
    return !this.options.watchNamespace || this.options.watchNamespace === namespace;
  }

  /**
   * Rounds until every known agent is cleaned or the deadline passes: on each
   * reachable agent, DestroyFunction for every LambdaFunction and for every
   * other function (of a watched namespace) the agent lists workers of.
   */
  private async destroyEverywhere(deadline: number, report: UninstallReport): Promise<void> {
    const results = new Map<string, UninstallAgentResult>();
    const orphans = new Set<string>();
    const id = (a: KnownAgent) => `${a.name}|${a.url ?? ""}`;
    for (;;) {
      const known = this.options.agents.known();
      for (const a of known)
        if (!results.has(id(a)))
          results.set(id(a), {
            agent: a.name,
            url: a.url,
            cleaned: false,
            destroyedWorkers: 0,
            functions: [],
          });
      await Promise.all(
        known
          .filter((a) => !results.get(id(a))!.cleaned)
          .map(async (a) => {
            const r = results.get(id(a))!;
            if (!a.url) {
              r.reason = a.state ?? "no address";
              return;
            }
            // Another entry (e.g. an old and a new pod on one host-network node) may share the address.
            const same = [...results.values()].find((x) => x !== r && x.url === a.url && x.cleaned);
            if (same) {
              Object.assign(r, { cleaned: true, functions: same.functions, reason: undefined });
              return;
            }
            await this.cleanAgent(a.url, report.functions, orphans, r);
          }),
      );
      const unclean = known.filter((a) => !results.get(id(a))!.cleaned);
      if ((this.options.agents.isSynced() && unclean.length === 0) || Date.now() >= deadline) break;
      await sleep(this.pollMs());
    }
    report.agents = [...results.values()].sort((a, b) => a.agent.localeCompare(b.agent));
    report.orphanFunctions = [...orphans].filter((k) => !report.functions.includes(k)).sort();
  }

  /** Destroys every function's workers on one agent; marks `r` cleaned when every call succeeded. */
  private async cleanAgent(
    url: string,
    functions: string[],
    orphans: Set<string>,
    r: UninstallAgentResult,
  ): Promise<void> {
    const timeoutMs = this.options.callTimeoutMs ?? 10_000;
    const client = this.client(url);
    let keys: string[];
    try {
      const listed = await client.listWorkers({}, { timeoutMs });
      const own = listed.workers.flatMap((w) =>
        w.function?.name && this.watches(w.function.namespace)
          ? [`${w.function.namespace}/${w.function.name}`]
          : [],
      );
      for (const k of own) if (!functions.includes(k)) orphans.add(k);
      keys = [...new Set([...functions, ...own])].sort();
    } catch (err) {
      r.reason = describe(err);
      return;
    }
    const failures: string[] = [];
    let destroyed = 0;
    // A few calls at a time: an agent serialises per function, not globally.
    for (let i = 0; i < keys.length; i += 16) {
      await Promise.all(
        keys.slice(i, i + 16).map(async (key) => {
          try {
            const res = await client.destroyFunction({ function: parseFunctionKey(key) }, { timeoutMs });
            destroyed += res.destroyedWorkers;
          } catch (err) {
            failures.push(`${key}: ${describe(err)}`);
          }
        }),
      );
    }
    r.destroyedWorkers += destroyed;
    r.functions = keys;
    if (failures.length === 0) {
      r.cleaned = true;
      r.reason = undefined;
      this.log.info(
        { agent: r.agent, destroyed: r.destroyedWorkers, functions: keys.length },
        "uninstall: workers destroyed on agent",
      );
    } else {
      r.reason = `DestroyFunction failed for ${failures.join("; ")}`;
    }
  }

  /** Removes ESB's finalizer from every LambdaFunction (listed again: some may have appeared meanwhile). */
  private async removeFinalizers(report: UninstallReport): Promise<void> {
    const source = new KubernetesFunctionSource(this.options.kubeConfig, {
      namespace: this.options.watchNamespace,
      instance: this.options.instance,
      logger: this.log,
    });
    const cleanedOn = report.agents.filter((a) => a.cleaned).length;
    for (const fn of await this.listFunctions()) {
      const key = functionKey(fn);
      if (!report.functions.includes(key)) report.functions.push(key);
      if (!fn.metadata.finalizers?.includes(WORKERS_FINALIZER)) continue;
      let lastError: unknown;
      for (let attempt = 0; attempt < 5; attempt++) {
        try {
          await source.removeFinalizer(fn);
          lastError = undefined;
          break;
        } catch (err) {
          // A concurrent change of the finalizer list fails the patch's `test`: read again and retry.
          lastError = err;
          await sleep(200 * (attempt + 1));
        }
      }
      if (lastError !== undefined) {
        report.finalizerFailures.push({ function: key, error: describe(lastError) });
        continue;
      }
      report.finalizersRemoved.push(key);
      await source.recordEvent(
        fn,
        "Normal",
        "Uninstalled",
        `ESB is being uninstalled: workers destroyed on ${cleanedOn} of ${report.agents.length} nodes; finalizer ${WORKERS_FINALIZER} removed (the function stays and is reconciled again by a later install)`,
      );
    }
    report.functions.sort();
  }
}

function describe(err: unknown): string {
  if (err instanceof ConnectError) return `${Code[err.code]}: ${err.rawMessage}`;
  const e = err as { code?: number; body?: unknown; message?: string };
  if (typeof e?.code === "number" && e.body !== undefined) {
    const body = typeof e.body === "string" ? e.body : JSON.stringify(e.body);
    return `HTTP ${e.code}: ${body.slice(0, 300)}`;
  }
  return e?.message ?? String(err);
}

/** The report as lines for people (the hook Job's log). */
export function formatUninstallReport(report: UninstallReport): string {
  const lines: string[] = [];
  lines.push(
    `controllers: ${report.controllers}${report.controllerPodsLeft.length ? ` (left: ${report.controllerPodsLeft.join(", ")})` : ""}`,
  );
  lines.push(`agents: ${report.agentsSynced ? "listed" : "NOT listed before the timeout"}`);
  for (const a of report.agents)
    lines.push(
      a.cleaned
        ? `  ${a.agent}: ${a.destroyedWorkers} workers destroyed (${a.functions.length} functions)`
        : `  ${a.agent}: NOT cleaned: ${a.reason ?? "not reached"}`,
    );
  lines.push(`LambdaFunctions: ${report.functions.length}`);
  if (report.orphanFunctions.length)
    lines.push(`functions without a LambdaFunction, collected too: ${report.orphanFunctions.join(", ")}`);
  lines.push(`finalizer ${WORKERS_FINALIZER} removed from: ${report.finalizersRemoved.join(", ") || "none"}`);
  for (const f of report.finalizerFailures)
    lines.push(`  could NOT remove it from ${f.function}: ${f.error}`);
  for (const w of report.warnings) lines.push(`warning: ${w}`);
  lines.push(report.complete ? "uninstall: complete" : "uninstall: finished with warnings (see above)");
  return `${lines.join("\n")}\n`;
}
