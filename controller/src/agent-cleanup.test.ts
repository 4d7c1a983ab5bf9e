// Deletion and orphan collection against the real kube-apiserver: a function's
// finalizer stays until every agent that exists has destroyed its workers (not
// while the agent directory is unsynced, not while an agent pod is listed but
// unreachable), and workers of functions that no longer exist are collected.
import { describe, it, expect, beforeAll, afterAll, afterEach } from "@jest/globals";
import {
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1PodCondition,
} from "@kubernetes/client-node";
import { createLogger, type LambdaFunction, type LambdaFunctionStatus } from "@esb/common";
import { StaticAgentDirectory, type AgentDirectory } from "./agent-directory.js";
import { Controller } from "./controller.js";
import type { FunctionSource } from "./function-source.js";
import { KubernetesAgentDirectory } from "./kubernetes-agent-directory.js";
import { KubernetesFunctionSource } from "./kubernetes-function-source.js";
import { LambdaFunctionReconciler } from "./lambda-function-reconciler.js";
import {
  createTestNamespace,
  deleteTestNamespace,
  eventually,
  installCrd,
  loadTestKubeConfig,
} from "./kube-test-support.js";
import { RecordingTestAgent } from "./recording-test-agent.js";

const logger = createLogger("controller-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });
const group = "esb.dev";
const version = "v1alpha1";
const plural = "lambdafunctions";
const AGENT_LABELS = { "app.kubernetes.io/name": "esb", "app.kubernetes.io/component": "agent" };
const AGENT_SELECTOR = "app.kubernetes.io/name=esb,app.kubernetes.io/component=agent";

describe("deleting a function waits for the agents; orphaned workers are collected", () => {
  let kc: KubeConfig;
  let api: CustomObjectsApi;
  let core: CoreV1Api;
  let namespace: string;
  let agent: RecordingTestAgent;
  const stops: Array<() => Promise<void>> = [];

  const get = (name: string) =>
    api.getNamespacedCustomObject({ group, version, namespace, plural, name }) as Promise<LambdaFunction>;
  const gone = (name: string) =>
    get(name).then(
      () => false,
      (err: { code?: number }) => err.code === 404,
    );
  const create = (name: string, provisionedConcurrency = 1) =>
    api.createNamespacedCustomObject({
      group,
      version,
      namespace,
      plural,
      body: {
        apiVersion: "esb.dev/v1alpha1",
        kind: "LambdaFunction",
        metadata: { name },
        spec: { runtime: "provided", code: { inline: { bootstrap: "#!/bin/sh\n" } }, provisionedConcurrency },
      },
    });
  const del = (name: string) => api.deleteNamespacedCustomObject({ group, version, namespace, plural, name });
  const condition = (status: LambdaFunctionStatus | undefined, type: string) =>
    status?.conditions?.find((c) => c.type === type);
  const newController = (
    agents: AgentDirectory,
    extra: Partial<ConstructorParameters<typeof Controller>[0]> = {},
  ) => {
    const c = new Controller({
      source: new KubernetesFunctionSource(kc, { namespace, logger }),
      agents,
      gatewayUrl: "http://gw:9000",
      baseRetryDelayMs: 100,
      maxRetryDelayMs: 500,
      reconciler: { waitPollMs: 300, callTimeoutMs: 2000 },
      orphanCollection: false,
      logger,
      ...extra,
    });
    stops.push(() => c.stop());
    return c;
  };
  /** An agent pod as the DaemonSet makes it, with the status a kubelet would write (the test apiserver has none). */
  const agentPod = async (name: string, node: string, ip: string, ready: boolean) => {
    await core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name, labels: AGENT_LABELS },
        spec: { nodeName: node, containers: [{ name: "agent", image: "esb/agent:test" }] },
      },
    });
    const conditions: V1PodCondition[] = [{ type: "Ready", status: ready ? "True" : "False" }];
    await core.patchNamespacedPodStatus(
      {
        name,
        namespace,
        body: { status: { phase: "Running", podIP: ip, podIPs: [{ ip }], conditions } },
      },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
  };
  const waitingCondition = async (name: string) => {
    const fn = await get(name);
    const c = condition(fn.status, "WorkersDestroyed");
    return c?.status === "False" && c.reason === "WaitingForAgents" ? fn : undefined;
  };

  beforeAll(async () => {
    kc = loadTestKubeConfig();
    await installCrd(kc);
    api = kc.makeApiClient(CustomObjectsApi);
    core = kc.makeApiClient(CoreV1Api);
    namespace = await createTestNamespace(kc, "esb-cleanup");
    agent = await new RecordingTestAgent().start();
  });

  afterEach(async () => {
    for (const stop of stops.splice(0).reverse()) await stop().catch(() => undefined);
  });

  afterAll(async () => {
    await agent?.stop();
    if (namespace) await deleteTestNamespace(kc, namespace);
  });

  it("keeps the finalizer of a deleted function while the agent directory has not synced, and removes it once it has", async () => {
    // A first controller prepares the function (finalizer added, workers on the agent).
    const first = newController(new StaticAgentDirectory([agent.url]));
    await first.start();
    await create("early", 2);
    await eventually("early Ready", async () => {
      const fn = await get("early");
      return condition(fn.status, "Ready")?.status === "True" ? fn : undefined;
    });
    await first.stop();

    // A new controller whose directory does not know the agents yet (the trial's new leader).
    const directory = new StaticAgentDirectory([], { synced: false });
    const second = newController(directory);
    await second.start();
    await del("early");
    const waiting = await eventually("WaitingForAgents condition", () => waitingCondition("early"));
    expect(waiting.metadata.deletionTimestamp).toBeDefined();
    expect(waiting.metadata.finalizers).toContain("esb.dev/workers");
    expect(condition(waiting.status, "WorkersDestroyed")?.message).toContain("agent directory not synced");
    expect(condition(waiting.status, "Ready")).toMatchObject({ status: "False", reason: "WaitingForAgents" });
    const events = await eventually("WaitingForAgents event", async () => {
      const list = await core.listNamespacedEvent({ namespace, fieldSelector: "involvedObject.name=early" });
      return list.items.some((e) => e.reason === "WaitingForAgents") ? list.items : undefined;
    });
    expect(events.find((e) => e.reason === "WaitingForAgents")?.type).toBe("Warning");
    // It keeps retrying (with backoff) and keeps the finalizer: nothing was destroyed, nothing released.
    await new Promise((r) => setTimeout(r, 1500));
    expect((await get("early")).metadata.finalizers).toContain("esb.dev/workers");
    expect(agent.callsFor("DestroyFunction", `${namespace}/early`)).toEqual([]);
    expect(agent.functions.has(`${namespace}/early`)).toBe(true);

    directory.setAgents([agent.url]);
    await eventually("early gone", () => gone("early"));
    expect(agent.callsFor("DestroyFunction", `${namespace}/early`).length).toBeGreaterThan(0);
    expect(agent.functions.has(`${namespace}/early`)).toBe(false);
  });

  it("counts every agent pod of the DaemonSet: one listed but unreachable keeps the finalizer until it has destroyed the workers", async () => {
    // Agent pods as the DaemonSet makes them; the test apiserver has no kubelet,
    // so their status is written here. node-a answers at 127.0.0.1:<port>;
    // node-b's pod runs but is not Ready, and nothing answers at 127.0.0.2:<port> yet.
    const port = Number(new URL(agent.url).port);
    await agentPod("agent-a", "node-a", "127.0.0.1", true);
    await agentPod("agent-b", "node-b", "127.0.0.2", false);
    const directory = new KubernetesAgentDirectory(kc, namespace, AGENT_SELECTOR, port, logger);
    const controller = newController(directory);
    await controller.start();
    expect(directory.isSynced()).toBe(true);
    // Functions are placed on ready agents only; both pods are known.
    expect(directory.list()).toEqual([{ name: "node-a", url: `http://127.0.0.1:${port}` }]);
    expect(directory.known()).toEqual([
      { name: "node-a", url: `http://127.0.0.1:${port}`, ready: true },
      { name: "node-b", url: `http://127.0.0.2:${port}`, ready: false, state: "pod not Ready" },
    ]);

    await create("spread", 1);
    await eventually("spread Ready", async () => {
      const fn = await get("spread");
      return condition(fn.status, "Ready")?.status === "True" ? fn : undefined;
    });
    await del("spread");
    const waiting = await eventually("WaitingForAgents condition", () => waitingCondition("spread"));
    const message = condition(waiting.status, "WorkersDestroyed")?.message ?? "";
    expect(message).toMatch(/node-b \(\w+: .*ECONNREFUSED/);
    expect(message).toContain("done on node-a");
    expect(waiting.metadata.finalizers).toContain("esb.dev/workers");

    // node-b's agent comes up: its DestroyFunction succeeds and the finalizer goes.
    const agentB = await new RecordingTestAgent().start({ host: "127.0.0.2", port });
    stops.push(() => agentB.stop());
    await eventually("spread gone", () => gone("spread"), 30_000);
    expect(agentB.callsFor("DestroyFunction", `${namespace}/spread`).length).toBeGreaterThan(0);
    await core.deleteNamespacedPod({ name: "agent-a", namespace, gracePeriodSeconds: 0 });
    await core.deleteNamespacedPod({ name: "agent-b", namespace, gracePeriodSeconds: 0 });
  });

  it("drops a terminating agent pod from the agents to wait for once its node runs a successor", async () => {
    const port = Number(new URL(agent.url).port);
    await agentPod("agent-old", "node-c", "127.0.0.3", true);
    const directory = new KubernetesAgentDirectory(kc, namespace, AGENT_SELECTOR, port, logger);
    await directory.start();
    stops.push(() => directory.stop());
    // Without a kubelet a deleted pod stays terminating for its grace period.
    await core.deleteNamespacedPod({ name: "agent-old", namespace, gracePeriodSeconds: 300 });
    await eventually("agent-old terminating", async () =>
      directory.known().find((a) => a.state === "pod terminating"),
    );
    await agentPod("agent-new", "node-c", "127.0.0.1", true);
    const known = await eventually("only the successor", async () => {
      const k = directory.known();
      return k.length === 1 && k[0].ready ? k : undefined;
    });
    expect(known).toEqual([{ name: "node-c", url: `http://127.0.0.1:${port}`, ready: true }]);
    for (const name of ["agent-old", "agent-new"])
      await core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 });
  });

  it("stays unsynced while the agent pods cannot be listed", async () => {
    const unreachable = new KubeConfig();
    unreachable.loadFromOptions({
      clusters: [{ name: "c", server: "http://127.0.0.1:1", skipTLSVerify: true }],
      users: [{ name: "u" }],
      contexts: [{ name: "x", cluster: "c", user: "u" }],
      currentContext: "x",
    });
    const directory = new KubernetesAgentDirectory(unreachable, namespace, AGENT_SELECTOR, 50051, logger);
    stops.push(() => directory.stop());
    await directory.start();
    expect(directory.isSynced()).toBe(false);
    expect(directory.known()).toEqual([]);
  });

  it("destroys workers of functions that no longer exist after the grace period, and only those", async () => {
    await create("alive", 1);
    const orphan = `${namespace}/ghost`;
    const elsewhere = "another-namespace/ghost";
    agent.addFunction(orphan, 2);
    agent.addFunction(elsewhere, 1);
    const controller = newController(new StaticAgentDirectory([agent.url]), {
      // The grace is long enough for the check right after the first sweep on a loaded machine.
      orphanCollection: { intervalMs: 200, graceMs: 3000 },
    });
    const listedBefore = agent.calls.filter((c) => c.method === "ListWorkers").length;
    await controller.start();
    await eventually(
      "a sweep",
      () => agent.calls.filter((c) => c.method === "ListWorkers").length > listedBefore,
    );
    // Seen once, not yet destroyed: the grace period protects functions the cache has not seen yet.
    expect(agent.callsFor("DestroyFunction", orphan)).toEqual([]);
    await eventually("alive Ready", async () => {
      const fn = await get("alive");
      return condition(fn.status, "Ready")?.status === "True" ? fn : undefined;
    });
    await eventually("ghost collected", () => !agent.functions.has(orphan), 10_000);
    expect(agent.functions.has(`${namespace}/alive`)).toBe(true);
    // Functions of namespaces this controller does not watch are not its to judge.
    expect(agent.functions.has(elsewhere)).toBe(true);
    expect(agent.callsFor("DestroyFunction", elsewhere)).toEqual([]);
    expect(agent.callsFor("DestroyFunction", `${namespace}/alive`)).toEqual([]);
    agent.functions.delete(elsewhere);
    await del("alive");
    await eventually("alive gone", () => gone("alive"));
  });

  it("collects no orphans while the function source has not synced", async () => {
    const source: FunctionSource = {
      mode: "kubernetes",
      start: async () => undefined,
      stop: async () => undefined,
      keys: () => [],
      get: () => undefined,
      isSynced: () => false,
      watches: () => true,
      ensureFinalizer: async (fn) => fn,
      removeFinalizer: async () => undefined,
      updateStatus: async () => undefined,
      readConfigMap: async () => undefined,
      recordEvent: async () => undefined,
    };
    const key = `${namespace}/unsynced-ghost`;
    agent.addFunction(key, 1);
    const reconciler = new LambdaFunctionReconciler({
      source,
      agents: new StaticAgentDirectory([agent.url]),
      gatewayUrl: "http://gw:9000",
      orphanGraceMs: 0,
      logger,
    });
    const listed = agent.calls.filter((c) => c.method === "ListWorkers").length;
    for (let i = 0; i < 3; i++) expect(await reconciler.collectOrphans()).toEqual([]);
    expect(agent.calls.filter((c) => c.method === "ListWorkers").length).toBe(listed);
    expect(agent.functions.has(key)).toBe(true);
    agent.functions.delete(key);
  });
});
