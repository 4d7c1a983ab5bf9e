// End to end in Kubernetes mode, with every part real except the cluster's
// nodes: `kubectl apply` of a LambdaFunction against the test environment's
// real kube-apiserver + etcd (with the real CRD, so its schema and CEL rules
// apply), the controller (KubernetesFunctionSource: informer, finalizer,
// status subresource, Events) preparing the function on a real agent backed by
// the test containerd, and the gateway (KubernetesFunctionRegistry) invoking it
// for the AWS SDK. The test apiserver has no kubelet, so there are no agent
// pods to discover: controller and gateway are given the in-process agent's URL
// (StaticAgentDirectory / StaticAgentDiscovery) instead of the label selector.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { InvokeCommand, type LambdaClient } from "@aws-sdk/client-lambda";
import type { KubeConfig } from "@kubernetes/client-node";
import { parse, stringify } from "yaml";
import { createLogger, type LambdaFunction } from "@esb/common";
import { staticTokenSource } from "@esb/common/agent-credentials";
import { StaticAgentDirectory } from "@esb/controller/agent-directory";
import { Controller } from "@esb/controller/controller";
import { ControllerMetrics } from "@esb/controller/controller-metrics";
import { installCrd, loadTestKubeConfig } from "@esb/controller/kube-test-support";
import { KubernetesFunctionSource } from "@esb/controller/kubernetes-function-source";
import { loadGatewayConfig } from "@esb/gateway/gateway-config";
import { GatewayServer } from "@esb/gateway/gateway-server";
import { KubernetesFunctionRegistry } from "@esb/gateway/kubernetes-function-registry";
import { StaticAgentDiscovery } from "@esb/gateway/static-agent-discovery";
import {
  createNamespace,
  deleteNamespace,
  expectSuccess,
  kubectl,
  repoRoot,
} from "../install/chart-tools.js";
import { E2eStack, waitFor } from "./e2e-stack.js";

/** Generous: the first run builds/pulls the Node runtime image. */
const READY_TIMEOUT_MS = 600_000;

const NEW_CODE = `export const handler = async (event, context) => ({
  ok: true,
  message: \`goodbye \${event?.name ?? "world"}\`,
  requestId: context.awsRequestId,
});
`;

/** One row of `kubectl get` (printer columns), column name → cell. */
type Row = Record<string, string>;

/** Parses kubectl's table output by the header's column offsets (cells may be `<none>`). */
function parseTable(out: string): Row[] {
  const lines = out.split("\n").filter((l) => l.trim() !== "");
  if (lines.length === 0) return [];
  const header = lines[0];
  const cols = [...header.matchAll(/\S+/g)].map((m) => ({ name: m[0], start: m.index }));
  return lines.slice(1).map((line) => {
    const row: Row = {};
    cols.forEach((c, i) => {
      const end = i + 1 < cols.length ? cols[i + 1].start : undefined;
      row[c.name] = line.slice(c.start, end).trim();
    });
    return row;
  });
}

