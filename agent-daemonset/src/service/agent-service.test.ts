import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { connect } from "node:http2";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { agentTransport, generateAgentTokens, staticTokenSource } from "@esb/common/agent-credentials";
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
import { StaticTokenAuthenticator } from "../auth/static-token-authenticator.js";
import { ContainerdTestFixture, getWorker, testFunctionSpec } from "../testing/containerd-test-fixture.js";
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
  /** Clients with the controller's and the gateway's tokens (each may call its own methods only). */
  controller: Client<typeof AgentService>;
  gateway: Client<typeof AgentService>;
  url: string;
  metricsPort: number;
}

describe("AgentService over gRPC", () => {
  let fx: ContainerdTestFixture;
  const stateDir = mkdtempSync(join(tmpdir(), "esb-agent-state-"));
  let nodeName: string;
  let cur: Running | undefined;
  const tokens = generateAgentTokens();

  async function startAgent(): Promise<Running> {
    const rt = fx.runtime();
    const metrics = new AgentMetrics();
    const agent = new NodeAgent({
      nodeName,
      runtime: rt,
      network: fx.network,
      stateDir,
      onPoolEvent: metrics.record,
      // Test stand-in: the fixture's image serves as every managed runtime's base image.
      imageResolver: { prepareRuntimeImage: (_runtime, runtime) => runtime.prepareImage(fx.imageRef) },
      // Short, so that a heartbeat test can see an unlisted lease expire.
      unlistedLeaseGraceMs: 300,
    });
    metrics.attach(agent);
    const authenticator = new StaticTokenAuthenticator(tokens);
    const server = new AgentServer({
      agent,
      metrics,
      authenticator,
      port: 0,
      metricsPort: 0,
      host: "127.0.0.1",
    });
    const ports = await server.start();
    await agent.start();
    const url = `http://127.0.0.1:${ports.port}`;
    const clientAs = (token: string) =>
      createClient(AgentService, agentTransport(url, staticTokenSource(token)));
    return {
      rt,
      agent,
      server,
      controller: clientAs(tokens.controller),
      gateway: clientAs(tokens.gateway),
      url,
      metricsPort: ports.metricsPort,
    };
  }

  async function stopAgent(r: Running): Promise<void> {
    await r.server.stop(1000);
    await r.agent.close();
  }

  function spec(
    name: string,
    over: { environment?: Record<string, string>; image?: string; reservedConcurrency?: number } = {},
  ): FunctionSpec {
    return testFunctionSpec(fx, name, {
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

  it("serves authenticated callers only, each to its own methods", async () => {
    const { url, controller, gateway } = cur!;
    const anonymous = createClient(AgentService, createGrpcTransport({ baseUrl: url }));
    const stranger = createClient(
      AgentService,
      agentTransport(url, staticTokenSource("not-a-token-of-this-agent")),
    );
    expect(await codeOf(anonymous.listWorkers({}))).toBe(Code.Unauthenticated);
    expect(await codeOf(anonymous.acquireWorker({ function: { namespace: "default", name: "x" } }))).toBe(
      Code.Unauthenticated,
    );
    expect(await codeOf(stranger.listWorkers({}))).toBe(Code.Unauthenticated);
    // The gateway cannot prepare or destroy functions, nor list workers; the controller cannot take workers.
    expect(await codeOf(gateway.prepareFunction({ spec: spec("by-gateway") }))).toBe(Code.PermissionDenied);
    expect(await codeOf(gateway.destroyFunction({ function: { namespace: "default", name: "x" } }))).toBe(
      Code.PermissionDenied,
    );
    expect(await codeOf(gateway.listWorkers({}))).toBe(Code.PermissionDenied);
    expect(await codeOf(controller.acquireWorker({ function: { namespace: "default", name: "x" } }))).toBe(
      Code.PermissionDenied,
    );
    expect(await codeOf(controller.heartbeat({ holderId: "h" }))).toBe(Code.PermissionDenied);
    expect(await codeOf(controller.listWorkers({}))).toBeUndefined();
    expect(await codeOf(gateway.heartbeat({ holderId: "h" }))).toBeUndefined();
    // The Connect protocol with JSON, as `curl --http2-prior-knowledge` would send it, is refused the same way.
    const session = connect(url);
    try {
      const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = session.request({
          ":method": "POST",
          ":path": "/esb.agent.v1.AgentService/ListWorkers",
          "content-type": "application/json",
        });
        let status = 0;
        let body = "";
        req.on("response", (h) => (status = Number(h[":status"])));
        req.on("data", (d: Buffer) => (body += d.toString()));
        req.on("end", () => resolve({ status, body }));
        req.on("error", reject);
        req.end("{}");
      });
      expect(status).toBe(401);
      expect(JSON.parse(body)).toMatchObject({ code: "unauthenticated" });
    } finally {
      session.close();
    }
  });

  it("refuses code from a host folder (standalone only) and image plus code", async () => {
    const { controller } = cur!;
    const hostPath = create(FunctionSpecSchema, {
      ...spec("host-folder"),
      image: "",
      runtime: "nodejs22.x",
      handler: "index.handler",
      code: create(FunctionCodeSchema, { hostPath: "/" }),
    });
    const err = await controller
      .prepareFunction({ spec: hostPath })
      .catch((e: unknown) => ConnectError.from(e));
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.InvalidArgument);
    expect((err as ConnectError).rawMessage).toMatch(/code.hostPath is accepted by standalone ESB only/);
    const both = create(FunctionSpecSchema, {
      ...spec("image-and-code"),
      code: create(FunctionCodeSchema, {
        files: { "index.mjs": Buffer.from("export const handler = () => 1;") },
      }),
    });
    const err2 = await controller.prepareFunction({ spec: both }).catch((e: unknown) => ConnectError.from(e));
    expect((err2 as ConnectError).code).toBe(Code.InvalidArgument);
    expect((err2 as ConnectError).rawMessage).toMatch(/image and code are mutually exclusive/);
    expect(cur!.agent.pools().map((p) => p.ref.name)).not.toContain("host-folder");
  });

  it("prepares, acquires cold, pauses after release, thaws the same worker, and renews leases", async () => {
    const { controller, gateway } = cur!;
    const prepared = await controller.prepareFunction({ spec: spec("hello") });
    expect(prepared.imageDigest).toMatch(/^sha256:[0-9a-f]{64}$/);

    const a = await gateway.acquireWorker({
      function: { namespace: "default", name: "hello" },
      holderId: "gw-1",
    });
    expect(a.startKind).toBe(StartKind.COLD);
    expect(a.revision).toBe("rev1");
    expect(await getWorker(a.address)).toBe(TEST_WORKER_BODY);
    expect((await gateway.heartbeat({ holderId: "gw-1" })).activeLeases).toBe(1);
    await gateway.releaseWorker({
      workerId: a.workerId,
      leaseId: a.leaseId,
      outcome: InvocationOutcome.SUCCESS,
    });

    await until(async () => {
      const { workers } = await controller.listWorkers({ function: { namespace: "default", name: "hello" } });
      return workers.length === 1 && workers[0].state === WorkerState.PAUSED;
    }, "worker paused");
    // The pool reports it paused once the pause is issued; containerd shows it when the pause is done.
    await until(
      async () => (await cur!.rt.workerStatus(a.workerId)) === "paused",
      "paused in containerd",
      10_000,
    );

    const b = await gateway.acquireWorker({
      function: { namespace: "default", name: "hello" },
      holderId: "gw-1",
    });
    expect(b.startKind).toBe(StartKind.THAWED);
    expect(b.workerId).toBe(a.workerId);
    expect(await getWorker(b.address)).toBe(TEST_WORKER_BODY);
    const hb = await gateway.heartbeat({ holderId: "gw-1" });
    expect(hb.nodeName).toBe(nodeName);
    expect(hb.pools.find((p) => p.function?.name === "hello")?.busyWorkers).toBe(1);
    await gateway.releaseWorker({
      workerId: b.workerId,
      leaseId: b.leaseId,
      outcome: InvocationOutcome.FUNCTION_ERROR,
    });

    const stats = await gateway.getNodeStats({});
    expect(stats).toMatchObject({ nodeName, runtime: "containerd", functions: 1, workers: 1 });
    expect(stats.memoryReservedMb).toBe(128n);
  });

  it("maps errors onto gRPC status codes", async () => {
    const { controller, gateway } = cur!;
    expect(
      await codeOf(
        gateway.acquireWorker({ function: { namespace: "default", name: "nope" }, holderId: "g" }),
      ),
    ).toBe(Code.NotFound);
    expect(await codeOf(gateway.acquireWorker({ function: { namespace: "default", name: "hello" } }))).toBe(
      Code.InvalidArgument,
    );
    expect(
      await codeOf(
        controller.prepareFunction({ spec: spec("bad", { environment: { AWS_REGION: "eu-west-1" } }) }),
      ),
    ).toBe(Code.InvalidArgument);
    // The CRD's list (common), not a list of the agent's own: credentials and any AWS_LAMBDA_* too.
    for (const name of ["AWS_SECRET_ACCESS_KEY", "AWS_LAMBDA_ANYTHING"]) {
      expect(
        await codeOf(controller.prepareFunction({ spec: spec("bad", { environment: { [name]: "x" } }) })),
      ).toBe(Code.InvalidArgument);
    }
    expect(
      await codeOf(
        controller.prepareFunction({ spec: spec("noimg", { image: `${fx.registry}/missing/image:x` }) }),
      ),
    ).toBe(Code.FailedPrecondition);
    expect(
      await codeOf(
        gateway.releaseWorker({
          workerId: "unknown-worker",
          leaseId: "x",
          outcome: InvocationOutcome.SUCCESS,
        }),
      ),
    ).toBe(Code.NotFound);

    await controller.prepareFunction({ spec: spec("one", { reservedConcurrency: 1 }) });
    const ref = { namespace: "default", name: "one" };
    const w = await gateway.acquireWorker({ function: ref, holderId: "g" });
    expect(await codeOf(gateway.acquireWorker({ function: ref, holderId: "g" }))).toBe(
      Code.ResourceExhausted,
    );
    expect(await codeOf(gateway.releaseWorker({ workerId: w.workerId, leaseId: "stale", outcome: 1 }))).toBe(
      Code.FailedPrecondition,
    );
    // A worker that failed is replaced, never handed out again.
    await gateway.releaseWorker({
      workerId: w.workerId,
      leaseId: w.leaseId,
      outcome: InvocationOutcome.WORKER_FAILED,
    });
    const w2 = await gateway.acquireWorker({ function: ref, holderId: "g", waitMs: 30_000 });
    expect(w2.workerId).not.toBe(w.workerId);
    expect(w2.startKind).toBe(StartKind.COLD);
    await gateway.releaseWorker({
      workerId: w2.workerId,
      leaseId: w2.leaseId,
      outcome: InvocationOutcome.SUCCESS,
    });
    expect((await controller.destroyFunction({ function: ref })).destroyedWorkers).toBe(1);
  });

  it("stages the same code once when several functions carrying it are prepared at once", async () => {
    const { controller } = cur!;
    const files = { "index.mjs": new TextEncoder().encode("export const handler = async () => 1;\n") };
    const names = ["same-a", "same-b", "same-c", "same-d"];
    const results = await Promise.allSettled(
      names.map((name) =>
        controller.prepareFunction({
          spec: {
            ...spec(name),
            image: "",
            runtime: "nodejs24.x",
            handler: "index.handler",
            code: create(FunctionCodeSchema, { files }),
          },
        }),
      ),
    );
    expect(results.map((r) => (r.status === "rejected" ? String(r.reason) : "ok"))).toEqual(
      names.map(() => "ok"),
    );
    for (const name of names) await controller.destroyFunction({ function: { namespace: "default", name } });
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
    const before = await cur!.controller.listWorkers({});
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
    const after = await cur.controller.listWorkers({});
    expect(after.workers.map((w) => [w.workerId, w.state])).toEqual([
      [hello[0].workerId, WorkerState.PAUSED],
    ]);
    expect(await cur.rt.workerStatus(`orphan-${fx.id}`)).toBe("unknown");
    expect(await fx.network.list()).toEqual([hello[0].workerId]);

    const c = await cur.gateway.acquireWorker({
      function: { namespace: "default", name: "hello" },
      holderId: "gw-2",
    });
    expect(c.workerId).toBe(hello[0].workerId);
    expect(c.startKind).toBe(StartKind.THAWED);
    expect(await getWorker(c.address)).toBe(TEST_WORKER_BODY);
    await cur.gateway.releaseWorker({
      workerId: c.workerId,
      leaseId: c.leaseId,
      outcome: InvocationOutcome.SUCCESS,
    });

    expect(
      (await cur.controller.destroyFunction({ function: { namespace: "default", name: "hello" } }))
        .destroyedWorkers,
    ).toBe(1);
    expect(await cur.rt.listWorkers()).toEqual([]);
    expect(await fx.network.list()).toEqual([]);
    expect(
      await codeOf(
        cur.gateway.acquireWorker({ function: { namespace: "default", name: "hello" }, holderId: "g" }),
      ),
    ).toBe(Code.NotFound);
  });

  it("an acquire whose caller cancels hands nothing out: the worker returns to the pool", async () => {
    const { controller, gateway } = cur!;
    await controller.prepareFunction({ spec: spec("cancel", { reservedConcurrency: 1 }) });
    const ref = { namespace: "default", name: "cancel" };
    const workersOf = async () => (await controller.listWorkers({ function: ref })).workers;

    // Cancelled during its cold start: the start finishes and the worker is kept warm.
    const cold = new AbortController();
    const coldCall = gateway.acquireWorker({ function: ref, holderId: "gw-c" }, { signal: cold.signal });
    await until(async () => (await workersOf()).some((w) => w.state === WorkerState.STARTING), "starting");
    cold.abort();
    expect(await codeOf(coldCall)).toBe(Code.Canceled);
    await until(async () => {
      const ws = await workersOf();
      return ws.length === 1 && (ws[0].state === WorkerState.IDLE || ws[0].state === WorkerState.PAUSED);
    }, "cold-started worker back in the pool");
    const [kept] = await workersOf();
    const a = await gateway.acquireWorker({ function: ref, holderId: "gw-c" });
    expect(a.workerId).toBe(kept.workerId);
    expect(a.startKind).not.toBe(StartKind.COLD);

    // Cancelled while waiting at the limit (reservedConcurrency 1): the released worker is not
    // handed to the caller that left, so the next caller gets it at once.
    const waiting = new AbortController();
    const waitCall = gateway.acquireWorker(
      { function: ref, holderId: "gw-c", waitMs: 30_000 },
      { signal: waiting.signal },
    );
    await new Promise((r) => setTimeout(r, 200));
    waiting.abort();
    expect(await codeOf(waitCall)).toBe(Code.Canceled);
    // Also a deadline that passes while waiting (the gRPC timeout the gateway's broker sets).
    expect(
      await codeOf(
        gateway.acquireWorker({ function: ref, holderId: "gw-c", waitMs: 30_000 }, { timeoutMs: 200 }),
      ),
    ).toBe(Code.DeadlineExceeded);
    await gateway.releaseWorker({
      workerId: a.workerId,
      leaseId: a.leaseId,
      outcome: InvocationOutcome.SUCCESS,
    });
    const b = await gateway.acquireWorker({ function: ref, holderId: "gw-c" });
    expect(b.workerId).toBe(a.workerId);
    expect(
      (await gateway.heartbeat({ holderId: "gw-c", leaseIds: [b.leaseId], leasesListed: true })).activeLeases,
    ).toBe(1);
    await gateway.releaseWorker({
      workerId: b.workerId,
      leaseId: b.leaseId,
      outcome: InvocationOutcome.SUCCESS,
    });
    expect((await controller.destroyFunction({ function: ref })).destroyedWorkers).toBe(1);
  });

  it("a heartbeat renews the leases it lists and expires the holder's others, freeing their workers", async () => {
    const { controller, gateway } = cur!;
    await controller.prepareFunction({ spec: spec("listed", { reservedConcurrency: 2 }) });
    const ref = { namespace: "default", name: "listed" };
    // The short lease second: its 1.5 s must not run out during the other's cold start on a busy machine.
    const lost = await gateway.acquireWorker({ function: ref, holderId: "gw-l" });
    const kept = await gateway.acquireWorker({ function: ref, holderId: "gw-l", leaseMs: 1500 });
    const listed = { holderId: "gw-l", leaseIds: [kept.leaseId], leasesListed: true };
    // Both are at the limit now; after the grace (300 ms here) the unlisted one is expired.
    await new Promise((r) => setTimeout(r, 400));
    const hb = await gateway.heartbeat(listed);
    expect({ active: hb.activeLeases, expired: hb.expiredLeases }).toEqual({ active: 1, expired: 1 });
    // From now on heartbeats come in the background, as a gateway sends them, so that the
    // short lease lives through the next cold start however long the machine takes for it.
    const beating = [kept.leaseId];
    const beat = setInterval(
      () => void gateway.heartbeat({ ...listed, leaseIds: beating }).catch(() => {}),
      250,
    );
    try {
      await until(
        async () =>
          !(await controller.listWorkers({ function: ref })).workers.some(
            (w) => w.workerId === lost.workerId,
          ),
        "the unlisted lease's worker removed",
      );
      expect(await cur!.rt.workerStatus(lost.workerId)).toBe("unknown");
      // Its slot is free: a new worker starts; the listed one lives on through heartbeats past its 1.5 s.
      const next = await gateway.acquireWorker({ function: ref, holderId: "gw-l", waitMs: 30_000 });
      beating.push(next.leaseId);
      expect(next.workerId).not.toBe(lost.workerId);
      for (let i = 0; i < 4; i++) {
        await new Promise((r) => setTimeout(r, 500));
        const again = await gateway.heartbeat({ ...listed, leaseIds: [kept.leaseId, next.leaseId] });
        expect(again.activeLeases).toBe(2);
      }
      const states = (await controller.listWorkers({ function: ref })).workers.map((w) => [
        w.workerId,
        w.state,
      ]);
      expect(states).toContainEqual([kept.workerId, WorkerState.BUSY]);
      // A late release of the expired lease is harmless.
      await gateway.releaseWorker({
        workerId: lost.workerId,
        leaseId: lost.leaseId,
        outcome: InvocationOutcome.SUCCESS,
      });
      for (const w of [kept, next]) {
        await gateway.releaseWorker({
          workerId: w.workerId,
          leaseId: w.leaseId,
          outcome: InvocationOutcome.SUCCESS,
        });
      }
    } finally {
      clearInterval(beat);
    }
    expect((await controller.destroyFunction({ function: ref })).destroyedWorkers).toBe(2);
  });
});
