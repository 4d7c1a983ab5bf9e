// The chart's RBAC, applied to the real test kube-apiserver, gives each
// component what it needs and refuses it what it does not: asked through
// `kubectl auth can-i --as=<ServiceAccount>` (impersonation, a
// SubjectAccessReview by the authorizer), and shown with real requests made
// with each ServiceAccount's own token.
import { describe, it, expect, beforeAll, afterAll, jest } from "@jest/globals";
import {
  ApiException,
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
} from "@kubernetes/client-node";
import { testKubeconfig } from "../env/dev-env.js";
import { installChartRbac, type ChartComponent, type InstalledChartRbac } from "./chart-rbac.js";
import {
  applyChartCrds,
  createNamespace,
  deleteNamespace,
  expectSuccess,
  kubectl,
  uniqueName,
} from "./chart-tools.js";

// Dozens of kubectl runs per test: generous on a busy, shared machine.
jest.setTimeout(300_000);

/** `[verb, resource, namespace or "*" for all, subresource?]`. */
type Access = [string, string, string, string?];

describe("chart RBAC in the test kube-apiserver", () => {
  let kubeconfig: string;
  let rbac: InstalledChartRbac;
  const namespace = uniqueName("esb-rbac");
  const release = uniqueName("rb");
  const other = "default";

  beforeAll(async () => {
    kubeconfig = testKubeconfig();
    await applyChartCrds(kubeconfig);
    await createNamespace(kubeconfig, namespace);
    rbac = await installChartRbac({ kubeconfig, release, namespace });
  });

  afterAll(async () => {
    await rbac?.uninstall();
    if (kubeconfig) await deleteNamespace(kubeconfig, namespace);
  });

  async function canI(
    component: ChartComponent,
    [verb, resource, ns, subresource]: Access,
  ): Promise<boolean> {
    const args = ["auth", "can-i", verb, resource, `--as=${rbac.username(component)}`];
    args.push(...(ns === "*" ? ["--all-namespaces"] : ["-n", ns]));
    if (subresource) args.push(`--subresource=${subresource}`);
    const result = await kubectl(kubeconfig, args);
    // can-i prints yes/no and exits 0/1; anything else is an error of the check itself.
    if (result.stdout.trim() === "yes" && result.code === 0) return true;
    if (result.stdout.trim() === "no") return false;
    throw new Error(`kubectl ${args.join(" ")} failed (exit ${result.code}): ${result.stderr}`);
  }

  async function expectAccess(component: ChartComponent, allowed: Access[], denied: Access[]): Promise<void> {
    const checks = [
      ...allowed.map((access) => ({ access, want: true })),
      ...denied.map((access) => ({ access, want: false })),
    ];
    const wrong: string[] = [];
    // A few kubectl processes at a time: quicker than one by one, gentle on a shared machine.
    for (let i = 0; i < checks.length; i += 4) {
      await Promise.all(
        checks.slice(i, i + 4).map(async ({ access, want }) => {
          if ((await canI(component, access)) !== want) {
            wrong.push(`should be ${want ? "allowed" : "refused"}: ${access.join(" ")}`);
          }
        }),
      );
    }
    expect(wrong.sort()).toEqual([]);
  }

  it("lets the controller reconcile LambdaFunctions, record events and elect a leader, and nothing more", async () => {
    const lf = "lambdafunctions.esb.dev";
    await expectAccess(
      "controller",
      [
        ["get", lf, other],
        ["list", lf, "*"],
        ["watch", lf, "*"],
        ["update", lf, other],
        ["patch", lf, other],
        ["update", lf, other, "status"],
        ["patch", lf, other, "status"],
        ["update", lf, other, "finalizers"],
        ["get", "configmaps", other],
        ["create", "events", other],
        ["patch", "events", other],
        ["create", "events.events.k8s.io", other],
        ["list", "pods", namespace],
        ["watch", "pods", namespace],
        ["get", "leases.coordination.k8s.io", namespace],
        ["create", "leases.coordination.k8s.io", namespace],
        ["update", "leases.coordination.k8s.io", namespace],
        ["create", "tokenreviews.authentication.k8s.io", "*"],
        ["create", "subjectaccessreviews.authorization.k8s.io", "*"],
      ],
      [
        ["create", lf, other],
        ["delete", lf, other],
        ["get", "secrets", namespace],
        ["list", "secrets", "*"],
        ["update", "configmaps", other],
        ["delete", "configmaps", other],
        ["list", "configmaps", "*"],
        ["watch", "configmaps", "*"],
        ["list", "pods", other],
        ["create", "pods", namespace],
        ["delete", "pods", namespace],
        ["create", "leases.coordination.k8s.io", other],
        ["delete", "leases.coordination.k8s.io", namespace],
        ["list", "nodes", "*"],
        ["create", "clusterroles.rbac.authorization.k8s.io", "*"],
      ],
    );
  });

  it("lets the gateway read LambdaFunctions and find agents, and refuses it any write", async () => {
    const lf = "lambdafunctions.esb.dev";
    await expectAccess(
      "gateway",
      [
        ["get", lf, other],
        ["list", lf, "*"],
        ["watch", lf, "*"],
        ["list", "pods", namespace],
        ["watch", "pods", namespace],
        // Its /metrics callers: who they are and whether they may read it.
        ["create", "tokenreviews.authentication.k8s.io", "*"],
        ["create", "subjectaccessreviews.authorization.k8s.io", "*"],
      ],
      [
        ["update", lf, other],
        ["patch", lf, other],
        ["create", lf, other],
        ["delete", lf, other],
        ["update", lf, other, "status"],
        ["get", "secrets", namespace],
        ["get", "configmaps", namespace],
        ["list", "pods", other],
        ["create", "events", namespace],
        ["create", "leases.coordination.k8s.io", namespace],
      ],
    );
  });

  it("lets the agent review tokens and access (to know its and its /metrics' callers), and nothing more", async () => {
    await expectAccess(
      "agent",
      [
        ["create", "tokenreviews.authentication.k8s.io", "*"],
        ["create", "subjectaccessreviews.authorization.k8s.io", "*"],
      ],
      [
        ["get", "secrets", namespace],
        ["list", "secrets", "*"],
        ["list", "pods", namespace],
        ["get", "lambdafunctions.esb.dev", namespace],
        ["get", "configmaps", namespace],
        ["list", "nodes", "*"],
        ["create", "events", namespace],
        ["create", "serviceaccounts", namespace, "token"],
      ],
    );
  });

  it("serves real requests made with each ServiceAccount's token exactly as granted", async () => {
    // The admin creates a function; the components then act on it as themselves.
    const name = "rbac-probe";
    const manifest = {
      apiVersion: "esb.dev/v1alpha1",
      kind: "LambdaFunction",
      metadata: { name, namespace },
      spec: {
        runtime: "nodejs24.x",
        handler: "index.handler",
        code: { inline: { "index.mjs": "export const handler = async () => 1;" } },
      },
    };
    expectSuccess(
      await kubectl(kubeconfig, ["apply", "-f", "-"], JSON.stringify(manifest)),
      "kubectl apply (LambdaFunction)",
    );
    const target = { group: "esb.dev", version: "v1alpha1", plural: "lambdafunctions", namespace, name };
    const objects = (kc: KubeConfig): CustomObjectsApi => kc.makeApiClient(CustomObjectsApi);
    const statusOf = (promise: Promise<unknown>): Promise<number> =>
      promise.then(
        () => 200,
        (error: unknown) => {
          if (error instanceof ApiException) return error.code;
          throw error;
        },
      );

    const controller = await rbac.kubeConfigFor("controller");
    const gateway = await rbac.kubeConfigFor("gateway");
    const agent = await rbac.kubeConfigFor("agent");

    // Controller: reads, writes status (merge patch), reads ConfigMaps by name; no Secrets.
    expect(await statusOf(objects(controller).getNamespacedCustomObject(target))).toBe(200);
    const statusPatch = objects(controller).patchNamespacedCustomObjectStatus(
      { ...target, body: { status: { observedGeneration: 1, readyWorkers: 0 } } },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
    expect(await statusOf(statusPatch)).toBe(200);
    // A ConfigMap by name only: allowed (404 for one that does not exist), listing is not.
    const core = controller.makeApiClient(CoreV1Api);
    expect(await statusOf(core.readNamespacedConfigMap({ namespace, name: "no-such-code" }))).toBe(404);
    expect(await statusOf(core.listNamespacedConfigMap({ namespace }))).toBe(403);
    expect(await statusOf(controller.makeApiClient(CoreV1Api).listNamespacedSecret({ namespace }))).toBe(403);

    // Gateway: lists and reads functions everywhere; cannot change them.
    expect(
      await statusOf(
        objects(gateway).listClusterCustomObject({
          group: "esb.dev",
          version: "v1alpha1",
          plural: "lambdafunctions",
        }),
      ),
    ).toBe(200);
    expect(await statusOf(objects(gateway).getNamespacedCustomObject(target))).toBe(200);
    expect(await statusOf(objects(gateway).deleteNamespacedCustomObject(target))).toBe(403);
    expect(await statusOf(gateway.makeApiClient(CoreV1Api).listNamespacedPod({ namespace }))).toBe(200);

    // Agent: nothing.
    expect(await statusOf(objects(agent).getNamespacedCustomObject(target))).toBe(403);
    expect(await statusOf(agent.makeApiClient(CoreV1Api).listNamespacedSecret({ namespace }))).toBe(403);

    await kubectl(kubeconfig, ["delete", "lambdafunctions.esb.dev", name, "-n", namespace, "--wait=false"]);
  });
});
