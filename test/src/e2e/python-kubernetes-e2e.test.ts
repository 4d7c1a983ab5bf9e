// A Python function through the Kubernetes path, every part real but the nodes (as in
// kubernetes-e2e.test.ts): `kubectl apply` of a python3.13 LambdaFunction against the test
// kube-apiserver (the real CRD: its runtime enum and handler rule apply), the controller's
// KubernetesFunctionSource preparing it on a real agent backed by the test containerd, and the
// gateway's KubernetesFunctionRegistry invoking it for the AWS SDK.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { InvokeCommand, type LambdaClient } from "@aws-sdk/client-lambda";
import type { KubeConfig } from "@kubernetes/client-node";
import { stringify } from "yaml";
import { createLogger, type LambdaFunction } from "@esb/common";
import { staticTokenSource } from "@esb/common/agent-credentials";
import { StaticAgentDirectory } from "@esb/controller/agent-directory";
import { Controller } from "@esb/controller/controller";
import { installCrd, loadTestKubeConfig } from "@esb/controller/kube-test-support";
import { KubernetesFunctionSource } from "@esb/controller/kubernetes-function-source";
import { loadGatewayConfig } from "@esb/gateway/gateway-config";
import { GatewayServer } from "@esb/gateway/gateway-server";
import { KubernetesFunctionRegistry } from "@esb/gateway/kubernetes-function-registry";
import { StaticAgentDiscovery } from "@esb/gateway/static-agent-discovery";
import { createNamespace, deleteNamespace, expectSuccess, kubectl } from "../install/chart-tools.js";
import { E2eStack, waitFor } from "./e2e-stack.js";

const APP_PY = `
import logging, os, boto3

def handler(event, context):
    if event.get("fail"):
        raise KeyError("missing " + event["fail"])
    print("hello from", context.function_name)
    logging.getLogger().warning("warned %s", event.get("name"))
    return {"message": "hello " + event.get("name", "world"), "requestId": context.aws_request_id,
            "executionEnv": os.environ["AWS_EXECUTION_ENV"], "boto3": boto3.__version__}
`;

describe("a Python function in Kubernetes mode (kubectl → controller → agent → containerd; SDK → gateway)", () => {
  const stack = new E2eStack();
  const logger = createLogger("k8s-py-e2e", { level: stack.logLevel() });
  let kc: KubeConfig;
  let kubeconfig = "";
  let ns = "";
  let manifestDir = "";
  let registry: KubernetesFunctionRegistry;
  let lambda: LambdaClient;

  const k = async (...args: string[]) => kubectl(kubeconfig, ["-n", ns, ...args]);
  const apply = async (spec: Record<string, unknown>) => {
    const fn = {
      apiVersion: "esb.dev/v1alpha1",
      kind: "LambdaFunction",
      metadata: { name: "pyhello" },
      spec,
    };
    const file = join(manifestDir, `manifest-${Date.now()}.yaml`);
    await writeFile(file, stringify(fn));
    return k("apply", "-f", file);
  };

  beforeAll(async () => {
    kc = loadTestKubeConfig();
    kubeconfig = process.env.ESB_TEST_KUBECONFIG!;
    await installCrd(kc);
    ns = `esb-k8spy-${stack.id}`;
    await createNamespace(kubeconfig, ns);
    manifestDir = await mkdtemp(join(tmpdir(), "esb-k8spy-"));
    await stack.startAgent();
    const config = loadGatewayConfig({
      GATEWAY_PORT: "0",
      GATEWAY_HOST: "127.0.0.1",
      GATEWAY_NAMESPACE: ns,
      AGENT_URLS: stack.agentUrl,
      GATEWAY_HOLDER_ID: `k8s-py-gateway-${stack.id}`,
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
    stack.controller = new Controller({
      source: new KubernetesFunctionSource(kc, { namespace: ns, logger, instance: `k8s-py-${stack.id}` }),
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
      expect([...(await stack.tasks()).entries()]).toEqual([]);
    } finally {
      await stack.cleanup();
      if (ns) await deleteNamespace(kubeconfig, ns);
      if (manifestDir) await rm(manifestDir, { recursive: true, force: true });
    }
  }, 300_000);

  it("the CRD requires a handler with a Python runtime", async () => {
    const res = await apply({ runtime: "python3.13", code: { inline: { "app.py": APP_PY } } });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain("spec.handler is required with a Node.js or Python runtime");
  });

  it("kubectl apply → Ready with a warm worker; the SDK invokes it: answer, raised error, log tail", async () => {
    expectSuccess(
      await apply({
        runtime: "python3.13",
        handler: "app.handler",
        code: { inline: { "app.py": APP_PY } },
        provisionedConcurrency: 1,
      }),
      "kubectl apply pyhello",
    );
    let last: LambdaFunction | undefined;
    await waitFor(
      async () => {
        const out = await k("get", "lf", "pyhello", "-o", "json");
        last = JSON.parse(expectSuccess(out, "kubectl get lf pyhello")) as LambdaFunction;
        const ready = last.status?.conditions?.find((c) => c.type === "Ready");
        return ready?.status === "True" && (last.status?.warmWorkers ?? 0) >= 1;
      },
      600_000,
      "pyhello Ready",
    ).catch((err: Error) => {
      throw new Error(`${err.message}; last seen: ${JSON.stringify(last?.status)}`, { cause: err });
    });
    await waitFor(() => registry.get(ns, "pyhello") !== undefined, 60_000, "gateway sees pyhello");

    const call = async (event: unknown) => {
      const out = await lambda.send(
        new InvokeCommand({
          FunctionName: "pyhello",
          Payload: new TextEncoder().encode(JSON.stringify(event)),
          LogType: "Tail",
        }),
      );
      return {
        functionError: out.FunctionError,
        body: JSON.parse(new TextDecoder().decode(out.Payload)) as Record<string, unknown>,
        log: Buffer.from(out.LogResult ?? "", "base64").toString("utf8"),
      };
    };
    const ok = await call({ name: "k8s" });
    expect(ok.functionError).toBeUndefined();
    expect(ok.body).toMatchObject({
      message: "hello k8s",
      executionEnv: "AWS_Lambda_python3.13",
      boto3: "1.44.8",
    });
    expect(ok.log).toContain("hello from pyhello");
    expect(ok.log).toMatch(/\[WARNING\]\t\S+\t[0-9a-f-]{36}\twarned k8s/);

    const failed = await call({ fail: "key" });
    expect(failed.functionError).toBe("Unhandled");
    expect(failed.body).toMatchObject({ errorType: "KeyError", errorMessage: "'missing key'" });
    expect(Array.isArray(failed.body.stackTrace)).toBe(true);
  }, 720_000);
});
