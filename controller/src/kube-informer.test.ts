import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { createServer, connect, type Server, type Socket } from "node:net";
import { CoreV1Api, KubeConfig, type V1ConfigMap } from "@kubernetes/client-node";
import { createLogger } from "@esb/common";
import { KubeInformer, type KubeInformerOptions } from "@esb/common/kube-informer";
import {
  createTestNamespace,
  deleteTestNamespace,
  eventually,
  loadTestKubeConfig,
} from "./kube-test-support.js";

// The shared informer wrapper against the real kube-apiserver, reached through a
// TCP relay that the tests break in the ways networks do: connections cut,
// connections refused for a while, and connections that stay open but carry nothing.

const logger = createLogger("kube-informer-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });

/** A TCP relay in front of the API server whose connections can be cut, refused or frozen. */
class FaultyProxy {
  private server?: Server;
  private readonly pairs = new Set<{ client: Socket; upstream: Socket; frozen: boolean }>();
  /** New connections are closed at once (the API server looks down). */
  refusing = false;

  async start(target: URL): Promise<string> {
    this.server = createServer((client) => {
      client.on("error", () => undefined);
      if (this.refusing) return void client.destroy();
      const upstream = connect(Number(target.port), target.hostname);
      upstream.on("error", () => undefined);
      const pair = { client, upstream, frozen: false };
      this.pairs.add(pair);
      client.on("data", (d) => void (pair.frozen || upstream.write(d)));
      upstream.on("data", (d) => void (pair.frozen || client.write(d)));
      client.on("close", () => (upstream.destroy(), this.pairs.delete(pair)));
      upstream.on("close", () => client.destroy());
    });
    await new Promise<void>((r) => this.server!.listen(0, "127.0.0.1", r));
    const { port } = this.server.address() as { port: number };
    return `https://127.0.0.1:${port}`;
  }

  /** Breaks every open connection. */
  cut(): void {
    for (const p of this.pairs) p.client.destroy();
  }

  /** Open connections stay open but forward nothing from now on; new ones work. */
  freeze(): void {
    for (const p of this.pairs) p.frozen = true;
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise((r) => this.server?.close(r));
  }
}

/** A copy of `kc` that reaches the API server at `server`. */
function kubeConfigVia(kc: KubeConfig, server: string): KubeConfig {
  const copy = new KubeConfig();
  copy.loadFromString(kc.exportConfig());
  (copy.getCurrentCluster() as { server: string }).server = server;
  return copy;
}

describe("KubeInformer against the real kube-apiserver", () => {
  let kc: KubeConfig;
  let core: CoreV1Api;
  let namespace: string;
  const stops: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    kc = loadTestKubeConfig();
    core = kc.makeApiClient(CoreV1Api);
    namespace = await createTestNamespace(kc, "esb-informer");
  });

  afterAll(async () => {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    await deleteTestNamespace(kc, namespace);
  });

  /** An informer on the ConfigMaps labelled `set=<set>`, through a fresh proxy, recording its callbacks. */
  async function informerViaProxy(set: string, options: Partial<KubeInformerOptions<V1ConfigMap>> = {}) {
    const proxy = new FaultyProxy();
    stops.push(() => proxy.stop());
    const via = kubeConfigVia(kc, await proxy.start(new URL(kc.getCurrentCluster()!.server)));
    const api = via.makeApiClient(CoreV1Api);
    const seen: string[] = [];
    const labelSelector = `set=${set}`;
    const informer = new KubeInformer<V1ConfigMap>(via, {
      what: "ConfigMap",
      path: `/api/v1/namespaces/${namespace}/configmaps`,
      list: () => api.listNamespacedConfigMap({ namespace, labelSelector }),
      labelSelector,
      logger,
      initialBackoffMs: 100,
      maxBackoffMs: 500,
      onAdd: (cm) => seen.push(`add ${cm.metadata?.name}`),
      onUpdate: (cm) => seen.push(`update ${cm.metadata?.name} ${cm.data?.v}`),
      onDelete: (cm) => seen.push(`delete ${cm.metadata?.name}`),
      ...options,
    });
    stops.push(() => informer.stop());
    return { proxy, informer, seen };
  }

  const put = (set: string, name: string, v: string) =>
    core.createNamespacedConfigMap({
      namespace,
      body: { metadata: { name, labels: { set } }, data: { v } },
    });
  const set = (name: string, v: string) =>
    core.patchNamespacedConfigMap({
      name,
      namespace,
      body: [{ op: "replace", path: "/data/v", value: v }],
    });
  const value = (informer: KubeInformer<V1ConfigMap>, name: string) => informer.get(name, namespace)?.data?.v;

  it("lists, is synced, calls typed callbacks, and recovers when its watch connection is cut", async () => {
    await put("cut", "before", "1");
    const { proxy, informer, seen } = await informerViaProxy("cut", { stallTimeoutMs: 120_000 });
    expect(informer.synced).toBe(false);
    await informer.start();
    expect(informer.synced).toBe(true);
    expect(informer.state).toBe("watching");
    expect(seen).toEqual(["add before"]);

    proxy.cut();
    await put("cut", "after", "2");
    await eventually("the change after the cut", () => value(informer, "after") === "2", 15_000);
    await set("before", "3");
    await core.deleteNamespacedConfigMap({ name: "after", namespace });
    await eventually("update and delete", () => seen.includes("delete after"), 15_000);
    expect(seen).toEqual(["add before", "add after", "update before 3", "delete after"]);
  });

  it("keeps retrying while the API server is unreachable, then sees what changed meanwhile", async () => {
    await put("down", "kept", "1");
    await put("down", "removed", "1");
    const { proxy, informer } = await informerViaProxy("down", { stallTimeoutMs: 120_000 });
    await informer.start();
    expect(informer.list().length).toBe(2);

    proxy.refusing = true;
    proxy.cut();
    await eventually("failing", () => informer.state === "failing", 10_000);
    const restartsBefore = informer.restarts;
    await set("kept", "2");
    await core.deleteNamespacedConfigMap({ name: "removed", namespace });
    await put("down", "added", "1");
    // Several backoff periods (100–500 ms) with every restart failing.
    await new Promise((r) => setTimeout(r, 3000));
    expect(informer.restarts - restartsBefore).toBeGreaterThanOrEqual(3);
    expect(informer.state).toBe("failing");
    // The cache keeps its last content meanwhile.
    expect(value(informer, "kept")).toBe("1");

    proxy.refusing = false;
    await eventually(
      "back and up to date",
      () => informer.state === "watching" && value(informer, "added") === "1",
      15_000,
    );
    await eventually(
      "the update and the delete",
      () => value(informer, "kept") === "2" && !informer.get("removed", namespace),
      15_000,
    );
    expect(informer.synced).toBe(true);
  });

  it("restarts a watch that stays open but delivers nothing", async () => {
    const { proxy, informer } = await informerViaProxy("stall", { stallTimeoutMs: 1500 });
    await informer.start();
    expect(informer.synced).toBe(true);
    proxy.freeze();
    const restartsBefore = informer.restarts;
    await put("stall", "late", "1");
    // client-node's own watch gives up on a silent connection only after 30 s.
    await eventually(
      "the change behind the frozen connection",
      () => value(informer, "late") === "1",
      10_000,
    );
    expect(informer.restarts).toBeGreaterThan(restartsBefore);
  });

  it("stays unsynced, and resolves its start, while nothing answers", async () => {
    const unreachable = new KubeConfig();
    unreachable.loadFromOptions({
      clusters: [{ name: "c", server: "http://127.0.0.1:1", skipTLSVerify: true }],
      users: [{ name: "u" }],
      contexts: [{ name: "x", cluster: "c", user: "u" }],
      currentContext: "x",
    });
    const api = unreachable.makeApiClient(CoreV1Api);
    const informer = new KubeInformer<V1ConfigMap>(unreachable, {
      what: "ConfigMap",
      path: `/api/v1/namespaces/${namespace}/configmaps`,
      list: () => api.listNamespacedConfigMap({ namespace }),
      logger,
      initialBackoffMs: 50,
    });
    stops.push(() => informer.stop());
    await informer.start();
    expect(informer.synced).toBe(false);
    expect(informer.state).toBe("failing");
    await eventually("retried", () => informer.restarts >= 2, 5_000);
    await informer.stop();
    const after = informer.restarts;
    await new Promise((r) => setTimeout(r, 300));
    expect(informer.restarts).toBe(after);
  });
});
