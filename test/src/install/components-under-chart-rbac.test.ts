// The gateway's and the controller's own Kubernetes code, run with clients that
// authenticate as the chart's ServiceAccounts (tokens, no impersonation), does
// its work against the test kube-apiserver: the chart's RBAC suffices for what
// the components actually call, not only for what we think they call.
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { CoreV1Api, KubeConfig, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { createLogger, type LambdaFunction } from "@esb/common";
import { KubernetesFunctionRegistry } from "@esb/gateway/kubernetes-function-registry";
import { KubernetesAgentDiscovery } from "@esb/gateway/kubernetes-agent-discovery";
import { KubernetesFunctionSource } from "@esb/controller/kubernetes-function-source";
import { LeaderElector } from "@esb/controller/leader-election";
import { WORKERS_FINALIZER } from "@esb/controller/function-source";
import { TokenReviewAuthenticator } from "@esb/agent/auth/token-review-authenticator";
import { AGENT_TOKEN_AUDIENCE } from "@esb/common/agent-credentials";
import { MetricsAccess, serveMetrics } from "@esb/common/metrics-access";
import { testKubeconfig } from "../env/dev-env.js";
import { installChartRbac, type InstalledChartRbac } from "./chart-rbac.js";
import {
  applyChartCrds,
  createNamespace,
  deleteNamespace,
  expectSuccess,
  kubectl,
  uniqueName,
} from "./chart-tools.js";

const logger = createLogger("install-test", { level: "warn" });

/** Polls `check` until it returns true (100 ms apart, at most `attempts` times). */
async function eventually(
  check: () => boolean | Promise<boolean>,
  what: string,
  attempts = 300,
): Promise<void> {
  for (let i = 0; i < attempts; i++) {
    if (await check()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting until ${what}`);
}

describe("gateway and controller under exactly the chart's RBAC", () => {
  let kubeconfig: string;
  let admin: KubeConfig;
  let rbac: InstalledChartRbac;
  const release = uniqueName("cr");
  const namespace = uniqueName("esb-sys");
  const functions = uniqueName("esb-fns");
  const stops: (() => Promise<void> | void)[] = [];

  beforeAll(async () => {
    kubeconfig = testKubeconfig();
    admin = new KubeConfig();
    admin.loadFromFile(kubeconfig);
    await applyChartCrds(kubeconfig);
    await createNamespace(kubeconfig, namespace);
    await createNamespace(kubeconfig, functions);
    rbac = await installChartRbac({ kubeconfig, release, namespace });
  });

  afterAll(async () => {
    for (const stop of stops.reverse()) await stop();
    await rbac?.uninstall();
    if (kubeconfig) {
      await deleteNamespace(kubeconfig, namespace);
      await deleteNamespace(kubeconfig, functions);
    }
  });

  async function createFunction(name: string): Promise<void> {
    const manifest = {
      apiVersion: "esb.dev/v1alpha1",
      kind: "LambdaFunction",
      metadata: { name, namespace: functions },
      spec: {
        runtime: "nodejs24.x",
        handler: "index.handler",
        code: { configMap: { name: `${name}-code` } },
      },
    };
    const code = {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: `${name}-code`, namespace: functions },
      data: { "index.mjs": "export const handler = async () => 'ok';" },
    };
    expectSuccess(
      await kubectl(
        kubeconfig,
        ["apply", "-f", "-"],
        `${JSON.stringify(code)}\n---\n${JSON.stringify(manifest)}`,
      ),
      "kubectl apply (function and its code)",
    );
  }

  it("agent: reviews the controller's and gateway's agent-audience tokens and tells them apart", async () => {
    const authenticator = new TokenReviewAuthenticator({
      kubeConfig: await rbac.kubeConfigFor("agent"),
      controllerUsers: [rbac.username("controller")],
      gatewayUsers: [rbac.username("gateway")],
    });
    const controller = await rbac.tokenFor("controller", AGENT_TOKEN_AUDIENCE);
    const gateway = await rbac.tokenFor("gateway", AGENT_TOKEN_AUDIENCE);
    expect(await authenticator.authenticate(controller)).toEqual({
      identity: rbac.username("controller"),
      role: "controller",
    });
    expect(await authenticator.authenticate(gateway)).toEqual({
      identity: rbac.username("gateway"),
      role: "gateway",
    });
    // Cached: the same answer again (and no second review needed for a warm call).
    expect((await authenticator.authenticate(gateway))?.role).toBe("gateway");
    // A token for the Kubernetes API (the default audience) is not a token for the agent.
    expect(await authenticator.authenticate(await rbac.tokenFor("gateway"))).toBeUndefined();
    // A valid agent-audience token of another identity is known but has no role (permission_denied).
    expect(await authenticator.authenticate(await rbac.tokenFor("agent", AGENT_TOKEN_AUDIENCE))).toEqual({
      identity: rbac.username("agent"),
      role: undefined,
    });
    expect(await authenticator.authenticate("garbage.not.ajwt")).toBeUndefined();
  });

  it("every component's /metrics: a token of a metrics-reader is served, another 403, none 401", async () => {
    const reader = rbac.manifests.find(
      (m) => m.kind === "ClusterRole" && m.metadata.name.endsWith("-metrics-reader"),
    )!.metadata.name;
    const binding = uniqueName("scraper");
    for (const sa of ["scraper", "stranger"])
      expectSuccess(
        await kubectl(kubeconfig, ["create", "serviceaccount", sa, "-n", namespace]),
        "create sa",
      );
    expectSuccess(
      await kubectl(kubeconfig, [
        "create",
        "clusterrolebinding",
        binding,
        `--clusterrole=${reader}`,
        `--serviceaccount=${namespace}:scraper`,
      ]),
      "bind the scraper to metrics-reader",
    );
    stops.push(async () => void (await kubectl(kubeconfig, ["delete", "clusterrolebinding", binding])));
    const tokenOf = async (sa: string) =>
      expectSuccess(
        await kubectl(kubeconfig, ["create", "token", sa, "-n", namespace]),
        "create token",
      ).trim();
    const scraper = await tokenOf("scraper");
    const stranger = await tokenOf("stranger");
    for (const component of ["controller", "gateway", "agent"] as const) {
      // Each component asks the API server with its own ServiceAccount, as the chart deploys it.
      const access = new MetricsAccess("kubernetes", await rbac.kubeConfigFor(component));
      const server = createServer((req, res) => {
        void serveMetrics(req, res, access, { contentType: "text/plain", metrics: async () => "esb_up 1\n" });
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      stops.push(() => new Promise<void>((r) => server.close(() => r())));
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`;
      const get = (token?: string) =>
        fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
      const served = await get(scraper);
      expect([component, served.status, await served.text()]).toEqual([component, 200, "esb_up 1\n"]);
      const other = await get(stranger);
      expect([component, other.status, await other.text()]).toEqual([
        component,
        403,
        `system:serviceaccount:${namespace}:stranger may not get /metrics\n`,
      ]);
      const anonymous = await get();
      expect([component, anonymous.status, anonymous.headers.get("www-authenticate")]).toEqual([
        component,
        401,
        'Bearer realm="esb-metrics"',
      ]);
      expect((await get("garbage.not.ajwt")).status).toBe(401);
    }
  });

  it("gateway: its function registry sees functions in every namespace and its agent discovery finds agent pods", async () => {
    const gateway = await rbac.kubeConfigFor("gateway");
    const registry = new KubernetesFunctionRegistry(gateway, functions, logger);
    stops.push(() => registry.stop());
    await registry.start();
    await createFunction("seen-by-gateway");
    await eventually(
      () => registry.get(functions, "seen-by-gateway") !== undefined,
      "the gateway sees the function",
    );

    // An agent pod as the DaemonSet would make it, marked Running and Ready by
    // the admin (the test apiserver has no kubelet).
    const core = admin.makeApiClient(CoreV1Api);
    const labels = Object.fromEntries(
      "app.kubernetes.io/name=esb,app.kubernetes.io/instance=X,app.kubernetes.io/component=agent"
        .replace("X", release)
        .split(",")
        .map((kv) => kv.split("=")),
    );
    await core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name: "agent-probe", labels },
        spec: { containers: [{ name: "agent", image: "esb/agent:0.1.0" }] },
      },
    });
    await core.patchNamespacedPodStatus(
      {
        name: "agent-probe",
        namespace,
        body: {
          status: {
            phase: "Running",
            podIP: "192.0.2.10",
            podIPs: [{ ip: "192.0.2.10" }],
            conditions: [{ type: "Ready", status: "True" }],
          },
        },
      },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
    const selector = Object.entries(labels)
      .map(([k, v]) => `${k}=${v}`)
      .join(",");
    const discovery = new KubernetesAgentDiscovery(gateway, namespace, selector, 50051, logger);
    stops.push(() => discovery.stop());
    await discovery.start();
    await eventually(
      () => discovery.agents().includes("http://192.0.2.10:50051"),
      "the gateway discovers the agent",
    );
  });

  it("controller: watches functions, manages finalizers and status, reads code, records events and leads", async () => {
    const controller = await rbac.kubeConfigFor("controller");
    const source = new KubernetesFunctionSource(controller, {
      namespace: "",
      logger,
      instance: "install-test",
    });
    stops.push(() => source.stop());
    const seen = new Set<string>();
    await source.start((key) => seen.add(key));
    await createFunction("seen-by-controller");
    const key = `${functions}/seen-by-controller`;
    await eventually(() => source.get(key) !== undefined, "the controller sees the function");
    expect(seen.has(key)).toBe(true);

    const fn = source.get(key) as LambdaFunction;
    const withFinalizer = await source.ensureFinalizer(fn);
    expect(withFinalizer.metadata.finalizers).toContain(WORKERS_FINALIZER);
    await source.updateStatus(withFinalizer, { observedGeneration: 1, readyWorkers: 0, warmWorkers: 0 });
    const files = await source.readConfigMap(functions, "seen-by-controller-code");
    expect(Object.keys(files ?? {})).toEqual(["index.mjs"]);
    await source.recordEvent(
      withFinalizer,
      "Normal",
      "RbacProbe",
      "recorded under the chart's controller role",
    );

    const stored = JSON.parse(
      expectSuccess(
        await kubectl(kubeconfig, [
          "get",
          "lambdafunctions.esb.dev",
          "seen-by-controller",
          "-n",
          functions,
          "-o",
          "json",
        ]),
        "kubectl get lambdafunction",
      ),
    ) as LambdaFunction;
    expect(stored.status?.observedGeneration).toBe(1);
    expect(stored.metadata.finalizers).toContain(WORKERS_FINALIZER);
    const events = expectSuccess(
      await kubectl(kubeconfig, ["get", "events", "-n", functions, "-o", "json"]),
      "kubectl get events",
    );
    expect(events).toContain("RbacProbe");

    await source.removeFinalizer(source.get(key) ?? withFinalizer);
    await eventually(async () => {
      const current = await kubectl(kubeconfig, [
        "get",
        "lambdafunctions.esb.dev",
        "seen-by-controller",
        "-n",
        functions,
        "-o",
        "json",
      ]);
      return !(JSON.parse(current.stdout || "{}") as LambdaFunction).metadata?.finalizers?.includes(
        WORKERS_FINALIZER,
      );
    }, "the finalizer is removed");

    // Leader election with the Lease permissions of the release namespace.
    let leading = false;
    const elector = new LeaderElector(controller, {
      leaseName: `${release}-esb-controller`,
      namespace,
      identity: "install-test-0",
      retryPeriodMs: 200,
      onStartedLeading: () => {
        leading = true;
      },
      onStoppedLeading: () => {
        leading = false;
      },
      logger,
    });
    stops.push(() => elector.stop());
    elector.start();
    await eventually(() => leading, "the controller takes the lease");
    expect(elector.isLeader).toBe(true);
  });
});
