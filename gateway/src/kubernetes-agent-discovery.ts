import {
  CoreV1Api,
  KubeConfig,
  makeInformer,
  type Informer,
  type ObjectCache,
  type V1Pod,
} from "@kubernetes/client-node";
import type { Logger } from "@esb/common";
import type { AgentDiscovery } from "./agent-discovery.js";

/** Label of the agent DaemonSet's pods in the Helm chart. */
export const DEFAULT_AGENT_SELECTOR = "app.kubernetes.io/component=agent";

/**
 * The agent pods of the DaemonSet, watched with a read-only pod informer in the
 * release namespace. A pod counts as an agent when it is Running, Ready and has
 * a pod IP; its URL is `http://<pod IP>:<port>`.
 */
export class KubernetesAgentDiscovery implements AgentDiscovery {
  private informer: (Informer<V1Pod> & ObjectCache<V1Pod>) | undefined;
  private readonly listeners = new Set<() => void>();
  private current: string[] = [];
  private restartTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly kubeConfig: KubeConfig,
    private readonly namespace: string,
    private readonly labelSelector: string,
    private readonly port: number,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    this.stopped = false;
    const api = this.kubeConfig.makeApiClient(CoreV1Api);
    const informer = makeInformer<V1Pod>(
      this.kubeConfig,
      `/api/v1/namespaces/${this.namespace}/pods`,
      () => api.listNamespacedPod({ namespace: this.namespace, labelSelector: this.labelSelector }),
      this.labelSelector,
    );
    this.informer = informer;
    const refresh = () => this.refresh();
    informer.on("add", refresh);
    informer.on("update", refresh);
    informer.on("delete", refresh);
    informer.on("error", (err: unknown) => {
      if (this.stopped) return;
      this.logger.warn({ err }, "agent pod watch failed; restarting");
      clearTimeout(this.restartTimer);
      this.restartTimer = setTimeout(() => {
        if (!this.stopped)
          informer
            .start()
            .catch((e: unknown) => this.logger.error({ err: e }, "restarting the agent pod informer failed"));
      }, 2000);
    });
    await informer.start();
    this.refresh();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    await this.informer?.stop();
  }

  agents(): string[] {
    return [...this.current];
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private refresh(): void {
    const pods = this.informer?.list() ?? [];
    const urls = pods
      .filter(
        (p) =>
          p.status?.phase === "Running" &&
          p.status.podIP &&
          !p.metadata?.deletionTimestamp &&
          (p.status.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True"),
      )
      .map((p) => {
        const ip = p.status!.podIP!;
        return `http://${ip.includes(":") ? `[${ip}]` : ip}:${this.port}`;
      })
      .sort();
    if (urls.join(",") === this.current.join(",")) return;
    this.current = urls;
    this.logger.info({ agents: urls }, "agents changed");
    for (const l of this.listeners) l();
  }
}
