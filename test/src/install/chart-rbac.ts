// Installs exactly the RBAC that the Helm chart grants (its ServiceAccounts,
// Roles, ClusterRoles and bindings, rendered by `helm template`) into the test
// kube-apiserver, and hands out clients that authenticate AS those
// ServiceAccounts (short-lived tokens from the TokenRequest API). Tests of the
// controller and gateway can run them with these clients to show the chart's
// permissions suffice.
import { KubeConfig } from "@kubernetes/client-node";
import { expectSuccess, kubectl, renderChart, toYamlStream, type Manifest } from "./chart-tools.js";

/** The chart's components that have a ServiceAccount. */
export type ChartComponent = "controller" | "gateway" | "agent";

/** Kinds that make up the chart's RBAC. */
const rbacKinds = new Set(["ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"]);

/** The chart's RBAC installed in the test cluster under one release name. */
export interface InstalledChartRbac {
  release: string;
  namespace: string;
  /** What was applied, as rendered by the chart. */
  manifests: Manifest[];
  /** ServiceAccount name of a component (e.g. `<release>-esb-gateway`). */
  serviceAccount(component: ChartComponent): string;
  /** `system:serviceaccount:<namespace>:<name>` of a component, for impersonation. */
  username(component: ChartComponent): string;
  /** A KubeConfig that authenticates as the component's ServiceAccount (bearer token, 1 h). */
  kubeConfigFor(component: ChartComponent): Promise<KubeConfig>;
  /** A 1 h token of the component's ServiceAccount from the TokenRequest API, for `audience` if given. */
  tokenFor(component: ChartComponent, audience?: string): Promise<string>;
  /** Deletes everything that was applied (cluster-scoped objects included). */
  uninstall(): Promise<void>;
}

/**
 * Renders the chart for `release` in `namespace` (which must exist) with
 * `set` values and applies its RBAC objects with the admin `kubeconfig`.
 */
export async function installChartRbac(options: {
  kubeconfig: string;
  release: string;
  namespace: string;
  set?: string[];
}): Promise<InstalledChartRbac> {
  const { kubeconfig, release, namespace } = options;
  const rendered = await renderChart({ release, namespace, set: options.set });
  const manifests = rendered.manifests.filter((m) => rbacKinds.has(m.kind));
  const stream = toYamlStream(manifests);
  expectSuccess(await kubectl(kubeconfig, ["apply", "-f", "-"], stream), "kubectl apply (chart RBAC)");

  const serviceAccount = (component: ChartComponent): string => {
    const found = manifests.find(
      (m) => m.kind === "ServiceAccount" && m.metadata.labels?.["app.kubernetes.io/component"] === component,
    );
    if (!found) throw new Error(`the chart rendered no ServiceAccount for the ${component}`);
    return found.metadata.name;
  };

  const tokenFor = async (component: ChartComponent, audience?: string): Promise<string> =>
    expectSuccess(
      await kubectl(kubeconfig, [
        "create",
        "token",
        serviceAccount(component),
        "-n",
        namespace,
        "--duration=1h",
        ...(audience ? ["--audience", audience] : []),
      ]),
      "kubectl create token",
    ).trim();

  return {
    release,
    namespace,
    manifests,
    serviceAccount,
    username: (component) => `system:serviceaccount:${namespace}:${serviceAccount(component)}`,
    tokenFor,
    async kubeConfigFor(component) {
      const token = await tokenFor(component);
      const admin = new KubeConfig();
      admin.loadFromFile(kubeconfig);
      const cluster = admin.getCurrentCluster();
      if (!cluster) throw new Error(`${kubeconfig} has no current cluster`);
      const user = `${namespace}-${serviceAccount(component)}`;
      const kc = new KubeConfig();
      kc.loadFromOptions({
        clusters: [cluster],
        users: [{ name: user, token }],
        contexts: [{ name: user, cluster: cluster.name, user, namespace }],
        currentContext: user,
      });
      return kc;
    },
    async uninstall() {
      await kubectl(kubeconfig, ["delete", "--ignore-not-found", "--wait=false", "-f", "-"], stream);
    },
  };
}
