import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { CoordinationV1Api, CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { createLogger, type LambdaFunction } from "@esb/common";
import { StaticAgentDirectory } from "./agent-directory.js";
import { Controller } from "./controller.js";
import { KubernetesFunctionSource } from "./kubernetes-function-source.js";
import {
  createTestNamespace,
  deleteTestNamespace,
  eventually,
  installCrd,
  loadTestKubeConfig,
} from "./kube-test-support.js";
import { RecordingTestAgent } from "./recording-test-agent.js";

const logger = createLogger("controller-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });
const group = "esb.dev";
const version = "v1alpha1";
const plural = "lambdafunctions";

describe("two controller replicas with leader election", () => {
  let kc: KubeConfig;
  let namespace: string;
  const agents: RecordingTestAgent[] = [];
  const controllers: Controller[] = [];

  beforeAll(async () => {
    kc = loadTestKubeConfig();
    await installCrd(kc);
    namespace = await createTestNamespace(kc, "esb-le");
    for (const identity of ["replica-a", "replica-b"]) {
      const agent = await new RecordingTestAgent().start();
      agents.push(agent);
      const c = new Controller({
        source: new KubernetesFunctionSource(kc, { namespace, logger }),
        agents: new StaticAgentDirectory([agent.url]),
        gatewayUrl: "http://gw:9000",
        logger,
        baseRetryDelayMs: 100,
        // Shorter than the defaults (15 s / 10 s / 2 s) so that the test does not wait long.
        leaderElection: {
          kubeConfig: kc,
          leaseName: "esb-controller",
          namespace,
          identity,
          leaseDurationMs: 4000,
          renewDeadlineMs: 3000,
          retryPeriodMs: 300,
        },
      });
      controllers.push(c);
    }
    await Promise.all(controllers.map((c) => c.start()));
  });

  afterAll(async () => {
    for (const c of controllers) await c.stop().catch(() => undefined);
    for (const a of agents) await a.stop();
    if (namespace) {
      // Let a possible leftover finalizer go, so the namespace can be cleaned.
      const api = kc.makeApiClient(CustomObjectsApi);
      await api
        .patchNamespacedCustomObject({
          group,
          version,
          namespace,
          plural,
          name: "fn",
          body: [{ op: "remove", path: "/metadata/finalizers" }],
        })
        .catch(() => undefined);
      await deleteTestNamespace(kc, namespace);
    }
  });

  it("lets exactly one replica reconcile, and the other take over when it stops", async () => {
    const leaderIndex = await eventually("a leader", () => {
      const leaders = controllers.map((c, i) => (c.isLeader ? i : -1)).filter((i) => i >= 0);
      return leaders.length === 1 ? leaders[0] + 1 : undefined;
    }).then((i) => i - 1);
    const follower = 1 - leaderIndex;
    const lease = await kc
      .makeApiClient(CoordinationV1Api)
      .readNamespacedLease({ name: "esb-controller", namespace });
    expect(lease.spec?.holderIdentity).toBe(leaderIndex === 0 ? "replica-a" : "replica-b");

    const api = kc.makeApiClient(CustomObjectsApi);
    await api.createNamespacedCustomObject({
      group,
      version,
      namespace,
      plural,
      body: {
        apiVersion: "esb.dev/v1alpha1",
        kind: "LambdaFunction",
        metadata: { name: "fn" },
        spec: { image: "localhost:5000/fn:1", provisionedConcurrency: 1 },
      },
    });
    await eventually("Ready", async () => {
      const fn = (await api.getNamespacedCustomObject({
        group,
        version,
        namespace,
        plural,
        name: "fn",
      })) as LambdaFunction;
      return fn.status?.conditions?.find((c) => c.type === "Ready")?.status === "True";
    });
    expect(agents[leaderIndex].callsFor("PrepareFunction", `${namespace}/fn`).length).toBeGreaterThan(0);
    expect(agents[follower].calls).toEqual([]);
    expect(controllers[follower].isLeader).toBe(false);

    // The leader stops (releasing the lease); the other replica takes over and reconciles.
    await controllers[leaderIndex].stop();
    await eventually("follower leads", () => controllers[follower].isLeader);
    await eventually(
      "follower prepares",
      () => agents[follower].callsFor("PrepareFunction", `${namespace}/fn`).length > 0,
    );

    await api.deleteNamespacedCustomObject({ group, version, namespace, plural, name: "fn" });
    await eventually("fn gone", () =>
      api.getNamespacedCustomObject({ group, version, namespace, plural, name: "fn" }).then(
        () => false,
        (err: { code?: number }) => err.code === 404,
      ),
    );
    expect(agents[follower].callsFor("DestroyFunction", `${namespace}/fn`).length).toBeGreaterThan(0);
  });
});
