// Proves the test kube-apiserver is real: a CustomResourceDefinition becomes
// Established, its schema and CEL rules are enforced, and custom objects are
// stored, read and deleted.
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import {
  ApiException,
  ApiextensionsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  type V1CustomResourceDefinition,
} from "@kubernetes/client-node";
import { setTimeout as sleep } from "node:timers/promises";
import { testKubeconfig } from "../env/dev-env.js";

describe("test kube-apiserver", () => {
  const suffix = `${process.pid}${Date.now()}`;
  const group = `smoke${suffix}.esb.dev`;
  const plural = "widgets";
  const crdName = `${plural}.${group}`;
  const namespace = "default";
  let extensions: ApiextensionsV1Api;
  let objects: CustomObjectsApi;
  let core: CoreV1Api;

  beforeAll(() => {
    const kc = new KubeConfig();
    kc.loadFromFile(testKubeconfig());
    extensions = kc.makeApiClient(ApiextensionsV1Api);
    objects = kc.makeApiClient(CustomObjectsApi);
    core = kc.makeApiClient(CoreV1Api);
  });

  afterAll(async () => {
    await extensions?.deleteCustomResourceDefinition({ name: crdName }).catch(() => undefined);
  });

  it("lists namespaces as the admin user", async () => {
    const list = await core.listNamespace();
    expect(list.items.map((n) => n.metadata?.name)).toContain("default");
  });

  it("establishes a CRD and stores, validates and deletes custom objects", async () => {
    const crd: V1CustomResourceDefinition = {
      apiVersion: "apiextensions.k8s.io/v1",
      kind: "CustomResourceDefinition",
      metadata: { name: crdName },
      spec: {
        group,
        scope: "Namespaced",
        names: { plural, singular: "widget", kind: "Widget", listKind: "WidgetList" },
        versions: [
          {
            name: "v1",
            served: true,
            storage: true,
            schema: {
              openAPIV3Schema: {
                type: "object",
                properties: {
                  spec: {
                    type: "object",
                    required: ["size"],
                    properties: { size: { type: "integer", minimum: 1 }, max: { type: "integer" } },
                    x_kubernetes_validations: [
                      { rule: "self.size <= self.max", message: "size must not exceed max" },
                    ],
                  },
                },
              },
            },
          },
        ],
      },
    };
    await extensions.createCustomResourceDefinition({ body: crd });

    let established = false;
    for (let i = 0; i < 300 && !established; i++) {
      const current = await extensions.readCustomResourceDefinition({ name: crdName });
      established = !!current.status?.conditions?.some(
        (c) => c.type === "Established" && c.status === "True",
      );
      if (!established) await sleep(100);
    }
    expect(established).toBe(true);

    const body = {
      apiVersion: `${group}/v1`,
      kind: "Widget",
      metadata: { name: "w1" },
      spec: { size: 2, max: 5 },
    };
    // Discovery of a just-established CRD can lag a moment behind its condition.
    let created: { metadata?: { uid?: string } } | undefined;
    for (let i = 0; i < 100 && !created; i++) {
      try {
        created = (await objects.createNamespacedCustomObject({
          group,
          version: "v1",
          namespace,
          plural,
          body,
        })) as typeof created;
      } catch (error) {
        if (!(error instanceof ApiException && error.code === 404)) throw error;
        await sleep(100);
      }
    }
    expect(created?.metadata?.uid).toBeTruthy();

    const read = (await objects.getNamespacedCustomObject({
      group,
      version: "v1",
      namespace,
      plural,
      name: "w1",
    })) as {
      spec: { size: number; max: number };
    };
    expect(read.spec).toEqual({ size: 2, max: 5 });

    // The CEL rule rejects a bad object at create time.
    const bad = { ...body, metadata: { name: "w2" }, spec: { size: 9, max: 5 } };
    const rejected = await objects
      .createNamespacedCustomObject({ group, version: "v1", namespace, plural, body: bad })
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    expect(rejected).toBeInstanceOf(ApiException);
    expect((rejected as ApiException<string>).code).toBe(422);
    expect(String((rejected as ApiException<string>).body)).toContain("size must not exceed max");

    await objects.deleteNamespacedCustomObject({ group, version: "v1", namespace, plural, name: "w1" });
    const gone = await objects
      .getNamespacedCustomObject({ group, version: "v1", namespace, plural, name: "w1" })
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    expect((gone as ApiException<string>).code).toBe(404);
  });
});
