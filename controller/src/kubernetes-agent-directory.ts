import {
  CoreV1Api,
  KubeConfig,
  makeInformer,
  type Informer,
  type ObjectCache,
  type V1Pod,
} from "@kubernetes/client-node";
import type { Logger } from "@esb/common";
import type { AgentDirectory, AgentEndpoint } from "./agent-directory.js";

/**
 * Agents are the pods of the agent DaemonSet, selected by label in one
 * namespace, reached at `http://<pod IP>:<port>`. Only running pods whose Ready
 * condition is True count. Pod changes that alter the set notify listeners.
 */
export class KubernetesAgentDirectory implements AgentDirectory {
  private informer?: Informer<V1Pod> & ObjectCache<V1Pod>;
  private readonly listeners: Array<() => void> = [];
  private last = "";
  private stopped = false;

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
      () => core.listNamespacedPod({ namespace: this.namespace, labelSelector: this.labelSelector }),
      this.labelSelector,
    );
    const changed = () => this.checkChanged();
    informer.on("add", changed);
    informer.on("update", changed);
    informer.on("delete", changed);
    informer.on("error", (err) => {
      if (this.stopped) return;
      this.logger.warn({ err }, "agent pod watch failed; restarting");
      setTimeout(() => void informer.start().catch(() => undefined), 2000).unref();
    });
    this.informer = informer;
    await informer.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.informer?.stop();
  }

  list(): AgentEndpoint[] {
    const pods = this.informer?.list() ?? [];
    return pods
      .filter(
        (p) =>
          p.status?.phase === "Running" &&
          !p.metadata?.deletionTimestamp &&
          p.status.podIP &&
          (p.status.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True"),
      )
      .map((p) => ({
        name: p.spec?.nodeName || p.metadata?.name || p.status!.podIP!,
        url: `http://${p.status!.podIP!.includes(":") ? `[${p.status!.podIP}]` : p.status!.podIP}:${this.port}`,
      }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  private checkChanged(): void {
    const now = JSON.stringify(this.list());
    if (now === this.last) return;
    this.last = now;
    this.logger.info({ agents: this.list() }, "agents changed");
    for (const l of this.listeners) l();
  }
}
