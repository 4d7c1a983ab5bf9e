// The Lambda control-plane API in Kubernetes mode, every part real but the nodes: the AWS SDK v3 and
// CLI call a gateway that writes LambdaFunctions and code ConfigMaps into the real kube-apiserver
// AS THE CHART'S GATEWAY SERVICEACCOUNT (the chart's RBAC with SigV4 on), the controller
// (KubernetesFunctionSource) prepares the function on a real agent backed by the test containerd,
// and the code from the zip answers. `kubectl get lf` and the API agree both ways.
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import {
  CreateAliasCommand,
  CreateFunctionCommand,
  DeleteFunctionCommand,
  GetFunctionCommand,
  InvokeCommand,
  LambdaClient,
  ListFunctionsCommand,
  PublishVersionCommand,
  UpdateFunctionCodeCommand,
  UpdateFunctionConfigurationCommand,
  waitUntilFunctionActiveV2,
  waitUntilFunctionUpdatedV2,
} from "@aws-sdk/client-lambda";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { stringify } from "yaml";
import { createLogger, type LambdaFunction } from "@esb/common";
import { staticTokenSource } from "@esb/common/agent-credentials";
import { StaticAgentDirectory } from "@esb/controller/agent-directory";
import { Controller } from "@esb/controller/controller";
import { installCrd, loadTestKubeConfig } from "@esb/controller/kube-test-support";
import { KubernetesFunctionSource } from "@esb/controller/kubernetes-function-source";
import { makeZip } from "@esb/gateway/control-api-test-harness";
import { loadGatewayConfig } from "@esb/gateway/gateway-config";
import { GatewayServer } from "@esb/gateway/gateway-server";
import { KubernetesFunctionRegistry } from "@esb/gateway/kubernetes-function-registry";
import { KubernetesFunctionStore } from "@esb/gateway/kubernetes-function-store";
import { StaticAgentDiscovery } from "@esb/gateway/static-agent-discovery";
import { installChartRbac, type InstalledChartRbac } from "../install/chart-rbac.js";
import { createNamespace, deleteNamespace, expectSuccess, kubectl } from "../install/chart-tools.js";
import { E2eStack, waitFor } from "./e2e-stack.js";

const run = promisify(execFile);
const KEY = { accessKeyId: "ESBK8SADMIN", secretAccessKey: "k8s-control-admin-secret-01" };
/** Generous: the first run builds/pulls the Node runtime image. */
const READY_S = 600;
const code = (word: string) => `export const handler = async (e) => ({ word: "${word}", name: e?.name });\n`;

/** The error an SDK call failed with. */
async function failure(p: Promise<unknown>): Promise<{ name: string; message: string }> {
  try {
    await p;
  } catch (err) {
    return { name: (err as Error).name, message: (err as Error).message };
  }
  throw new Error("the call succeeded");
}