describe("Kubernetes mode end to end (kubectl → apiserver → controller → agent → containerd; SDK → gateway)", () => {
  const stack = new E2eStack();
  const logger = createLogger("k8s-e2e", { level: stack.logLevel() });
  let kc: KubeConfig;
  let kubeconfig: string;
  let ns = "";
  let manifestDir = "";
  let registry: KubernetesFunctionRegistry;
  let lambda: LambdaClient;
  /** The example manifest, in the test's namespace, with one provisioned worker. */
  let hello: LambdaFunction;

  const k = async (...args: string[]) => kubectl(kubeconfig, ["-n", ns, ...args]);

  /** `kubectl apply -f <file>` of `manifest`; returns the command's result (not checked). */
  const apply = async (manifest: unknown) => {
    const file = join(manifestDir, `manifest-${Date.now()}.yaml`);
    await writeFile(file, stringify(manifest));
    return k("apply", "-f", file);
  };

  /** `kubectl get lf hello -o json`. */
  const getHello = async (): Promise<LambdaFunction> =>
    JSON.parse(
      expectSuccess(await k("get", "lf", "hello", "-o", "json"), "kubectl get lf hello"),
    ) as LambdaFunction;

  /** Waits until hello is Ready=True for its current generation with a warm worker; returns it. */
  const waitHelloReady = async (minGeneration: number): Promise<LambdaFunction> => {
    let last: LambdaFunction | undefined;
    try {
      await waitFor(
        async () => {
          last = await getHello();
          const ready = last.status?.conditions?.find((c) => c.type === "Ready");
          return (
            (last.metadata.generation ?? 0) >= minGeneration &&
            last.status?.observedGeneration === last.metadata.generation &&
            ready?.status === "True" &&
            ready.observedGeneration === last.metadata.generation &&
            (last.status?.warmWorkers ?? 0) >= 1
          );
        },
        READY_TIMEOUT_MS,
        "LambdaFunction hello Ready",
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}; last seen: ${JSON.stringify(last?.status)}`, {
        cause: err,
      });
    }
    return last!;
  };

  const startController = async (metrics?: ControllerMetrics): Promise<void> => {
    stack.controller = new Controller({
      source: new KubernetesFunctionSource(kc, { namespace: ns, logger, instance: `k8s-e2e-${stack.id}` }),
      agents: new StaticAgentDirectory([stack.agentUrl]),
      agentToken: staticTokenSource(stack.agentTokens.controller),
      gatewayUrl: stack.endpoint,
      gatewayNamespace: ns,
      metrics,
      logger,
    });
    await stack.controller.start();
  };

  const invoke = async (event: unknown): Promise<Record<string, unknown>> => {
    const out = await lambda.send(
      new InvokeCommand({ FunctionName: "hello", Payload: new TextEncoder().encode(JSON.stringify(event)) }),
    );
    expect(out.StatusCode).toBe(200);
    expect(out.FunctionError).toBeUndefined();
    return JSON.parse(new TextDecoder().decode(out.Payload)) as Record<string, unknown>;
  };

  const helloWorkers = () => stack.agent.agent.listWorkers({ namespace: ns, name: "hello" });

  beforeAll(async () => {
    kc = loadTestKubeConfig();
    kubeconfig = process.env.ESB_TEST_KUBECONFIG!;
    await installCrd(kc);
    ns = `esb-k8se2e-${stack.id}`;
    await createNamespace(kubeconfig, ns);
    manifestDir = await mkdtemp(join(tmpdir(), "esb-k8se2e-"));

    const example = parse(
      await readFile(join(repoRoot, "examples", "functions", "hello.yaml"), "utf8"),
    ) as LambdaFunction;
    hello = {
      ...example,
      metadata: { ...example.metadata, namespace: ns },
      spec: { ...example.spec, provisionedConcurrency: 1 },
    };

    await stack.startAgent();
    const config = loadGatewayConfig({
      GATEWAY_PORT: "0",
      GATEWAY_HOST: "127.0.0.1",
      GATEWAY_NAMESPACE: ns,
      AGENT_URLS: stack.agentUrl,
      GATEWAY_HEARTBEAT_MS: "200",
      GATEWAY_HOLDER_ID: `k8s-e2e-gateway-${stack.id}`,
    });
    registry = new KubernetesFunctionRegistry(kc, config.namespace, logger);
    stack.gateway = new GatewayServer({
      config,
      registry,
      discovery: new StaticAgentDiscovery(config.agentUrls),
      agentToken: staticTokenSource(stack.agentTokens.gateway),
      logger,
    });
    stack.endpoint = `http://127.0.0.1:${await stack.gateway.start()}`;
    lambda = stack.lambda();
    // No leader election: this is the only controller for the namespace.
    await startController();
  }, 300_000);

  afterAll(async () => {
    lambda?.destroy();
    try {
      // A failed run may leave the function behind: delete it while the controller still runs its finalizer.
      if (ns && stack.controller)
        await k("delete", "lf", "--all", "--ignore-not-found", "--wait=true", "--timeout=120s");
      await stack.stop();
      // Nothing left in containerd.
      expect([...(await stack.tasks()).entries()]).toEqual([]);
      expect(await stack.containers()).toEqual([]);
    } finally {
      await stack.cleanup();
      if (ns) await deleteNamespace(kubeconfig, ns);
      if (manifestDir) await rm(manifestDir, { recursive: true, force: true });
    }
  }, 300_000);

  it(
    "kubectl apply of the hello example → Ready with a warm, frozen worker",
    async () => {
      expectSuccess(await apply(hello), "kubectl apply hello");
      const fn = await waitHelloReady(1);
      expect(fn.metadata.finalizers).toContain("esb.dev/workers");
      expect(fn.status?.readyWorkers).toBeGreaterThanOrEqual(1);
      expect(fn.status?.revision).toBeTruthy();
      expect(fn.status?.url).toBe(`${stack.endpoint}/2015-03-31/functions/hello/invocations`);
      for (const type of ["ImagePrepared", "WarmPoolReady"])
        expect(fn.status?.conditions?.find((c) => c.type === type)?.status).toBe("True");

      // Printer columns: Ready and the warm count.
      const rows = parseTable(expectSuccess(await k("get", "lf"), "kubectl get lf"));
      const row = rows.find((r) => r.NAME === "hello");
      expect(row).toMatchObject({
        READY: "True",
        RUNTIME: "nodejs24.x",
        WARM: String(fn.status?.warmWorkers),
      });
      const wide = parseTable(expectSuccess(await k("get", "lf", "-o", "wide"), "kubectl get lf -o wide"));
      expect(wide.find((r) => r.NAME === "hello")?.REASON).toBe("Ready");

      // The controller reported the transition as Kubernetes Events on the object.
      const events = JSON.parse(
        expectSuccess(
          await k("get", "events", "--field-selector", "involvedObject.name=hello", "-o", "json"),
          "kubectl get events",
        ),
      ) as { items: Array<{ reason: string; involvedObject: { kind: string } }> };
      const reasons = events.items
        .filter((e) => e.involvedObject.kind === "LambdaFunction")
        .map((e) => e.reason);
      expect(reasons).toEqual(expect.arrayContaining(["Prepared", "Ready"]));

      // The warm worker is a containerd task, frozen (kernel cgroup freezer) once idle past pauseAfterMs.
      const workers = helloWorkers();
      expect(workers.length).toBeGreaterThanOrEqual(1);
      for (const w of workers)
        await waitFor(
          async () => (await stack.taskFreezer(w.workerId)) === "FROZEN",
          60_000,
          `task ${w.workerId} FROZEN`,
        );
    },
    READY_TIMEOUT_MS + 120_000,
  );

  it("invokes the function through the gateway with the AWS SDK", async () => {
    await waitFor(() => registry.get(ns, "hello") !== undefined, 60_000, "gateway sees hello");
    const res = await invoke({ name: "ESB" });
    expect(res).toMatchObject({ ok: true, message: "hello ESB" });
    expect(typeof res.requestId).toBe("string");
  }, 120_000);

  it(
    "rolls a spec change out as a new generation and revision; old workers are drained",
    async () => {
      const before = await getHello();
      const oldIds = new Set(helloWorkers().map((w) => w.workerId));
      expect(oldIds.size).toBeGreaterThan(0);
      const changed = { ...hello, spec: { ...hello.spec, code: { inline: { "index.mjs": NEW_CODE } } } };
      expectSuccess(await apply(changed), "kubectl apply (new code)");

      const after = await waitHelloReady((before.metadata.generation ?? 1) + 1);
      expect(after.metadata.generation).toBeGreaterThan(before.metadata.generation ?? 1);
      expect(after.status?.revision).toBeTruthy();
      expect(after.status?.revision).not.toBe(before.status?.revision);
      // The agent's pool was prepared with the new revision.
      expect(
        stack.agent.agent.pools().find((p) => p.ref.name === "hello" && p.ref.namespace === ns)?.revision,
      ).toBe(after.status?.revision);

      await waitFor(
        () => registry.get(ns, "hello")?.metadata.generation === after.metadata.generation,
        60_000,
        "gateway sees the new generation",
      );
      expect(await invoke({ name: "ESB" })).toMatchObject({ ok: true, message: "goodbye ESB" });

      // Every worker now runs the new revision, and the old workers' tasks are gone.
      await waitFor(
        () => helloWorkers().every((w) => w.revision === after.status?.revision && !oldIds.has(w.workerId)),
        120_000,
        "old workers drained",
      );
      const tasks = await stack.tasks();
      for (const id of oldIds) expect(tasks.has(id)).toBe(false);
    },
    READY_TIMEOUT_MS + 300_000,
  );

  it("rejects invalid specs at kubectl apply with the CRD's messages", async () => {
    const tooSmall = await apply({ ...hello, spec: { ...hello.spec, memorySize: 64 } });
    expect(tooSmall.code).not.toBe(0);
    expect(tooSmall.stderr).toMatch(
      /spec\.memorySize: Invalid value: 64: spec\.memorySize in body should be greater than or equal to 128/,
    );

    const both = await apply({ ...hello, spec: { ...hello.spec, image: "example.com/fn:1" } });
    expect(both.code).not.toBe(0);
    expect(both.stderr).toContain(
      "spec.image cannot be combined with runtime, handler or code: set either image or runtime + handler + code",
    );

    const tooMany = await apply({
      ...hello,
      spec: { ...hello.spec, reservedConcurrency: 1, provisionedConcurrency: 2 },
    });
    expect(tooMany.code).not.toBe(0);
    expect(tooMany.stderr).toContain("spec.provisionedConcurrency must not exceed spec.reservedConcurrency");

    // The stored object is unchanged and Ready (right after the roll-out above its warm
    // pool may still be refilling on a busy machine, which reports Ready=False meanwhile).
    const fn = await getHello();
    expect(fn.spec.memorySize).toBe(128);
    expect(fn.spec.image).toBeUndefined();
    const ready = async () => (await getHello()).status?.conditions?.find((c) => c.type === "Ready")?.status;
    await waitFor(async () => (await ready()) === "True", 60_000, "hello Ready");
    expect(await ready()).toBe("True");
  }, 120_000);

  it("keeps the function Ready without duplicate workers across a controller restart", async () => {
    const before = await getHello();
    const ids = helloWorkers()
      .map((w) => w.workerId)
      .sort();
    // Functions' workers only: generic sandboxes (no function label) come and go on their own.
    const functionWorkers = async () =>
      (await stack.agent.agent.runtime.listWorkers()).filter((w) => w.labels["esb.dev/function"]).length;
    const runtimeCount = await functionWorkers();
    await stack.controller.stop();

    const metrics = new ControllerMetrics();
    await startController(metrics);
    // The new controller has reconciled hello at least once (there is no other function in the namespace).
    await waitFor(
      async () =>
        ((await metrics.reconciles.get()).values.find((v) => v.labels.result === "success")?.value ?? 0) >= 1,
      120_000,
      "restarted controller reconciled hello",
    );

    const after = await getHello();
    expect(after.metadata.generation).toBe(before.metadata.generation);
    expect(after.status?.observedGeneration).toBe(after.metadata.generation);
    expect(after.status?.revision).toBe(before.status?.revision);
    expect(after.status?.conditions?.find((c) => c.type === "Ready")?.status).toBe("True");
    expect(
      helloWorkers()
        .map((w) => w.workerId)
        .sort(),
    ).toEqual(ids);
    expect(await functionWorkers()).toBe(runtimeCount);
  }, 180_000);

  it("kubectl delete runs the finalizer: the object is gone and no task of the function is left", async () => {
    const ids = helloWorkers().map((w) => w.workerId);
    expect(ids.length).toBeGreaterThan(0);
    expectSuccess(
      await k("delete", "lf", "hello", "--wait=true", "--timeout=120s"),
      "kubectl delete lf hello",
    );

    const gone = await k("get", "lf", "hello", "-o", "json");
    expect(gone.code).not.toBe(0);
    expect(gone.stderr).toContain("NotFound");
    expect(helloWorkers()).toEqual([]);
    await waitFor(
      async () => {
        const tasks = await stack.tasks();
        return ids.every((id) => !tasks.has(id));
      },
      60_000,
      "hello's tasks removed",
    );
    expect([...(await stack.tasks()).keys()]).toEqual([]);
  }, 180_000);
});
