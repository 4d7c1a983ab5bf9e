import { readFile } from "node:fs/promises";
import {
  ApiextensionsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  loadYaml,
  type V1CustomResourceDefinition,
} from "@kubernetes/client-node";

/** Path of the LambdaFunction CRD manifest in the repository. */
export const CRD_FILE = new URL("../../crds/esb.dev_lambdafunctions.yaml", import.meta.url);

/**
 * Test support: the kubeconfig of the test environment's real kube-apiserver
 * (`ESB_TEST_KUBECONFIG`). Throws when it is missing, so tests fail rather
 * than silently skip.
 */
export function loadTestKubeConfig(): KubeConfig {
  const path = process.env.ESB_TEST_KUBECONFIG;
  if (!path)
    throw new Error(
      "ESB_TEST_KUBECONFIG is not set: the test environment's kube-apiserver is required (hack/dev-env.sh up --only kube)",
    );
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  return kc;
}

/** The message of a client-node API error (the Status `message` from the API server). */
export function apiErrorMessage(err: unknown): string {
  const e = err as { body?: unknown; message?: string };
  if (typeof e?.body === "string") {
    try {
      return (JSON.parse(e.body) as { message?: string }).message ?? e.body;
    } catch {
      return e.body;
    }
  }
  if (e?.body && typeof e.body === "object")
    return (e.body as { message?: string }).message ?? JSON.stringify(e.body);
  return e?.message ?? String(err);
}

function statusCode(err: unknown): number | undefined {
  return (err as { code?: number })?.code;
}

/** Creates or updates the LambdaFunction CRD and waits until it is Established. */
export async function installCrd(kc: KubeConfig): Promise<void> {
  const api = kc.makeApiClient(ApiextensionsV1Api);
  // loadYaml maps the wire names (x-kubernetes-validations, default) to the
  // client's model names; a plain YAML parse would have them silently dropped.
  const crd = loadYaml<V1CustomResourceDefinition>(await readFile(CRD_FILE, "utf8"));
  const name = crd.metadata!.name!;
  for (let attempt = 0; ; attempt++) {
    try {
      await api.createCustomResourceDefinition({ body: crd });
      break;
    } catch (err) {
      if (statusCode(err) !== 409) throw err;
      try {
        const existing = await api.readCustomResourceDefinition({ name });
        await api.replaceCustomResourceDefinition({
          name,
          body: {
            ...crd,
            metadata: { ...crd.metadata, resourceVersion: existing.metadata?.resourceVersion },
          },
        });
        break;
      } catch (e) {
        if (statusCode(e) !== 409 || attempt > 10) throw e;
      }
    }
  }
  const end = Date.now() + 60_000;
  for (;;) {
    const c = await api.readCustomResourceDefinition({ name });
    if (c.status?.conditions?.some((x) => x.type === "Established" && x.status === "True")) break;
    if (Date.now() > end)
      throw new Error(`CRD ${name} not Established: ${JSON.stringify(c.status?.conditions)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  // Established can precede the API being served by a moment.
  await new Promise((r) => setTimeout(r, 500));
}

/** Creates a namespace with a unique name for one test file. */
export async function createTestNamespace(kc: KubeConfig, prefix: string): Promise<string> {
  const name = `${prefix}-${Math.random().toString(36).slice(2, 8)}`;
  await kc.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name } } });
  return name;
}

/** Deletes a test namespace (without a namespace controller it stays Terminating; its name is never reused). */
export async function deleteTestNamespace(kc: KubeConfig, name: string): Promise<void> {
  // Finalizers left by a test (no controller runs any more) would keep its LambdaFunctions forever.
  const api = kc.makeApiClient(CustomObjectsApi);
  const target = { group: "esb.dev", version: "v1alpha1", namespace: name, plural: "lambdafunctions" };
  const list = (await api.listNamespacedCustomObject(target).catch(() => ({ items: [] }))) as {
    items: { metadata: { name: string; finalizers?: string[] } }[];
  };
  for (const fn of list.items.filter((f) => f.metadata.finalizers?.length)) {
    await api
      .patchNamespacedCustomObject({
        ...target,
        name: fn.metadata.name,
        body: [{ op: "remove", path: "/metadata/finalizers" }],
      })
      .catch(() => undefined);
  }
  await kc
    .makeApiClient(CoreV1Api)
    .deleteNamespace({ name })
    .catch(() => undefined);
}

/** Polls `fn` until it returns a truthy value; throws after `timeoutMs`. */
export async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 60_000,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end)
      throw new Error(`timed out waiting for ${what}${last ? `: ${apiErrorMessage(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
