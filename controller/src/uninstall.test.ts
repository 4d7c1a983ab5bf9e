// The uninstall mode (the chart's pre-delete hook) against the real
// kube-apiserver: it stops the controllers, destroys every function's workers on
// every agent it can reach, and removes ESB's finalizer from every
// LambdaFunction, also when an agent cannot be reached within its timeout.
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { execFile } from "node:child_process";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { AppsV1Api, CoreV1Api, CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { createLogger, type LambdaFunction } from "@esb/common";
import { StaticAgentDirectory } from "./agent-directory.js";
import {
  createTestNamespace,
  deleteTestNamespace,
  eventually,
  installCrd,
  loadTestKubeConfig,
} from "./kube-test-support.js";
import { RecordingTestAgent } from "./recording-test-agent.js";
import { Uninstaller, formatUninstallReport } from "./uninstall.js";

const logger = createLogger("controller-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });
const group = "esb.dev";
const version = "v1alpha1";
const plural = "lambdafunctions";
const FINALIZER = "esb.dev/workers";

/** A loopback port nothing listens on (an agent that is gone). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe("esb-controller uninstall", () => {
  let kc: KubeConfig;
  let api: CustomObjectsApi;
  let apps: AppsV1Api;
  let core: CoreV1Api;
  let namespace: string;
  let agent: RecordingTestAgent;

  const get = (name: string) =>
    api.getNamespacedCustomObject({ group, version, namespace, plural, name }) as Promise<LambdaFunction>;
  /** A LambdaFunction as a controller left it: with ESB's finalizer. */
  const createWithFinalizer = async (name: string) => {
    await api.createNamespacedCustomObject({
      group,
      version,
      namespace,
      plural,
      body: {
        apiVersion: "esb.dev/v1alpha1",
        kind: "LambdaFunction",
        metadata: { name, finalizers: [FINALIZER, "example.com/keep"] },
        spec: { runtime: "provided", code: { inline: { bootstrap: "#!/bin/sh\n" } } },
      },
    });
    agent.addFunction(`${namespace}/${name}`, 1);
  };
  /** The controller Deployment as the chart makes it, and one of its pods (no kube-controller-manager here). */
  const createControllerDeployment = async (name: string) => {
    const labels = { "app.kubernetes.io/name": "esb", "app.kubernetes.io/component": "controller" };
    await apps.createNamespacedDeployment({
      namespace,
      body: {
        metadata: { name },
        spec: {
          replicas: 2,
          selector: { matchLabels: labels },
          template: {
            metadata: { labels },
            spec: { containers: [{ name: "controller", image: "esb/controller:test" }] },
          },
        },
      },
    });
    const pod = `${name}-5d9c7-abcde`;
    await core.createNamespacedPod({
      namespace,
      body: {
        metadata: {
          name: pod,
          labels,
          ownerReferences: [
            {
              apiVersion: "apps/v1",
              kind: "ReplicaSet",
              name: `${name}-5d9c7`,
              uid: "00000000-0000-0000-0000-000000000001",
              controller: true,
            },
          ],
        },
        spec: { containers: [{ name: "controller", image: "esb/controller:test" }] },
      },
    });
    return pod;
  };

  beforeAll(async () => {
    kc = loadTestKubeConfig();
    await installCrd(kc);
    api = kc.makeApiClient(CustomObjectsApi);
    apps = kc.makeApiClient(AppsV1Api);
    core = kc.makeApiClient(CoreV1Api);
    namespace = await createTestNamespace(kc, "esb-uninst");
    agent = await new RecordingTestAgent().start();
  });

  afterAll(async () => {
    await agent?.stop();
    if (namespace) await deleteTestNamespace(kc, namespace);
  });

  it("stops the controllers, destroys every function's workers, removes the finalizers and reports an agent it could not reach", async () => {
    await createWithFinalizer("one");
    await createWithFinalizer("two");
    await createWithFinalizer("leaving");
    // A function already being deleted: it goes away once the finalizers are removed.
    await api.deleteNamespacedCustomObject({ group, version, namespace, plural, name: "leaving" });
    // Workers of a function that has no LambdaFunction any more are collected too.
    agent.addFunction(`${namespace}/orphan`, 2);
    const pod = await createControllerDeployment("esb-controller");
    const dead = `http://127.0.0.1:${await closedPort()}`;

    const started = Date.now();
    const running = new Uninstaller({
      kubeConfig: kc,
      watchNamespace: namespace,
      agents: new StaticAgentDirectory([agent.url, dead]),
      controllerDeployment: { namespace, name: "esb-controller" },
      timeoutMs: 6000,
      pollMs: 200,
      callTimeoutMs: 1000,
      logger,
    }).run();
    // It scales the Deployment to 0 and waits for the controller pod to be gone.
    await eventually("scaled to 0", async () => {
      const d = await apps.readNamespacedDeployment({ namespace, name: "esb-controller" });
      return d.spec?.replicas === 0;
    });
    await new Promise((r) => setTimeout(r, 500));
    expect(agent.calls.filter((c) => c.method === "DestroyFunction")).toEqual([]);
    expect((await get("one")).metadata.finalizers).toContain(FINALIZER);
    await core.deleteNamespacedPod({ namespace, name: pod, gracePeriodSeconds: 0 });
    const report = await running;
    const text = formatUninstallReport(report);

    expect(report.controllers).toBe("stopped");
    expect(report.agentsSynced).toBe(true);
    expect(report.functions).toEqual([`${namespace}/leaving`, `${namespace}/one`, `${namespace}/two`]);
    expect(report.orphanFunctions).toEqual([`${namespace}/orphan`]);
    for (const name of ["one", "two", "leaving", "orphan"])
      expect(agent.callsFor("DestroyFunction", `${namespace}/${name}`)).toHaveLength(1);
    expect([...agent.functions.keys()].filter((k) => k.startsWith(`${namespace}/`))).toEqual([]);
    const reached = report.agents.find((a) => a.url === agent.url);
    expect(reached).toMatchObject({ cleaned: true, destroyedWorkers: 5 });
    const unreached = report.agents.find((a) => a.url === dead);
    expect(unreached?.cleaned).toBe(false);
    expect(unreached?.reason).toContain("ECONNREFUSED");
    // Bounded: the unreachable agent held it up for its timeout, not longer.
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(report.complete).toBe(false);
    expect(report.warnings.join("\n")).toContain(`agent ${unreached?.agent} not reached`);
    expect(text).toContain("NOT cleaned");

    // Finalizers removed; the LambdaFunctions stay (they are the user's), other finalizers too.
    expect(report.finalizersRemoved.sort()).toEqual([
      `${namespace}/leaving`,
      `${namespace}/one`,
      `${namespace}/two`,
    ]);
    for (const name of ["one", "two"]) {
      const fn = await get(name);
      expect(fn.metadata.finalizers).toEqual(["example.com/keep"]);
      expect(fn.metadata.deletionTimestamp).toBeUndefined();
    }
    expect((await get("leaving")).metadata.finalizers).toEqual(["example.com/keep"]);
    const events = await core.listNamespacedEvent({ namespace, fieldSelector: "involvedObject.name=one" });
    expect(events.items.map((e) => e.reason)).toContain("Uninstalled");
  });

  it("runs as `node controller/dist/main.js uninstall` with the controller's environment", async () => {
    await createWithFinalizer("cli");
    const main = fileURLToPath(new URL("./main.js", import.meta.url));
    const result = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        [main, "uninstall", "--timeout", "10"],
        {
          env: {
            ...process.env,
            KUBECONFIG: process.env.ESB_TEST_KUBECONFIG,
            WATCH_NAMESPACE: namespace,
            POD_NAMESPACE: namespace,
            AGENT_URLS: agent.url,
            CONTROLLER_DEPLOYMENT: "no-such-deployment",
            ESB_LOG_LEVEL: "warn",
          },
          timeout: 60_000,
        },
        (err, stdout, stderr) =>
          resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("controllers: not-found");
    expect(result.stdout).toContain(`${namespace}/cli`);
    expect(result.stdout).toContain("uninstall: complete");
    expect(agent.callsFor("DestroyFunction", `${namespace}/cli`)).toHaveLength(1);
    expect((await get("cli")).metadata.finalizers).toEqual(["example.com/keep"]);
  });
});
