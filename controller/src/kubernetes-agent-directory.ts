import {
  CoreV1Api,
  KubeConfig,
  makeInformer,
  type Informer,
  type ObjectCache,
  type V1Pod,
} from "@kubernetes/client-node";
import type { Logger } from "@esb/common";
import type { AgentDirectory, AgentEndpoint, KnownAgent } from "./agent-directory.js";

/**
 * Agents are the pods of the agent DaemonSet, selected by label in one
 * namespace, reached at `http://<pod IP>:<port>`. `list()` holds the running
 * pods whose Ready condition is True; `known()` every pod that is not finished
 * (Succeeded/Failed), including pending, unready and terminating ones, since
 * their nodes may hold workers, except a terminating pod whose node already runs
 * a newer agent pod. The directory is synced once a list of the pods
 * succeeded (a failed list, e.g. while the API server is unreachable, leaves it
 * unsynced and is retried). Changes of either set, and becoming synced, notify
 * listeners.
 */
export class KubernetesAgentDirectory implements AgentDirectory {
  private informer?: Informer<V1Pod> & ObjectCache<V1Pod>;
  private readonly listeners: Array<() => void> = [];
  private last = "";
  private stopped = false;
  private listed = false;
  private synced = false;
  private restartTimer?: NodeJS.Timeout;

  constructor(
    private readonly kc: KubeConfig,
    private readonly namespace: string,
    private readonly labelSelector: string,
    private readonly port: number,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    const core = this.kc.makeApiClient(CoreV1Api);
    const informer = makeInformer<V1Pod>(
      this.kc,
      `/api/v1/namespaces/${this.namespace}/pods`,
      async () => {
        const pods = await core.listNamespacedPod({
          namespace: this.namespace,
          labelSelector: this.labelSelector,
        });
        this.listed = true;
        return pods;
      },
      this.labelSelector,
    );
    const changed = () => this.checkChanged();
    informer.on("add", changed);
    informer.on("update", changed);
    informer.on("delete", changed);
    informer.on("error", (err) => {
      if (this.stopped) return;
      this.logger.warn(
        { err: String((err as Error)?.message ?? err), synced: this.synced },
        "agent pod watch failed; restarting in 2s",
      );
      clearTimeout(this.restartTimer);
      this.restartTimer = setTimeout(() => void this.run(), 2000);
      this.restartTimer.unref();
    });
    this.informer = informer;
    await this.run();
  }

  /** Starts (or restarts) the informer; marks the directory synced once a list succeeded. */
  private async run(): Promise<void> {
    if (this.stopped || !this.informer) return;
    try {
      await this.informer.start();
    } catch (err) {
      this.logger.warn({ err: String((err as Error)?.message ?? err) }, "agent pod watch start failed");
    }
    if (this.listed && !this.synced && !this.stopped) {
      this.synced = true;
      this.logger.info({ agents: this.known() }, "agent directory synced");
      this.checkChanged(true);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restartTimer);
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
