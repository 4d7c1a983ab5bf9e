import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { CoreV1Api, CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { createLogger, type LambdaFunction } from "@esb/common";
import { StaticAgentDirectory } from "./agent-directory.js";
import { Controller } from "./controller.js";
import { KubernetesFunctionSource } from "./kubernetes-function-source.js";
import {
  apiErrorMessage,
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

// The agent here is RecordingTestAgent, a stand-in that records AgentService
// calls; end-to-end tests with the real agent and containerd live in test/.
describe("LambdaFunctionReconciler against the real kube-apiserver", () => {
  let kc: KubeConfig;
  let api: CustomObjectsApi;
  let core: CoreV1Api;
  let namespace: string;
  let agent: RecordingTestAgent;
  let controller: Controller;

  const get = (name: string) =>
    api.getNamespacedCustomObject({ group, version, namespace, plural, name }) as Promise<LambdaFunction>;
  const readyWith = (generation: number) => async (name: string) => {
    const fn = await get(name);
    const ready = fn.status?.conditions?.find((c) => c.type === "Ready");
    return ready?.status === "True" &&
      ready.observedGeneration === generation &&
      fn.status?.observedGeneration === generation
      ? fn
      : undefined;
  };

  beforeAll(async () => {
    kc = loadTestKubeConfig();
    await installCrd(kc);
    api = kc.makeApiClient(CustomObjectsApi);
    core = kc.makeApiClient(CoreV1Api);
    namespace = await createTestNamespace(kc, "esb-rec");
    agent = await new RecordingTestAgent().start();
    controller = new Controller({
      source: new KubernetesFunctionSource(kc, { namespace, logger }),
      agents: new StaticAgentDirectory([agent.url]),
      gatewayUrl: "http://gateway.test:9000",
      gatewayNamespace: "default",
      // The gateway serves this namespace's HTTP routes (RoutesAccepted is reported against it).
      routeNamespaces: [namespace],
      baseRetryDelayMs: 100,
      maxRetryDelayMs: 1000,
      reconciler: { waitPollMs: 300 },
      logger,
    });
    await controller.start();
  });

  afterAll(async () => {
    await controller?.stop();
    await agent?.stop();
    if (namespace) await deleteTestNamespace(kc, namespace);
  });

  it("prepares a ConfigMap function, adds the finalizer and reports Ready with conditions", async () => {
    await core.createNamespacedConfigMap({
      namespace,
      body: {
        metadata: { name: "hello-code" },
        data: { "index.mjs": "export const handler = async () => 'hi';" },
      },
    });
    await api.createNamespacedCustomObject({
      group,
      version,
      namespace,
      plural,
      body: {
        apiVersion: "esb.dev/v1alpha1",
        kind: "LambdaFunction",
        metadata: { name: "hello" },
        spec: {
          runtime: "nodejs22.x",
          handler: "index.handler",
          code: { configMap: { name: "hello-code" } },
          provisionedConcurrency: 2,
        },
      },
    });
    const fn = await eventually("hello Ready", () => readyWith(1)("hello"));
    expect(fn.metadata.finalizers).toContain("esb.dev/workers");
    expect(fn.status).toMatchObject({
      readyWorkers: 2,
      warmWorkers: 2,
      nodes: [new URL(agent.url).host],
      url: `http://gateway.test:9000/2015-03-31/functions/${encodeURIComponent(`${namespace}/hello`)}/invocations`,
      imageDigest: expect.stringMatching(/^sha256:/),
    });
    expect(fn.status?.conditions?.map((c) => [c.type, c.status, c.reason])).toEqual([
      ["Ready", "True", "Ready"],
      ["ImagePrepared", "True", "Prepared"],
      ["WarmPoolReady", "True", "WarmPoolReady"],
    ]);
    const spec = agent.functions.get(`${namespace}/hello`)!;
    expect(spec.provisionedConcurrency).toBe(2);
    expect(new TextDecoder().decode(spec.code?.files["index.mjs"])).toContain("handler");
    const events = await eventually("Ready event", async () => {
      const list = await core.listNamespacedEvent({ namespace, fieldSelector: "involvedObject.name=hello" });
      return list.items.some((e) => e.reason === "Ready") ? list.items : undefined;
    });
    expect(events.map((e) => e.reason)).toEqual(expect.arrayContaining(["Ready", "Prepared"]));
  });

  it("prepares a new revision when the spec changes", async () => {
    const before = agent.functions.get(`${namespace}/hello`)!.revision;
    await api.patchNamespacedCustomObject({
      group,
      version,
      namespace,
      plural,
      name: "hello",
      body: [{ op: "replace", path: "/spec/memorySize", value: 512 }],
    });
    const fn = await eventually("generation 2 Ready", () => readyWith(2)("hello"));
    const spec = agent.functions.get(`${namespace}/hello`)!;
    expect(spec.revision).not.toBe(before);
    expect(spec.memorySizeMb).toBe(512);
    expect(spec.generation).toBe(2n);
    expect(fn.status?.revision).toBe(spec.revision);
  });

  it("reports RoutesAccepted: a later function cannot take a route another already serves", async () => {
    const create = (name: string) =>
      api.createNamespacedCustomObject({
        group,
        version,
        namespace,
        plural,
        body: {
          apiVersion: "esb.dev/v1alpha1",
          kind: "LambdaFunction",
          metadata: { name },
          spec: {
            runtime: "nodejs22.x",
            handler: "index.handler",
            code: { inline: { "index.mjs": "export const handler = async () => 1;" } },
            http: { routes: [{ path: "/shop/orders", methods: ["POST"] }] },
          },
        },
      });
    const routes = (fn: LambdaFunction) => fn.status?.conditions?.find((c) => c.type === "RoutesAccepted");
    await create("routes-owner");
    const owner = await eventually("routes-owner Ready", () => readyWith(1)("routes-owner"));
    expect(routes(owner)).toMatchObject({ status: "True", reason: "Accepted" });
    // Created later (creation times have whole seconds; equal times fall back to name order),
    // and first in name order: age decides, not the name.
    await new Promise((r) => setTimeout(r, 1100));
    await create("routes-a-intruder");
    const intruder = await eventually("the intruder's routes refused", async () => {
      const fn = await get("routes-a-intruder");
      return routes(fn)?.status === "False" ? fn : undefined;
    });
    expect(routes(intruder)).toMatchObject({
      reason: "RouteConflict",
      message: `POST /shop/orders is already served by ${namespace}/routes-owner`,
    });
    // Still invocable by name: only its route is refused.
    expect(intruder.status?.conditions?.find((c) => c.type === "Ready")?.status).toBe("True");
    await eventually("a RouteConflict event", async () => {
      const list = await core.listNamespacedEvent({
        namespace,
        fieldSelector: "involvedObject.name=routes-a-intruder",
      });
      return list.items.some((e) => e.reason === "RouteConflict" && e.type === "Warning") ? true : undefined;
    });
  });

  it("reports what the schema cannot check: code.path in Kubernetes and a missing ConfigMap", async () => {
    const body = (name: string, code: Record<string, unknown>) => ({
      apiVersion: "esb.dev/v1alpha1",
      kind: "LambdaFunction",
      metadata: { name },
      spec: { runtime: "provided", code },
    });
    await api.createNamespacedCustomObject({
      group,
      version,
      namespace,
      plural,
      body: body("with-path", { path: "/srv/fn" }),
    });
    await api.createNamespacedCustomObject({
      group,
      version,
      namespace,
      plural,
      body: body("no-cm", { configMap: { name: "missing" } }),
    });
    const ready = (name: string, reason: string) => async () => {
      const c = (await get(name)).status?.conditions?.find((x) => x.type === "Ready");
      return c?.status === "False" && c.reason === reason ? c : undefined;
    };
    const pathCond = await eventually("InvalidSpec", ready("with-path", "InvalidSpec"));
    expect(pathCond.message).toContain("spec.code.path is only supported by esb up");
    const cmCond = await eventually("ConfigMapNotFound", ready("no-cm", "ConfigMapNotFound"));
    expect(cmCond.message).toBe(`ConfigMap ${namespace}/missing (spec.code.configMap) not found`);
    expect(agent.functions.has(`${namespace}/with-path`)).toBe(false);
    // Creating the ConfigMap later makes the function ready (the controller keeps looking).
    await core.createNamespacedConfigMap({
      namespace,
      body: { metadata: { name: "missing" }, data: { bootstrap: "#!/bin/sh\n" } },
    });
    await eventually("no-cm Ready", () => readyWith(1)("no-cm"));
  });

  it("destroys the workers on delete, then removes the finalizer and the object goes away", async () => {
    for (const name of ["hello", "with-path", "no-cm"])
      await api.deleteNamespacedCustomObject({ group, version, namespace, plural, name });
    await eventually("hello gone", async () => {
      try {
        await get("hello");
        return false;
      } catch (err) {
        if ((err as { code?: number }).code === 404) return true;
        throw new Error(apiErrorMessage(err), { cause: err });
      }
    });
    expect(agent.callsFor("DestroyFunction", `${namespace}/hello`).length).toBeGreaterThan(0);
    expect(agent.functions.has(`${namespace}/hello`)).toBe(false);
    // DestroyFunction came before the finalizer was removed: nothing was prepared after it.
    const last = agent.calls.filter((c) => c.key === `${namespace}/hello`).at(-1);
    expect(last?.method).toBe("DestroyFunction");
    for (const name of ["with-path", "no-cm"])
      await eventually(`${name} gone`, () =>
        get(name).then(
          () => false,
          (err: { code?: number }) => err.code === 404,
        ),
      );
  });
});

describe("LambdaFunctionReconciler with two agents", () => {
  let kc: KubeConfig;
  let api: CustomObjectsApi;
  let namespace: string;
  const agents: RecordingTestAgent[] = [];
  let controller: Controller;

  beforeAll(async () => {
    kc = loadTestKubeConfig();
    await installCrd(kc);
    api = kc.makeApiClient(CustomObjectsApi);
    namespace = await createTestNamespace(kc, "esb-rec2");
    for (let i = 0; i < 2; i++) agents.push(await new RecordingTestAgent().start());
    controller = new Controller({
      source: new KubernetesFunctionSource(kc, { namespace, logger }),
      agents: new StaticAgentDirectory(agents.map((a) => a.url)),
      gatewayUrl: "http://gateway.test:9000",
      gatewayNamespace: "default",
      reconciler: { waitPollMs: 300 },
      logger,
    });
    await controller.start();
  });

  afterAll(async () => {
    await controller?.stop();
    for (const a of agents) await a.stop();
    if (namespace) await deleteTestNamespace(kc, namespace);
  });

  it.each([
    [3, 2],
    [1, 1],
    [5, 0],
  ])(
    "splits reservedConcurrency %i and provisionedConcurrency %i over the agents so that both hold cluster-wide",
    async (reserved, provisioned) => {
      const name = `limits-${reserved}-${provisioned}`;
      await api.createNamespacedCustomObject({
        group,
        version,
        namespace,
        plural,
        body: {
          apiVersion: "esb.dev/v1alpha1",
          kind: "LambdaFunction",
          metadata: { name },
          spec: {
            runtime: "provided",
            handler: "x",
            code: { inline: { bootstrap: "#!/bin/sh\n" } },
            reservedConcurrency: reserved,
            provisionedConcurrency: provisioned,
          },
        },
      });
      const specs = await eventually(`${name} on both agents`, async () => {
        const s = agents.map((a) => a.functions.get(`${namespace}/${name}`));
        return s.every((x) => x !== undefined) ? s.map((x) => x!) : undefined;
      });
      expect(specs.reduce((n, s) => n + (s.reservedConcurrency ?? NaN), 0)).toBe(reserved);
      expect(specs.reduce((n, s) => n + s.provisionedConcurrency, 0)).toBe(provisioned);
      for (const s of specs) expect(s.provisionedConcurrency).toBeLessThanOrEqual(s.reservedConcurrency!);
      // Shares differ by at most one.
      const r = specs.map((s) => s.reservedConcurrency!);
      expect(Math.max(...r) - Math.min(...r)).toBeLessThanOrEqual(1);
    },
  );

  it("leaves reservedConcurrency unset on every agent when the function has none", async () => {
    await api.createNamespacedCustomObject({
      group,
      version,
      namespace,
      plural,
      body: {
        apiVersion: "esb.dev/v1alpha1",
        kind: "LambdaFunction",
        metadata: { name: "unlimited" },
        spec: { runtime: "provided", handler: "x", code: { inline: { bootstrap: "#!/bin/sh\n" } } },
      },
    });
    const specs = await eventually("unlimited on both agents", async () => {
      const s = agents.map((a) => a.functions.get(`${namespace}/unlimited`));
      return s.every((x) => x !== undefined) ? s : undefined;
    });
    for (const s of specs) expect(s!.reservedConcurrency).toBeUndefined();
  });
});
