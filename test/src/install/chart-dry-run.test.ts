// What the chart renders is valid for a real kube-apiserver: `helm template |
// kubectl apply --dry-run=server` against the test apiserver (CRDs installed
// first), for the defaults and for the optional features, and `helm install
// --dry-run=server` prints NOTES that tell the user how to invoke a function.
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { testKubeconfig } from "../env/dev-env.js";
import {
  applyChartCrds,
  chartDir,
  createNamespace,
  deleteNamespace,
  expectSuccess,
  helm,
  kubectl,
  renderChart,
  toYamlStream,
  uniqueName,
  type RenderOptions,
} from "./chart-tools.js";

describe("helm chart against the test kube-apiserver", () => {
  let kubeconfig: string;
  const namespace = uniqueName("esb-dry");

  beforeAll(async () => {
    kubeconfig = testKubeconfig();
    await applyChartCrds(kubeconfig);
    await createNamespace(kubeconfig, namespace);
  });

  afterAll(async () => {
    if (kubeconfig) await deleteNamespace(kubeconfig, namespace);
  });

  async function hasServiceMonitorCrd(): Promise<boolean> {
    const result = await kubectl(kubeconfig, [
      "get",
      "crd",
      "servicemonitors.monitoring.coreos.com",
      "-o",
      "name",
    ]);
    return result.code === 0;
  }

  /** Server-side dry run of the rendered chart; returns the kinds/names the server accepted. */
  async function dryRun(options: RenderOptions): Promise<string[]> {
    let { manifests } = await renderChart({ release: "esb", namespace, ...options });
    // The Prometheus Operator's CRD is not part of ESB; without it the server
    // cannot know the kind, so those objects are left out of the dry run.
    if (!(await hasServiceMonitorCrd())) manifests = manifests.filter((m) => m.kind !== "ServiceMonitor");
    const out = expectSuccess(
      await kubectl(
        kubeconfig,
        ["apply", "--dry-run=server", "-n", namespace, "-o", "name", "-f", "-"],
        toYamlStream(manifests),
      ),
      "kubectl apply --dry-run=server",
    );
    return out.trim().split("\n").sort();
  }

  it("accepts every object of the default rendering", async () => {
    const accepted = await dryRun({});
    expect(accepted).toEqual(
      expect.arrayContaining([
        "clusterrole.rbac.authorization.k8s.io/esb-controller",
        "clusterrole.rbac.authorization.k8s.io/esb-gateway",
        "daemonset.apps/esb-agent",
        "deployment.apps/esb-controller",
        "deployment.apps/esb-gateway",
        "networkpolicy.networking.k8s.io/esb-agent",
        "poddisruptionbudget.policy/esb-controller",
        "poddisruptionbudget.policy/esb-gateway",
        "role.rbac.authorization.k8s.io/esb-controller",
        "service/esb-gateway",
        "serviceaccount/esb-agent",
      ]),
    );
  });

  it("accepts the rendering with ingress, TLS, ServiceMonitor, a watched namespace and the docker runtime", async () => {
    const accepted = await dryRun({
      set: [
        "gateway.ingress.enabled=true",
        "gateway.ingress.className=nginx",
        "gateway.ingress.host=lambda.example.com",
        "gateway.ingress.tls.enabled=true",
        "gateway.ingress.tls.secretName=lambda-tls",
        "serviceMonitor.enabled=true",
        `controller.watchNamespace=${namespace}`,
        "agent.runtime=docker",
        "image.registry=localhost:5001",
      ],
    });
    expect(accepted).toContain("ingress.networking.k8s.io/esb-gateway");
    expect(accepted).toContain("role.rbac.authorization.k8s.io/esb-controller");
    expect(accepted).not.toContain("clusterrole.rbac.authorization.k8s.io/esb-controller");
  });

  it("installs with helm (server-side dry run) and its NOTES tell how to invoke the first function", async () => {
    const result = await helm([
      "install",
      "esb",
      chartDir,
      "--namespace",
      namespace,
      "--kubeconfig",
      kubeconfig,
      "--dry-run=server",
      "--set",
      "gateway.ingress.enabled=true",
    ]);
    const out = expectSuccess(result, "helm install --dry-run=server");
    expect(out).toContain("NOTES:");
    expect(out).toContain("kind: LambdaFunction");
    expect(out).toContain("curl -s -X POST http://localhost/2015-03-31/functions/hello/invocations");
    expect(out).toContain("aws lambda invoke --endpoint-url http://localhost");
  });
});
