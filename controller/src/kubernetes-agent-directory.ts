import { CoreV1Api, KubeConfig, type V1Pod } from "@kubernetes/client-node";
import type { Logger } from "@esb/common";
import { KubeInformer } from "@esb/common/kube-informer";
import type { AgentDirectory, AgentEndpoint, KnownAgent } from "./agent-directory.js";

/**
 * Agents are the pods of the agent DaemonSet, selected by label in one
 * namespace, reached at `http://<pod IP>:<port>`. `list()` holds the running
 * pods whose Ready condition is True; `known()` every pod that is not finished
 * (Succeeded/Failed), including pending, unready and terminating ones, since
 * their nodes may hold workers, except a terminating pod whose node already runs
 * a newer agent pod. The pods come from the shared {@link KubeInformer}; the
 * directory is synced once a list of the pods succeeded (a failed list, e.g.
 * while the API server is unreachable, leaves it unsynced and is retried with
 * backoff). Changes of either set, and becoming synced, notify listeners.
 */
export class KubernetesAgentDirectory implements AgentDirectory {
  private informer?: KubeInformer<V1Pod>;
  private readonly listeners: Array<() => void> = [];
  private last = "";
  private synced = false;

  constructor(
    private readonly kc: KubeConfig,
    private readonly namespace: string,
    private readonly labelSelector: string,
    private readonly port: number,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    const core = this.kc.makeApiClient(CoreV1Api);
    const changed = () => this.checkChanged();
    this.informer ??= new KubeInformer<V1Pod>(this.kc, {
      what: "agent pod",
      path: `/api/v1/namespaces/${this.namespace}/pods`,
      list: () => core.listNamespacedPod({ namespace: this.namespace, labelSelector: this.labelSelector }),
      labelSelector: this.labelSelector,
      logger: this.logger,
      onAdd: changed,
      onUpdate: changed,
      onDelete: changed,
      onSynced: () => {
        this.synced = true;
        this.logger.info({ agents: this.known() }, "agent directory synced");
        this.checkChanged(true);
      },
    });
    await this.informer.start();
  }

  async stop(): Promise<void> {
    await this.informer?.stop();
  }

  isSynced(): boolean {
    return this.synced;
  }

  list(): AgentEndpoint[] {
    return this.known()
      .filter((a) => a.ready)
      .map((a) => ({ name: a.name, url: a.url! }));
  }

  known(): KnownAgent[] {
    const pods = (this.informer?.list() ?? []).filter(
      (p) => p.status?.phase !== "Succeeded" && p.status?.phase !== "Failed",
    );
    // A terminating pod whose node already runs a newer agent pod is superseded: both
    // drive the node's one containerd, so the successor answers for the node's workers.
    const succeeded = new Set(
      pods.filter((p) => !p.metadata?.deletionTimestamp && p.spec?.nodeName).map((p) => p.spec!.nodeName!),
    );
    return pods
      .filter((p) => !(p.metadata?.deletionTimestamp && succeeded.has(p.spec?.nodeName ?? "")))
      .map((p) => this.toKnownAgent(p))
      .sort((a, b) => a.name.localeCompare(b.name) || (a.url ?? "").localeCompare(b.url ?? ""));
  }

  private toKnownAgent(p: V1Pod): KnownAgent {
    const ip = p.status?.podIP;
    const url = ip ? `http://${ip.includes(":") ? `[${ip}]` : ip}:${this.port}` : undefined;
    const name = p.spec?.nodeName || p.metadata?.name || ip || "unknown";
    const phase = p.status?.phase ?? "Pending";
    const podReady = (p.status?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
    const state = p.metadata?.deletionTimestamp
      ? "pod terminating"
      : phase !== "Running"
        ? `pod ${phase}`
        : !ip
          ? "pod has no IP"
          : !podReady
            ? "pod not Ready"
            : undefined;
    return state === undefined ? { name, url, ready: true } : { name, url, ready: false, state };
  }

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  private checkChanged(force = false): void {
    if (!this.synced) return;
    const now = JSON.stringify(this.known());
    if (now === this.last && !force) return;
    this.last = now;
    this.logger.info({ agents: this.list(), known: this.known().length }, "agents changed");
    for (const l of this.listeners) l();
  }
}
