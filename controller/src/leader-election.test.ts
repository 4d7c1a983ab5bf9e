import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { createServer, connect, type Server, type Socket } from "node:net";
import { CoordinationV1Api, CustomObjectsApi, KubeConfig, V1MicroTime } from "@kubernetes/client-node";
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
import { LeaderElector, type LeaderElectionOptions } from "./leader-election.js";
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
        // A lease duration far longer than the takeover the test allows: only the
        // released lease (not its expiry) can let the follower lead in time.
        leaderElection: {
          kubeConfig: kc,
          leaseName: "esb-controller",
          namespace,
          identity,
          leaseDurationMs: 30_000,
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
    const released = Date.now();
    await eventually("follower leads", () => controllers[follower].isLeader, 5000);
    expect(Date.now() - released).toBeLessThan(5000);
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

/**
 * A TCP relay in front of the API server that can silently swallow all traffic
 * (a network partition: requests hang rather than fail).
 */
class PartitionableProxy {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  partitioned = false;

  async start(target: URL): Promise<string> {
    this.server = createServer((client) => {
      const upstream = connect(Number(target.port), target.hostname);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on("close", () => this.sockets.delete(s));
        s.on("error", () => undefined);
      }
      client.on("data", (d) => void (this.partitioned || upstream.write(d)));
      upstream.on("data", (d) => void (this.partitioned || client.write(d)));
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
    await new Promise<void>((r) => this.server!.listen(0, "127.0.0.1", r));
    const { port } = this.server.address() as { port: number };
    return `https://127.0.0.1:${port}`;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server?.close(r));
  }
}

/** A copy of `kc` that reaches the API server at `server`. */
function kubeConfigVia(kc: KubeConfig, server: string): KubeConfig {
  const copy = new KubeConfig();
  copy.loadFromString(kc.exportConfig());
  const cluster = copy.getCurrentCluster()!;
  (cluster as { server: string }).server = server;
  return copy;
}

/** A LeaderElector that records when it started and stopped leading. */
function candidate(
  kc: KubeConfig,
  options: Omit<LeaderElectionOptions, "onStartedLeading" | "onStoppedLeading" | "logger">,
) {
  const events: Array<{ leading: boolean; at: number }> = [];
  const elector = new LeaderElector(kc, {
    ...options,
    logger,
    onStartedLeading: () => void events.push({ leading: true, at: Date.now() }),
    onStoppedLeading: () => void events.push({ leading: false, at: Date.now() }),
  });
  const when = (leading: boolean) => events.find((e) => e.leading === leading)?.at;
  return { elector, events, started: () => when(true), stopped: () => when(false) };
}

describe("LeaderElector against the real kube-apiserver", () => {
  let kc: KubeConfig;
  let leases: CoordinationV1Api;
  let namespace: string;
  const stops: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    kc = loadTestKubeConfig();
    leases = kc.makeApiClient(CoordinationV1Api);
    namespace = await createTestNamespace(kc, "esb-le-unit");
  });

  afterAll(async () => {
    for (const stop of stops) await stop().catch(() => undefined);
    if (namespace) await deleteTestNamespace(kc, namespace);
  });

  /** Writes the lease as `holder` would, whose clock is `skewMs` off the real one; creates it if needed. */
  async function writeLease(
    name: string,
    holder: string,
    leaseDurationSeconds: number,
    skewMs = 0,
  ): Promise<void> {
    const spec = {
      holderIdentity: holder,
      leaseDurationSeconds,
      renewTime: new V1MicroTime(Date.now() + skewMs),
    };
    // The elector may renew between our read and write (409): read again, as any writer would.
    for (let attempt = 0; ; attempt++) {
      try {
        const lease = await leases.readNamespacedLease({ name, namespace });
        await leases.replaceNamespacedLease({
          name,
          namespace,
          body: { ...lease, spec: { ...lease.spec, ...spec } },
        });
        return;
      } catch (err) {
        const code = (err as { code?: number }).code;
        if (code === 409 && attempt < 10) continue;
        if (code !== 404) throw err;
        await leases.createNamespacedLease({ namespace, body: { metadata: { name }, spec } });
        return;
      }
    }
  }

  it.each([
    ["ahead", 3_600_000],
    ["behind", -3_600_000],
  ])(
    "a candidate whose clock is an hour %s waits the lease duration on its own clock after the last change it saw",
    async (_label, skewMs) => {
      const name = `skew-${skewMs > 0 ? "ahead" : "behind"}`;
      // A live holder that renews every 300 ms for 1.5 s, then dies. Its clock is off
      // the other way, so that comparing its renewTime with any clock goes wrong.
      await writeLease(name, "other-node", 2, -skewMs);
      const c = candidate(kc, {
        leaseName: name,
        namespace,
        identity: "skewed",
        leaseDurationMs: 2000,
        renewDeadlineMs: 1500,
        retryPeriodMs: 100,
        now: () => Date.now() + skewMs,
      });
      stops.push(() => c.elector.stop());
      c.elector.start();
      let lastWrite = 0;
      for (let i = 0; i < 5; i++) {
        await new Promise((r) => setTimeout(r, 300));
        await writeLease(name, "other-node", 2, -skewMs);
        lastWrite = Date.now();
      }
      expect(c.started()).toBeUndefined();
      const started = await eventually("the skewed candidate leads", () => c.started(), 10_000);
      // Never before the record's 2 s since it last changed (a skewed-ahead clock
      // comparing renewTime would have taken it at once; one behind, after an hour).
      expect(started - lastWrite).toBeGreaterThanOrEqual(1900);
      expect(started - lastWrite).toBeLessThan(3500);
      const lease = await leases.readNamespacedLease({ name, namespace });
      expect(lease.spec?.holderIdentity).toBe("skewed");
      expect(lease.spec?.leaseTransitions).toBe(1);
    },
  );

  it("a leader that sees another holder stops leading at once and its onStoppedLeading runs", async () => {
    const c = candidate(kc, {
      leaseName: "taken",
      namespace,
      identity: "leader",
      leaseDurationMs: 4000,
      renewDeadlineMs: 3000,
      retryPeriodMs: 200,
    });
    stops.push(() => c.elector.stop());
    c.elector.start();
    await eventually("leads", () => c.started(), 10_000);
    await writeLease("taken", "intruder", 60);
    const taken = Date.now();
    const stopped = await eventually("steps down", () => c.stopped(), 10_000);
    expect(stopped - taken).toBeLessThan(1500);
    expect(c.elector.isLeader).toBe(false);
  });

  it("a leader whose renewals cannot reach the API server steps down within the renew deadline, before anyone takes over", async () => {
    const proxy = new PartitionableProxy();
    stops.push(() => proxy.stop());
    const server = await proxy.start(new URL(kc.getCurrentCluster()!.server));
    const options = {
      leaseName: "partition",
      namespace,
      leaseDurationMs: 4000,
      renewDeadlineMs: 2000,
      retryPeriodMs: 200,
    };
    const a = candidate(kubeConfigVia(kc, server), { ...options, identity: "partitioned" });
    stops.push(() => a.elector.stop());
    a.elector.start();
    await eventually("leads", () => a.started(), 10_000);
    const b = candidate(kc, { ...options, identity: "standby" });
    stops.push(() => b.elector.stop());
    b.elector.start();
    await new Promise((r) => setTimeout(r, 500));
    proxy.partitioned = true;
    const cut = Date.now();
    const stopped = await eventually("the partitioned leader steps down", () => a.stopped(), 10_000);
    // Its deadline counts from its last renewal, sent before the cut (or earlier, when a loaded
    // machine delayed the renewals): it stops before its lease could run out for the others.
    expect(stopped - cut).toBeLessThan(4000);
    const started = await eventually("the standby leads", () => b.started(), 15_000);
    expect(started).toBeGreaterThan(stopped);
    // The standby waits the whole lease duration from the last change it saw.
    expect(started - cut).toBeGreaterThanOrEqual(4000 - 600);
  });

  it("a partitioned leader whose clock runs slower than its timers still steps down (the deadline timer re-arms)", async () => {
    const proxy = new PartitionableProxy();
    stops.push(() => proxy.stop());
    const server = await proxy.start(new URL(kc.getCurrentCluster()!.server));
    // Timers fire by the monotonic clock, Date.now() may lag it: here by 10 %.
    const origin = Date.now();
    const slowNow = () => origin + (Date.now() - origin) * 0.9;
    const a = candidate(kubeConfigVia(kc, server), {
      leaseName: "slow-clock",
      namespace,
      identity: "slow",
      leaseDurationMs: 4000,
      renewDeadlineMs: 2000,
      retryPeriodMs: 200,
      now: slowNow,
    });
    stops.push(() => a.elector.stop());
    a.elector.start();
    await eventually("leads", () => a.started(), 10_000);
    proxy.partitioned = true;
    await eventually("the slow-clocked leader steps down", () => a.stopped(), 10_000);
    expect(a.elector.isLeader).toBe(false);
  });

  it("a controller that loses its lease aborts the reconcile in flight and writes nothing more", async () => {
    await installCrd(kc);
    const agent = await new RecordingTestAgent().start();
    stops.push(() => agent.stop());
    agent.prepareDelayMs = 120_000; // a slow image pull
    const lost: boolean[] = [];
    const controller = new Controller({
      source: new KubernetesFunctionSource(kc, { namespace, logger }),
      agents: new StaticAgentDirectory([agent.url]),
      gatewayUrl: "http://gw:9000",
      logger,
      onLeadershipLost: ({ drained }) => void lost.push(drained),
      leaderElection: {
        kubeConfig: kc,
        leaseName: "controller",
        namespace,
        identity: "controller",
        leaseDurationMs: 4000,
        renewDeadlineMs: 3000,
        retryPeriodMs: 200,
      },
    });
    stops.push(() => controller.stop());
    await controller.start();
    await eventually("leads", () => controller.isLeader, 10_000);
    const api = kc.makeApiClient(CustomObjectsApi);
    const target = { group, version, namespace, plural };
    await api.createNamespacedCustomObject({
      ...target,
      body: {
        apiVersion: `${group}/${version}`,
        kind: "LambdaFunction",
        metadata: { name: "slow" },
        spec: { image: "localhost:5000/slow:1" },
      },
    });
    await eventually(
      "PrepareFunction in flight",
      () => agent.callsFor("PrepareFunction", `${namespace}/slow`).length > 0,
    );

    await writeLease("controller", "new-leader", 60);
    const taken = Date.now();
    await eventually("the prepare is cancelled", () => agent.cancelled.length === 1, 10_000);
    // Well within the lease duration the new leader's term could have begun after (4 s).
    expect(Date.now() - taken).toBeLessThan(4000);
    expect(controller.isLeader).toBe(false);
    await eventually("onLeadershipLost", () => lost.length === 1, 30_000);
    expect(lost).toEqual([true]);

    // Nothing more from the deposed leader: no new agent calls, no status for the aborted prepare.
    const calls = agent.calls.length;
    await new Promise((r) => setTimeout(r, 1500));
    expect(agent.calls.length).toBe(calls);
    const fn = (await api.getNamespacedCustomObject({ ...target, name: "slow" })) as LambdaFunction;
    expect(fn.status?.conditions ?? []).toEqual([]);
  });
});
