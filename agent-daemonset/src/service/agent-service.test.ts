import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import {
  AgentService,
  FunctionCodeSchema,
  FunctionSpecSchema,
  InvocationOutcome,
  StartKind,
  WorkerState,
  type FunctionSpec,
} from "@esb/common/gen/esb/agent/v1/agent_pb";
import { AgentMetrics } from "../agent-metrics.js";
import { AgentServer } from "../agent-server.js";
import { NodeAgent } from "../node-agent.js";
import { ContainerdTestFixture, getWorker } from "../testing/containerd-test-fixture.js";
import type { ContainerdRuntime } from "../runtime/containerd-runtime.js";
import { WORKER_LABELS } from "../runtime/runtime.js";
import { TEST_WORKER_BODY } from "../testing/test-image.js";

// The real AgentServer (HTTP/2, gRPC protocol) over a NodeAgent on the real
// test containerd, called by a Connect gRPC client as the gateway would.

async function until(cond: () => Promise<boolean> | boolean, what: string, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for: ${what}`);
}

async function codeOf(p: Promise<unknown>): Promise<Code | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

interface Running {
  rt: ContainerdRuntime;
  agent: NodeAgent;
  server: AgentServer;
  client: Client<typeof AgentService>;
  metricsPort: number;
}

describe("AgentService over gRPC", () => {
  let fx: ContainerdTestFixture;
  const stateDir = mkdtempSync(join(tmpdir(), "esb-agent-state-"));
  let nodeName: string;
  let cur: Running | undefined;

  async function startAgent(): Promise<Running> {
    const rt = fx.runtime();
    const metrics = new AgentMetrics();
    const agent = new NodeAgent({
      nodeName,
      runtime: rt,
      network: fx.network,
      stateDir,
      onPoolEvent: metrics.record,
    });
    metrics.attach(agent);
    const server = new AgentServer({ agent, metrics, port: 0, metricsPort: 0, host: "127.0.0.1" });
    const ports = await server.start();
    await agent.start();
    const client = createClient(
      AgentService,
      // connect-node v2: the gRPC transport always speaks HTTP/2.
      createGrpcTransport({ baseUrl: `http://127.0.0.1:${ports.port}` }),
    );
    return { rt, agent, server, client, metricsPort: ports.metricsPort };
  }

  async function stopAgent(r: Running): Promise<void> {
    await r.server.stop(1000);
    await r.agent.close();
  }

  function spec(
    name: string,
    over: { environment?: Record<string, string>; image?: string; reservedConcurrency?: number } = {},
  ): FunctionSpec {
    return create(FunctionSpecSchema, {
      ref: { namespace: "default", name },
      generation: 1n,
      revision: "rev1",
      image: fx.imageRef,
      memorySizeMb: 128,
      timeoutSeconds: 3,
      ephemeralStorageMb: 16,
      environment: { GREETING: "hi" },
      scaling: { pauseAfterMs: 50, keepWarmSeconds: 600 },
      ...over,
    });
  }

  beforeAll(async () => {
    fx = new ContainerdTestFixture();
    nodeName = `node-${fx.id}`;
    await fx.setup();
    cur = await startAgent();
  });

  afterAll(async () => {
    if (cur) {
      for (const p of cur.agent.pools()) await cur.agent.destroyFunction(p.ref);
      await stopAgent(cur);
    }
    await fx?.teardown();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it("prepares, acquires cold, pauses after release, thaws the same worker, and renews leases", async () => {
    const { client } = cur!;
    const prepared = await client.prepareFunction({ spec: spec("hello") });
    expect(prepared.imageDigest).toMatch(/^sha256:[0-9a-f]{64}$/);

    const a = await client.acquireWorker({
      function: { namespace: "default", name: "hello" },
      holderId: "gw-1",
    });
    expect(a.startKind).toBe(StartKind.COLD);
    expect(a.revision).toBe("rev1");
    expect(await getWorker(a.address)).toBe(TEST_WORKER_BODY);
    expect((await client.heartbeat({ holderId: "gw-1" })).activeLeases).toBe(1);
    await client.releaseWorker({
      workerId: a.workerId,
      leaseId: a.leaseId,
      outcome: InvocationOutcome.SUCCESS,
    });

    await until(async () => {
      const { workers } = await client.listWorkers({ function: { namespace: "default", name: "hello" } });
      return workers.length === 1 && workers[0].state === WorkerState.PAUSED;
    }, "worker paused");
    expect(await cur!.rt.workerStatus(a.workerId)).toBe("paused");

    const b = await client.acquireWorker({
      function: { namespace: "default", name: "hello" },
      holderId: "gw-1",
    });
    expect(b.startKind).toBe(StartKind.THAWED);
    expect(b.workerId).toBe(a.workerId);
    expect(await getWorker(b.address)).toBe(TEST_WORKER_BODY);
    const hb = await client.heartbeat({ holderId: "gw-1" });
    expect(hb.nodeName).toBe(nodeName);
    expect(hb.pools.find((p) => p.function?.name === "hello")?.busyWorkers).toBe(1);
    await client.releaseWorker({
      workerId: b.workerId,
      leaseId: b.leaseId,
      outcome: InvocationOutcome.FUNCTION_ERROR,
    });

    const stats = await client.getNodeStats({});
    expect(stats).toMatchObject({ nodeName, runtime: "containerd", functions: 1, workers: 1 });
    expect(stats.memoryReservedMb).toBe(128n);
  });

  it("maps errors onto gRPC status codes", async () => {
    const { client } = cur!;
    expect(
      await codeOf(client.acquireWorker({ function: { namespace: "default", name: "nope" }, holderId: "g" })),
    ).toBe(Code.NotFound);
    expect(await codeOf(client.acquireWorker({ function: { namespace: "default", name: "hello" } }))).toBe(
      Code.InvalidArgument,
    );
    expect(
      await codeOf(
        client.prepareFunction({ spec: spec("bad", { environment: { AWS_REGION: "eu-west-1" } }) }),
      ),
    ).toBe(Code.InvalidArgument);
    expect(
      await codeOf(
        client.prepareFunction({ spec: spec("noimg", { image: `${fx.registry}/missing/image:x` }) }),
      ),
    ).toBe(Code.FailedPrecondition);
    expect(
      await codeOf(
        client.releaseWorker({
          workerId: "unknown-worker",
          leaseId: "x",
          outcome: InvocationOutcome.SUCCESS,
        }),
      ),
    ).toBe(Code.NotFound);

    await client.prepareFunction({ spec: spec("one", { reservedConcurrency: 1 }) });
    const ref = { namespace: "default", name: "one" };
    const w = await client.acquireWorker({ function: ref, holderId: "g" });
    expect(await codeOf(client.acquireWorker({ function: ref, holderId: "g" }))).toBe(Code.ResourceExhausted);
    expect(await codeOf(client.releaseWorker({ workerId: w.workerId, leaseId: "stale", outcome: 1 }))).toBe(
      Code.FailedPrecondition,
    );
    // A worker that failed is replaced, never handed out again.
    await client.releaseWorker({
      workerId: w.workerId,
      leaseId: w.leaseId,
      outcome: InvocationOutcome.WORKER_FAILED,
    });
    const w2 = await client.acquireWorker({ function: ref, holderId: "g", waitMs: 30_000 });
    expect(w2.workerId).not.toBe(w.workerId);
    expect(w2.startKind).toBe(StartKind.COLD);
    await client.releaseWorker({
      workerId: w2.workerId,
      leaseId: w2.leaseId,
      outcome: InvocationOutcome.SUCCESS,
    });
    expect((await client.destroyFunction({ function: ref })).destroyedWorkers).toBe(1);
  });

  it("stages the same code once when several functions carrying it are prepared at once", async () => {
    const { client } = cur!;
    const files = { "index.mjs": new TextEncoder().encode("export const handler = async () => 1;\n") };
    const names = ["same-a", "same-b", "same-c", "same-d"];
    const results = await Promise.allSettled(
      names.map((name) =>
        client.prepareFunction({ spec: { ...spec(name), code: create(FunctionCodeSchema, { files }) } }),
      ),
    );
    expect(results.map((r) => (r.status === "rejected" ? String(r.reason) : "ok"))).toEqual(
      names.map(() => "ok"),
    );
    for (const name of names) await client.destroyFunction({ function: { namespace: "default", name } });
  });

  it("serves health, readiness and Prometheus metrics", async () => {
    const base = `http://127.0.0.1:${cur!.metricsPort}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    const text = await (await fetch(`${base}/metrics`)).text();
    expect(text).toMatch(/esb_agent_thaws_total\{function="default\/hello"\} 1/);
    expect(text).toMatch(/esb_agent_acquire_seconds_count\{start_kind="cold"\}/);
    expect(text).toMatch(/esb_agent_pool_workers\{function="default\/hello",state="paused"\} 1/);
  });

  it("after a restart re-adopts its paused worker, removes orphans, and thaws the adopted worker", async () => {
    const before = await cur!.client.listWorkers({});
    const hello = before.workers.filter((w) => w.function?.name === "hello");
    expect(hello).toHaveLength(1);
    await until(
      async () => (await cur!.rt.workerStatus(hello[0].workerId)) === "paused",
      "paused before restart",
    );

    // An orphan of this node: a worker of a function the agent does not know.
    const image = await cur!.rt.prepareImage(fx.imageRef);
    await cur!.rt.startWorker({
      id: `orphan-${fx.id}`,
      image,
      labels: {
        [WORKER_LABELS.function]: "default/ghost",
        [WORKER_LABELS.revision]: "x",
        [WORKER_LABELS.owner]: nodeName,
      },
      env: { PATH: "/bin" },
      memoryMb: 128,
      tmpMb: 16,
    });
    await stopAgent(cur!);
    cur = undefined;
    // The worker survives the agent.
    const probe = fx.runtime();
    await probe.start();
    expect((await probe.listWorkers()).map((w) => w.id).sort()).toEqual(
      [hello[0].workerId, `orphan-${fx.id}`].sort(),
    );
    await probe.close();

    cur = await startAgent();
    const after = await cur.client.listWorkers({});
    expect(after.workers.map((w) => [w.workerId, w.state])).toEqual([
      [hello[0].workerId, WorkerState.PAUSED],
    ]);
    expect(await cur.rt.workerStatus(`orphan-${fx.id}`)).toBe("unknown");
    expect(await fx.network.list()).toEqual([hello[0].workerId]);

    const c = await cur.client.acquireWorker({
      function: { namespace: "default", name: "hello" },
      holderId: "gw-2",
    });
    expect(c.workerId).toBe(hello[0].workerId);
    expect(c.startKind).toBe(StartKind.THAWED);
    expect(await getWorker(c.address)).toBe(TEST_WORKER_BODY);
    await cur.client.releaseWorker({
      workerId: c.workerId,
      leaseId: c.leaseId,
      outcome: InvocationOutcome.SUCCESS,
    });

    expect(
      (await cur.client.destroyFunction({ function: { namespace: "default", name: "hello" } }))
        .destroyedWorkers,
    ).toBe(1);
    expect(await cur.rt.listWorkers()).toEqual([]);
    expect(await fx.network.list()).toEqual([]);
    expect(
      await codeOf(
        cur.client.acquireWorker({ function: { namespace: "default", name: "hello" }, holderId: "g" }),
      ),
    ).toBe(Code.NotFound);
  });
});
