import { CoreV1Api, KubeConfig, type V1Pod } from "@kubernetes/client-node";
import type { Logger } from "@esb/common";
import { KubeInformer } from "@esb/common/kube-informer";
import type { AgentDiscovery } from "./agent-discovery.js";

/** Label of the agent DaemonSet's pods in the Helm chart. */
export const DEFAULT_AGENT_SELECTOR = "app.kubernetes.io/component=agent";

/**
 * The agent pods of the DaemonSet, watched with a read-only pod informer (the
 * shared {@link KubeInformer}) in the release namespace. A pod counts as an
 * agent when it is Running, Ready and has a pod IP; its URL is
 * `http://<pod IP>:<port>`.
 */
export class KubernetesAgentDiscovery implements AgentDiscovery {
  private informer: KubeInformer<V1Pod> | undefined;
  private readonly listeners = new Set<() => void>();
  private current: string[] = [];

  constructor(
    private readonly kubeConfig: KubeConfig,
    private readonly namespace: string,
    private readonly labelSelector: string,
    private readonly port: number,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    const api = this.kubeConfig.makeApiClient(CoreV1Api);
    const refresh = () => this.refresh();
    this.informer ??= new KubeInformer<V1Pod>(this.kubeConfig, {
      what: "agent pod",
      path: `/api/v1/namespaces/${this.namespace}/pods`,
      list: () => api.listNamespacedPod({ namespace: this.namespace, labelSelector: this.labelSelector }),
      labelSelector: this.labelSelector,
      logger: this.logger,
      onAdd: refresh,
      onUpdate: refresh,
      onDelete: refresh,
    });
    await this.informer.start();
    this.refresh();
  }

  async stop(): Promise<void> {
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
