import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { request } from "node:https";
import { CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { LAMBDA_FUNCTION_MESSAGES as M, validateLambdaFunction } from "@esb/common";
import {
  apiErrorMessage,
  createTestNamespace,
  deleteTestNamespace,
  installCrd,
  loadTestKubeConfig,
} from "./kube-test-support.js";

const group = "esb.dev";
const version = "v1alpha1";
const plural = "lambdafunctions";
const nodeSpec = {
  runtime: "nodejs22.x",
  handler: "index.handler",
  code: { inline: { "index.mjs": "export const handler = async () => 1;" } },
};

/** Invalid specs, with the messages the API server (CRD schema + CEL) must answer and the folder validation must share. */
const invalid: Array<{
  name: string;
  spec: Record<string, unknown>;
  messages: string[];
  sameInFolder: boolean;
}> = [
  { name: "neither", spec: { memorySize: 256 }, messages: [M.imageOrRuntime], sameInFolder: true },
  {
    name: "both",
    spec: { image: "localhost:5000/fn:1", ...nodeSpec },
    messages: [M.imageExclusive],
    sameInFolder: true,
  },
  {
    name: "no-handler",
    spec: { runtime: "nodejs24.x", code: { inline: { "index.mjs": "" } } },
    messages: [M.handlerRequired],
    sameInFolder: true,
  },
  {
    name: "no-handler-python",
    spec: { runtime: "python3.13", code: { inline: { "app.py": "" } } },
    messages: [M.handlerRequired],
    sameInFolder: true,
  },
  { name: "no-code", spec: { runtime: "provided" }, messages: [M.codeRequired], sameInFolder: true },
  {
    name: "two-codes",
    spec: { runtime: "provided", code: { path: "/srv/fn", inline: { bootstrap: "" } } },
    messages: [M.codeExactlyOne],
    sameInFolder: true,
  },
  {
    name: "over",
    spec: { image: "x", reservedConcurrency: 2, provisionedConcurrency: 5 },
    messages: [M.provisionedOverReserved],
    sameInFolder: true,
  },
  {
    name: "env-reserved",
    spec: { image: "x", environment: { variables: { AWS_LAMBDA_FUNCTION_NAME: "x", OK: "1" } } },
    messages: [M.envReserved],
    sameInFolder: true,
  },
  {
    name: "handler-climbs",
    spec: { runtime: "nodejs24.x", handler: "../../etc/passwd.x", code: { inline: { "index.mjs": "" } } },
    messages: [M.handlerInsideCode],
    sameInFolder: true,
  },
  {
    name: "handler-absolute",
    spec: { runtime: "provided", handler: "/etc/shadow", code: { inline: { bootstrap: "" } } },
    messages: [M.handlerInsideCode],
    sameInFolder: true,
  },
  {
    name: "env-name",
    spec: { image: "x", environment: { variables: { "1BAD": "x" } } },
    messages: [M.envName],
    sameInFolder: true,
  },
  {
    name: "route-slash",
    spec: { image: "x", http: { routes: [{ path: "items" }] } },
    messages: [M.routeSlash],
    sameInFolder: true,
  },
  {
    name: "route-form",
    spec: { image: "x", http: { routes: [{ path: "/items//{id}" }] } },
    messages: [M.routeForm],
    sameInFolder: true,
  },
  {
    name: "ranges",
    spec: { image: "x", memorySize: 64, timeout: 901, provisionedConcurrency: -1 },
    messages: [
      "spec.memorySize: Invalid value: 64: spec.memorySize in body should be greater than or equal to 128",
      "spec.timeout: Invalid value: 901: spec.timeout in body should be less than or equal to 900",
      "spec.provisionedConcurrency: Invalid value: -1: spec.provisionedConcurrency in body should be greater than or equal to 0",
    ],
    sameInFolder: false,
  },
  {
    name: "runtime-enum",
    spec: { runtime: "python3.12", handler: "h", code: { inline: { a: "" } } },
    messages: [
      'spec.runtime: Unsupported value: "python3.12": supported values: "nodejs24.x", "nodejs22.x", "python3.13", "python3.11", "provided", "provided.al2023"',
    ],
    sameInFolder: false,
  },
];

describe("LambdaFunction CRD on the real kube-apiserver", () => {
  let kc: KubeConfig;
  let api: CustomObjectsApi;
  let namespace: string;

  beforeAll(async () => {
    kc = loadTestKubeConfig();
    await installCrd(kc);
    api = kc.makeApiClient(CustomObjectsApi);
    namespace = await createTestNamespace(kc, "esb-crd");
  });

  afterAll(async () => {
    if (namespace) await deleteTestNamespace(kc, namespace);
  });

  const create = (name: string, spec: Record<string, unknown>) =>
    api.createNamespacedCustomObject({
      group,
      version,
      namespace,
      plural,
      body: { apiVersion: "esb.dev/v1alpha1", kind: "LambdaFunction", metadata: { name }, spec },
    });

  it.each(invalid)(
    "rejects $name with the expected message",
    async ({ name, spec, messages, sameInFolder }) => {
      let message = "";
      await create(name, spec).then(
        () => {
          throw new Error(`the API server accepted ${name}`);
        },
        (err: unknown) => {
          expect((err as { code?: number }).code).toBe(422);
          message = apiErrorMessage(err);
        },
      );
      for (const m of messages) expect(message).toContain(m);
      const folder = validateLambdaFunction({
        apiVersion: "esb.dev/v1alpha1",
        kind: "LambdaFunction",
        metadata: { name },
        spec,
      });
      expect(folder.ok).toBe(false);
      if (sameInFolder && !folder.ok)
        for (const m of messages) expect(folder.errors.some((e) => e.includes(m))).toBe(true);
    },
  );

  it("accepts a valid function and applies the schema defaults", async () => {
    const created = (await create("valid", {
      ...nodeSpec,
      http: { routes: [{ path: "/items/{id}", methods: ["GET"] }, { path: "/{proxy+}" }] },
    })) as {
      spec: Record<string, unknown>;
    };
    expect(created.spec).toMatchObject({
      memorySize: 128,
      timeout: 3,
      ephemeralStorage: 512,
      scaling: { pauseAfterMs: 50, keepWarmSeconds: 600 },
      http: { payloadFormat: "2.0" },
    });
    const folder = validateLambdaFunction({
      apiVersion: "esb.dev/v1alpha1",
      kind: "LambdaFunction",
      metadata: { name: "valid" },
      spec: { ...nodeSpec, http: { routes: [{ path: "/items/{id}" }] } },
    });
    expect(folder.ok && folder.fn.spec).toMatchObject({
      memorySize: 128,
      timeout: 3,
      ephemeralStorage: 512,
      scaling: { pauseAfterMs: 50, keepWarmSeconds: 600 },
      http: { payloadFormat: "2.0" },
    });
  });

  it("accepts an image function and is listed under the short name's resource", async () => {
    await create("image-fn", {
      image: "localhost:5000/hello:1",
      provisionedConcurrency: 1,
      reservedConcurrency: 1,
      environment: { variables: { GREETING: "hi" } },
    });
    const list = (await api.listNamespacedCustomObject({ group, version, namespace, plural })) as {
      items: Array<{ metadata: { name: string } }>;
    };
    expect(list.items.map((i) => i.metadata.name).sort()).toEqual(["image-fn", "valid"]);
  });

  it("shows Ready, Runtime, Image, Warm, Age and (wide) Reason columns", async () => {
    const server = new URL(kc.getCurrentCluster()!.server);
    const options: import("node:https").RequestOptions = {
      hostname: server.hostname,
      port: server.port,
      path: `/apis/${group}/${version}/namespaces/${namespace}/${plural}`,
      headers: { accept: "application/json;as=Table;v=v1;g=meta.k8s.io" },
    };
    await kc.applyToHTTPSOptions(options);
    const table = await new Promise<{ columnDefinitions: Array<{ name: string; priority: number }> }>(
      (resolve, reject) => {
        request(options, (res) => {
          let body = "";
          res.on("data", (d: Buffer) => (body += d.toString()));
          res.on("end", () => resolve(JSON.parse(body)));
        })
          .on("error", reject)
          .end();
      },
    );
    const columns = table.columnDefinitions.map((c) => [c.name, c.priority]);
    expect(columns).toEqual(
      expect.arrayContaining([
        ["Ready", 0],
        ["Runtime", 0],
        ["Image", 0],
        ["Warm", 0],
        ["Age", 0],
        ["Reason", 1],
      ]),
    );
  });
});