describe("Lambda control-plane API on Kubernetes (SDK/CLI → gateway → apiserver → controller → agent)", () => {
  const stack = new E2eStack();
  const logger = createLogger("control-k8s-e2e", { level: stack.logLevel() });
  let kubeconfig = "";
  let ns = "";
  let dir = "";
  let rbac: InstalledChartRbac | undefined;
  let lambda: LambdaClient;

  const k = async (...args: string[]) => kubectl(kubeconfig, ["-n", ns, ...args]);
  const getLf = async (name: string) =>
    JSON.parse(
      expectSuccess(await k("get", "lf", name, "-o", "json"), `kubectl get lf ${name}`),
    ) as LambdaFunction;
  const configMaps = async () =>
    expectSuccess(
      await k("get", "configmaps", "-l", "lambda.esb.dev/code-of", "-o", "name"),
      "kubectl get cm",
    )
      .split("\n")
      .filter(Boolean)
      .sort();
  const invoke = async (name: string) => {
    const out = await lambda.send(
      new InvokeCommand({ FunctionName: name, Payload: Buffer.from(JSON.stringify({ name: "k8s" })) }),
    );
    expect(out.FunctionError).toBeUndefined();
    return JSON.parse(Buffer.from(out.Payload!).toString()) as Record<string, unknown>;
  };

  beforeAll(async () => {
    const kc = loadTestKubeConfig();
    kubeconfig = process.env.ESB_TEST_KUBECONFIG!;
    await installCrd(kc);
    ns = `esb-ctl-${stack.id}`;
    await createNamespace(kubeconfig, ns);
    rbac = await installChartRbac({
      kubeconfig,
      release: `ctl${stack.id}`,
      namespace: ns,
      set: ["gateway.auth.sigv4.enabled=true", "gateway.auth.sigv4.existingSecret=keys"],
    });
    dir = await mkdtemp(join(tmpdir(), "esb-control-k8s-"));
    const keys = join(dir, "keys.yaml");
    await writeFile(keys, stringify({ credentials: [{ ...KEY, namespaces: [ns] }] }), { mode: 0o600 });
    await stack.startAgent();
    const config = loadGatewayConfig({
      GATEWAY_PORT: "0",
      GATEWAY_HOST: "127.0.0.1",
      GATEWAY_NAMESPACE: ns,
      AGENT_URLS: stack.agentUrl,
      GATEWAY_HEARTBEAT_MS: "200",
      GATEWAY_HOLDER_ID: `control-k8s-${stack.id}`,
      GATEWAY_CREDENTIALS_FILE: keys,
    });
    // The gateway reads and writes with the chart's gateway ServiceAccount, nothing more.
    const gatewayKc = await rbac.kubeConfigFor("gateway");
    stack.gateway = new GatewayServer({
      config,
      registry: new KubernetesFunctionRegistry(gatewayKc, ns, logger),
      discovery: new StaticAgentDiscovery(config.agentUrls),
      agentToken: staticTokenSource(stack.agentTokens.gateway),
      functionStore: new KubernetesFunctionStore(gatewayKc),
      logger,
    });
    stack.endpoint = `http://127.0.0.1:${await stack.gateway.start()}`;
    lambda = new LambdaClient({
      endpoint: stack.endpoint,
      region: "us-east-1",
      credentials: KEY,
      maxAttempts: 1,
    });
    stack.controller = new Controller({
      source: new KubernetesFunctionSource(kc, {
        namespace: ns,
        logger,
        instance: `control-k8s-${stack.id}`,
      }),
      agents: new StaticAgentDirectory([stack.agentUrl]),
      agentToken: staticTokenSource(stack.agentTokens.controller),
      gatewayUrl: stack.endpoint,
      gatewayNamespace: ns,
      logger,
    });
    await stack.controller.start();
  }, 300_000);

  afterAll(async () => {
    lambda?.destroy();
    try {
      if (ns && stack.controller)
        await k("delete", "lf", "--all", "--ignore-not-found", "--wait=true", "--timeout=120s");
      await stack.stop();
    } finally {
      await stack.cleanup();
      await rbac?.uninstall();
      if (ns) await deleteNamespace(kubeconfig, ns);
      if (dir) await rm(dir, { recursive: true, force: true });
    }
  }, 300_000);

  it(
    "CreateFunction with a zip → a LambdaFunction and its code ConfigMap; Active; the zip's code answers",
    async () => {
      // A folder in the zip: the ConfigMap keeps the zip, the controller unpacks it.
      const zip = await makeZip({
        "index.mjs": `export { handler } from "./lib/handler.mjs";\n`,
        "lib/handler.mjs": code("one"),
      });
      const created = await lambda.send(
        new CreateFunctionCommand({
          FunctionName: "api-fn",
          Runtime: "nodejs24.x",
          Handler: "index.handler",
          Role: "arn:aws:iam::000000000000:role/esb",
          Code: { ZipFile: zip },
        }),
      );
      expect(created).toMatchObject({ State: "Pending", LastUpdateStatus: "InProgress" });
      const lf = await getLf("api-fn");
      expect(lf.spec).toMatchObject({ runtime: "nodejs24.x", handler: "index.handler" });
      expect(lf.spec.code?.configMap?.zipKey).toBe("code.zip");
      expect(await configMaps()).toEqual([`configmap/${lf.spec.code!.configMap!.name}`]);
      await waitUntilFunctionActiveV2({ client: lambda, maxWaitTime: READY_S }, { FunctionName: "api-fn" });
      expect(await invoke("api-fn")).toEqual({ word: "one", name: "k8s" });
    },
    READY_S * 1000,
  );

  it(
    "UpdateFunctionCode → a new ConfigMap, the old one removed; wait function-updated-v2; the new code answers",
    async () => {
      const before = await configMaps();
      await lambda.send(
        new UpdateFunctionCodeCommand({
          FunctionName: "api-fn",
          ZipFile: await makeZip({ "index.mjs": code("two") }),
        }),
      );
      await waitUntilFunctionUpdatedV2({ client: lambda, maxWaitTime: READY_S }, { FunctionName: "api-fn" });
      const after = await configMaps();
      expect(after).toHaveLength(1);
      expect(after).not.toEqual(before);
      expect(await invoke("api-fn")).toEqual({ word: "two", name: "k8s" });
    },
    READY_S * 1000,
  );

  it(
    "PublishVersion → a LambdaFunction api-fn.v1 the controller runs; an alias runs it after the function changed",
    async () => {
      const v = await lambda.send(new PublishVersionCommand({ FunctionName: "api-fn" }));
      expect(v.Version).toBe("1");
      expect((await getLf("api-fn.v1")).metadata.annotations?.["lambda.esb.dev/version-of"]).toBe("api-fn");
      await lambda.send(
        new UpdateFunctionCodeCommand({
          FunctionName: "api-fn",
          ZipFile: await makeZip({ "index.mjs": code("three") }),
        }),
      );
      await waitUntilFunctionUpdatedV2({ client: lambda, maxWaitTime: READY_S }, { FunctionName: "api-fn" });
      await lambda.send(
        new CreateAliasCommand({ FunctionName: "api-fn", Name: "live", FunctionVersion: "1" }),
      );
      await waitUntilFunctionActiveV2(
        { client: lambda, maxWaitTime: READY_S },
        { FunctionName: "api-fn", Qualifier: "1" },
      );
      // Two code ConfigMaps now: the function's and the version's.
      expect(await configMaps()).toHaveLength(2);
      expect(await invoke("api-fn")).toEqual({ word: "three", name: "k8s" });
      const out = await lambda.send(
        new InvokeCommand({ FunctionName: "api-fn", Qualifier: "live", Payload: Buffer.from("{}") }),
      );
      expect(out.ExecutedVersion).toBe("1");
      expect(JSON.parse(Buffer.from(out.Payload!).toString())).toMatchObject({ word: "two" });
    },
    READY_S * 1000,
  );

  it(
    "a function made with kubectl apply is listed and updatable through the API",
    async () => {
      const file = join(dir, "applied.yaml");
      await writeFile(
        file,
        stringify({
          apiVersion: "esb.dev/v1alpha1",
          kind: "LambdaFunction",
          metadata: { name: "applied", namespace: ns },
          spec: {
            runtime: "nodejs24.x",
            handler: "index.handler",
            code: { inline: { "index.mjs": code("kubectl") } },
          },
        }),
      );
      expectSuccess(await k("apply", "-f", file), "kubectl apply");
      await waitUntilFunctionActiveV2({ client: lambda, maxWaitTime: READY_S }, { FunctionName: "applied" });
      const list = await lambda.send(new ListFunctionsCommand({}));
      // The version object is not listed as a function.
      expect(list.Functions?.map((f) => f.FunctionName).sort()).toEqual(["api-fn", "applied"]);
      await lambda.send(new UpdateFunctionConfigurationCommand({ FunctionName: "applied", MemorySize: 192 }));
      expect((await getLf("applied")).spec.memorySize).toBe(192);
      await waitUntilFunctionUpdatedV2({ client: lambda, maxWaitTime: READY_S }, { FunctionName: "applied" });
      expect(await invoke("applied")).toEqual({ word: "kubectl", name: "k8s" });
    },
    READY_S * 1000,
  );

  it("bad input: AWS's errors, and nothing is created in the cluster", async () => {
    const lfs = expectSuccess(await k("get", "lf", "-o", "name"), "kubectl get lf");
    const cms = await configMaps();
    const create = (name: string, zip: Buffer, runtime = "nodejs24.x") =>
      lambda.send(
        new CreateFunctionCommand({
          FunctionName: name,
          Runtime: runtime as "nodejs24.x",
          Handler: "index.handler",
          Role: "r",
          Code: { ZipFile: zip },
        }),
      );
    const small = await makeZip({ "index.mjs": code("x") });
    expect((await failure(create("api-fn", small))).name).toBe("ResourceConflictException");
    expect((await failure(create("r1", small, "java4"))).name).toBe("InvalidParameterValueException");
    expect((await failure(create("r2", Buffer.from("nope")))).name).toBe("InvalidParameterValueException");
    // A ConfigMap holds 1 MiB: a larger zip is refused with the reason, before anything is stored.
    const big = await failure(create("r4", await makeZip({ "index.mjs": randomBytes(1100 * 1024) })));
    expect(big.message).toContain("ConfigMap");
    expect(big.name).toBe("InvalidParameterValueException");
    expect((await failure(lambda.send(new GetFunctionCommand({ FunctionName: "nope" })))).name).toBe(
      "ResourceNotFoundException",
    );
    // Another namespace is not the API's to write.
    const other = await failure(lambda.send(new DeleteFunctionCommand({ FunctionName: "default/api-fn" })));
    expect(other.name).toBe("AccessDeniedException");
    expect(expectSuccess(await k("get", "lf", "-o", "name"), "kubectl get lf")).toBe(lfs);
    expect(await configMaps()).toEqual(cms);
  });

  it("the chart gives the gateway exactly these writes, in its own namespace only", async () => {
    // "resource/status" means the status subresource here (kubectl's own syntax would read a name).
    const can = async (verb: string, resource: string, namespace: string) => {
      const [res, sub] = resource.split("/");
      const args = ["auth", "can-i", verb, res, "-n", namespace, `--as=${rbac!.username("gateway")}`];
      if (sub) args.push(`--subresource=${sub}`);
      return (await kubectl(kubeconfig, args)).stdout.trim() === "yes";
    };
    const lf = "lambdafunctions.esb.dev";
    for (const verb of ["create", "update", "delete"])
      expect([verb, await can(verb, lf, ns)]).toEqual([verb, true]);
    for (const verb of ["create", "list", "delete"])
      expect([verb, await can(verb, "configmaps", ns)]).toEqual([verb, true]);
    const refused: [string, string, string][] = [
      ["create", lf, "default"],
      ["delete", lf, "default"],
      ["patch", lf, ns],
      ["update", `${lf}/status`, ns],
      ["create", "configmaps", "default"],
      ["get", "configmaps", ns],
      ["update", "configmaps", ns],
      ["get", "secrets", ns],
    ];
    for (const [verb, resource, namespace] of refused)
      expect([verb, resource, namespace, await can(verb, resource, namespace)]).toEqual([
        verb,
        resource,
        namespace,
        false,
      ]);
  }, 120_000);

  it("the AWS CLI: get-function-configuration and delete-function; kubectl then finds nothing", async () => {
    const env = {
      PATH: process.env.PATH ?? "",
      HOME: dir,
      AWS_ACCESS_KEY_ID: KEY.accessKeyId,
      AWS_SECRET_ACCESS_KEY: KEY.secretAccessKey,
      AWS_DEFAULT_REGION: "us-east-1",
      AWS_CONFIG_FILE: join(dir, "none"),
      AWS_SHARED_CREDENTIALS_FILE: join(dir, "none"),
    };
    const aws = async (...args: string[]) =>
      (await run("aws", ["lambda", ...args, "--endpoint-url", stack.endpoint, "--output", "json"], { env }))
        .stdout;
    expect(JSON.parse(await aws("get-function-configuration", "--function-name", "api-fn"))).toMatchObject({
      State: "Active",
      LastUpdateStatus: "Successful",
    });
    await aws("delete-function", "--function-name", "api-fn");
    await aws("delete-function", "--function-name", "applied");
    // The controller's finalizer runs after the API's answer: the objects go soon after.
    await waitFor(
      async () => expectSuccess(await k("get", "lf", "-o", "name"), "kubectl get lf").trim() === "",
      120_000,
      "LambdaFunctions deleted",
    );
    expect(await configMaps()).toEqual([]);
  }, 180_000);
});
