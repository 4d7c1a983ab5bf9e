// @esb-test unit: needs no test environment (`make test-unit` runs it).
// GetFunction through the real AWS SDK against a real gateway: State and LastUpdateStatus follow
// the LambdaFunction's Ready condition as the controller reports it (standalone wiring: the folder
// registry has no status, a lookup gives the controller's view).
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { GetFunctionCommand, LambdaClient } from "@aws-sdk/client-lambda";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger, type Condition, type LambdaFunction } from "@esb/common";
import { FolderFunctionRegistry } from "./folder-function-registry.js";
import { loadGatewayConfig } from "./gateway-config.js";
import { GatewayServer } from "./gateway-server.js";
import { testFunctionManifest } from "./gateway-test-harness.js";
import { LoopbackTestAgent } from "./loopback-test-agent.js";
import { StaticAgentDiscovery } from "./static-agent-discovery.js";
import { functionStateOf } from "./function-state.js";

const agent = new LoopbackTestAgent();
let gateway: GatewayServer;
let dir = "";
let lambda: LambdaClient;
/** What the controller knows, keyed `namespace/name`; tests set it. */
const controllerView = new Map<string, LambdaFunction>();

function withReady(
  generation: number,
  ready: Omit<Condition, "type" | "lastTransitionTime"> | undefined,
  revision?: string,
): LambdaFunction {
  return {
    apiVersion: "esb.dev/v1alpha1",
    kind: "LambdaFunction",
    metadata: { name: "echo", namespace: "default", generation },
    spec: { runtime: "nodejs22.x", handler: "index.handler", code: { inline: { "index.mjs": "" } } },
    status: {
      observedGeneration: ready?.observedGeneration,
      conditions: ready ? [{ type: "Ready", lastTransitionTime: new Date().toISOString(), ...ready }] : [],
      ...(revision ? { revision } : {}),
    },
  } as LambdaFunction;
}

async function configuration() {
  const out = await lambda.send(new GetFunctionCommand({ FunctionName: "echo" }));
  const c = out.Configuration ?? {};
  return {
    State: c.State,
    StateReason: c.StateReason,
    StateReasonCode: c.StateReasonCode,
    LastUpdateStatus: c.LastUpdateStatus,
    LastUpdateStatusReasonCode: c.LastUpdateStatusReasonCode,
  };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "esb-get-function-"));
  await writeFile(join(dir, "functions.yaml"), testFunctionManifest("echo"));
  await agent.listen();
  const config = loadGatewayConfig({
    GATEWAY_PORT: "0",
    GATEWAY_HOST: "127.0.0.1",
    AGENT_URLS: agent.url,
    FUNCTIONS_DIR: dir,
  });
  const logger = createLogger("get-function-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });
  gateway = new GatewayServer({
    config,
    registry: new FolderFunctionRegistry(dir, config.namespace, logger),
    discovery: new StaticAgentDiscovery(config.agentUrls),
    logger,
    functionStatus: (namespace, name) => controllerView.get(`${namespace}/${name}`),
  });
  const port = await gateway.start();
  lambda = new LambdaClient({
    endpoint: `http://127.0.0.1:${port}`,
    region: "us-east-1",
    credentials: { accessKeyId: "x", secretAccessKey: "x" },
    maxAttempts: 1,
  });
});

afterAll(async () => {
  lambda?.destroy();
  await gateway?.stop();
  await agent.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("GetFunction State and LastUpdateStatus (AWS SDK)", () => {
  it("is Pending / InProgress before the controller has decided", async () => {
    controllerView.clear();
    expect(await configuration()).toMatchObject({
      State: "Pending",
      StateReasonCode: "Creating",
      LastUpdateStatus: "InProgress",
    });
  });

  it("stays Pending while the warm pool fills for the first time", async () => {
    controllerView.set(
      "default/echo",
      withReady(1, {
        status: "False",
        reason: "WarmingUp",
        message: "0 of 2 provisioned workers warm",
        observedGeneration: 1,
      }),
    );
    expect(await configuration()).toMatchObject({
      State: "Pending",
      StateReason: "0 of 2 provisioned workers warm",
      LastUpdateStatus: "InProgress",
    });
  });

  it("is Active / Successful once Ready=True for the current generation", async () => {
    controllerView.set(
      "default/echo",
      withReady(
        1,
        { status: "True", reason: "Ready", message: "ready on 1 nodes", observedGeneration: 1 },
        "r1",
      ),
    );
    expect(await configuration()).toEqual({
      State: "Active",
      StateReason: undefined,
      StateReasonCode: undefined,
      LastUpdateStatus: "Successful",
      LastUpdateStatusReasonCode: undefined,
    });
  });

  it("stays Active with LastUpdateStatus InProgress while a new generation is prepared", async () => {
    controllerView.set(
      "default/echo",
      withReady(
        2,
        { status: "True", reason: "Ready", message: "ready on 1 nodes", observedGeneration: 1 },
        "r1",
      ),
    );
    expect(await configuration()).toMatchObject({
      State: "Active",
      LastUpdateStatus: "InProgress",
      LastUpdateStatusReasonCode: "Updating",
    });
  });

  it("is Failed with the reason and an AWS StateReasonCode when preparing failed", async () => {
    controllerView.set(
      "default/echo",
      withReady(3, {
        status: "False",
        reason: "InvalidCode",
        message: "spec.code.path ./missing does not exist",
        observedGeneration: 3,
      }),
    );
    expect(await configuration()).toEqual({
      State: "Failed",
      StateReason: "InvalidCode: spec.code.path ./missing does not exist",
      StateReasonCode: "InvalidZipFileException",
      LastUpdateStatus: "Failed",
      LastUpdateStatusReasonCode: "InvalidZipFileException",
    });
  });
});

describe("functionStateOf", () => {
  it("reads the status the registry carries (Kubernetes) and maps failure reasons", () => {
    const failed = (reason: string, image?: string) => {
      const fn = withReady(1, { status: "False", reason, message: "m", observedGeneration: 1 });
      if (image) fn.spec = { image } as LambdaFunction["spec"];
      return functionStateOf(fn).StateReasonCode;
    };
    expect(failed("InvalidSpec")).toBe("InvalidConfiguration");
    expect(failed("ConfigMapNotFound")).toBe("InvalidZipFileException");
    expect(failed("PrepareFailed", "example.com/fn:1")).toBe("InvalidImage");
    expect(failed("PrepareFailed")).toBe("InvalidConfiguration");
    expect(failed("Unexpected")).toBe("InternalError");
    // Waiting for an agent is not a failure: the reconciler retries.
    expect(
      functionStateOf(
        withReady(1, { status: "False", reason: "NoAgents", message: "", observedGeneration: 1 }),
      ).State,
    ).toBe("Pending");
  });
});
