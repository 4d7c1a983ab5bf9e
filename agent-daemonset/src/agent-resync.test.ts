import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { Containers } from "@esb/common/gen/containerd/services/containers/v1/containers_pb";
import { Tasks } from "@esb/common/gen/containerd/services/tasks/v1/tasks_pb";
import { Status } from "@esb/common/gen/containerd/types/task/task_pb";
import type { FunctionSpec } from "@esb/common/gen/esb/agent/v1/agent_pb";
import { AgentMetrics } from "./agent-metrics.js";
import { AgentResync, type ResyncReport } from "./agent-resync.js";
import {
  ContainerdConnection,
  ContainerdError,
  isNotFound,
  type CallOptions,
  type TypedMethod,
} from "./containerd/containerd-connection.js";
import { NodeAgent } from "./node-agent.js";
import { ContainerdRuntime, WorkerRemovalError } from "./runtime/containerd-runtime.js";
import { WORKER_LABELS, type Runtime, type WorkerExit } from "./runtime/runtime.js";
import { ContainerdTestFixture, testFunctionSpec } from "./testing/containerd-test-fixture.js";

// The resync of a real NodeAgent on the real test containerd and CNI bridge. Two
// test fakes wrap the real parts, each to stage one fault: a runtime that hides
// chosen exit events (a missed event), and a containerd connection whose next
// Tasks.Delete answers INTERNAL (a removal that fails).

/** Test fake: the real containerd connection, but the next `failTaskDeletes` Tasks.Delete calls fail. */
class TaskDeleteFailingConnection extends ContainerdConnection {
  failTaskDeletes = 0;

  override unary<I extends DescMessage, O extends DescMessage>(
    method: TypedMethod<"unary", I, O>,
    input: MessageInitShape<I>,
    opts?: CallOptions,
  ): Promise<MessageShape<O>> {
    if ((method as unknown) === Tasks.method.delete && this.failTaskDeletes > 0) {
      this.failTaskDeletes--;
      return Promise.reject(
        new ContainerdError(
          "Tasks.Delete",
          grpc.status.INTERNAL,
          "injected by the test: shim did not answer",
        ),
      );
    }
    return super.unary(method, input, opts);
  }
}

/** Test fake: the real runtime, except that exit events of the `hidden` workers never reach the agent. */
function exitHidingRuntime(rt: ContainerdRuntime, hidden: Set<string>): Runtime {
  return {
    name: rt.name,
    start: () => rt.start(),
    close: () => rt.close(),
    prepareImage: (ref, onProgress) => rt.prepareImage(ref, onProgress),
    startWorker: (spec) => rt.startWorker(spec),
    pauseWorker: (id) => rt.pauseWorker(id),
    resumeWorker: (id) => rt.resumeWorker(id),
    removeWorker: (id) => rt.removeWorker(id),
    listWorkers: () => rt.listWorkers(),
    workerStatus: (id) => rt.workerStatus(id),
    onWorkerExit: (listener) =>
      rt.onWorkerExit((exit: WorkerExit) => {
        if (!hidden.has(exit.id)) listener(exit);
      }),
    onWorkerLog: (listener) => rt.onWorkerLog(listener),
  };
}

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, ms = 60_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for: ${what}`);
}

describe("AgentResync (real containerd and CNI)", () => {
  const fx = new ContainerdTestFixture();
  const stateDir = mkdtempSync(join(tmpdir(), "esb-resync-state-"));
  const nodeName = `node-${fx.id}`;
  const hiddenExits = new Set<string>();
  const removalErrors: Error[] = [];
  const metrics = new AgentMetrics();
  let conn: TaskDeleteFailingConnection;
  let observer: ContainerdConnection;
  let rt: ContainerdRuntime;
  let agent: NodeAgent;
  let resync: AgentResync;

  function spec(name: string, provisioned: number): FunctionSpec {
    return testFunctionSpec(fx, name, {
      provisionedConcurrency: provisioned,
      // Idle workers stay running (not frozen) for the whole test: a frozen task ignores SIGKILL.
      scaling: { pauseAfterMs: 600_000, keepWarmSeconds: 600 },
    });
  }

  const containerExists = async (id: string) =>
    conn.unary(Containers.method.get, { id }).then(
      () => true,
      (err: unknown) => {
        if (isNotFound(err)) return false;
        throw err;
      },
    );

  beforeAll(async () => {
    await fx.setup();
    conn = new TaskDeleteFailingConnection({ socketPath: fx.socket, namespace: fx.namespace });
    observer = new ContainerdConnection({ socketPath: fx.socket, namespace: fx.namespace });
    rt = new ContainerdRuntime({
      socketPath: fx.socket,
      namespace: fx.namespace,
      network: fx.network,
      stateDir: join(fx.dir, "runtime"),
      insecureRegistries: [fx.registry],
      connection: conn,
      onRemovalError: (_id, err) => {
        removalErrors.push(err);
        metrics.recordRemovalFailure();
      },
    });
    agent = new NodeAgent({
      nodeName,
      runtime: exitHidingRuntime(rt, hiddenExits),
      network: fx.network,
      stateDir,
      onPoolEvent: metrics.record,
    });
    metrics.attach(agent);
    await agent.start();
    // Passes are run by hand (intervalMs 0), except in the test of the periodic timer.
    resync = new AgentResync({
      agent,
      runtime: rt,
      network: fx.network,
      intervalMs: 0,
      onReport: metrics.recordResync,
    });
  });

  afterAll(async () => {
    await resync?.stop();
    if (agent) {
      for (const p of agent.pools()) await agent.destroyFunction(p.ref);
      await agent.close();
    }
    observer?.close();
    await fx.teardown();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it("finds nothing to repair on a healthy node", async () => {
    await agent.prepareFunction(spec("healthy", 1));
    await until("a provisioned worker", () => agent.listWorkers().find((w) => w.state === "idle"));
    expect(await resync.runOnce()).toMatchObject({
      orphanWorkersRemoved: 0,
      lostWorkersReplaced: 0,
      networkAllocationsFreed: 0,
      failedRepairs: 0,
    });
    await agent.destroyFunction({ namespace: "default", name: "healthy" });
  });

  it("replaces a provisioned worker whose task was killed out of band without an exit event", async () => {
    const ref = { namespace: "default", name: "killed" };
    await agent.prepareFunction(spec("killed", 1));
    const first = await until("a provisioned worker", () =>
      agent.listWorkers(ref).find((w) => w.state === "idle"),
    );
    hiddenExits.add(first.workerId);
    await observer.unary(Tasks.method.kill, { containerId: first.workerId, signal: 9, all: true });
    await until("the task to stop", async () => {
      const { process } = await observer.unary(Tasks.method.get, { containerId: first.workerId });
      return process?.status === Status.STOPPED;
    });
    // The pool did not hear of it: it still counts the dead worker as idle.
    expect(agent.listWorkers(ref)).toEqual([
      expect.objectContaining({ workerId: first.workerId, state: "idle" }),
    ]);

    // The periodic pass (short interval here) notices, and the pool starts a replacement.
    const reports: ResyncReport[] = [];
    const periodic = new AgentResync({
      agent,
      runtime: rt,
      network: fx.network,
      intervalMs: 200,
      onReport: (r) => {
        reports.push(r);
        metrics.recordResync(r);
      },
    });
    periodic.start();
    try {
      await until("the resync to report the lost worker", () =>
        reports.find((r) => r.lostWorkersReplaced > 0),
      );
    } finally {
      await periodic.stop();
    }
    const replacement = await until("a replacement worker", () =>
      agent.listWorkers(ref).find((w) => w.workerId !== first.workerId && w.state === "idle"),
    );
    expect(replacement.workerId).not.toBe(first.workerId);
    await until("the dead worker's container and network to be removed", async () => {
      const allocations = await fx.network.list();
      return !(await containerExists(first.workerId)) && !allocations.includes(first.workerId);
    });
    expect(agent.listWorkers(ref).map((w) => w.workerId)).toEqual([replacement.workerId]);
    await agent.destroyFunction(ref);
  });

  it("removes an orphaned container with this node's owner label and leaves other nodes' alone", async () => {
    // Another runtime, as a previous agent process would have left them.
    const other = new ContainerdRuntime({
      socketPath: fx.socket,
      namespace: fx.namespace,
      network: fx.network,
      stateDir: join(fx.dir, "runtime-other"),
      insecureRegistries: [fx.registry],
    });
    await other.start();
    try {
      const image = await other.prepareImage(fx.imageRef);
      const start = (id: string, owner: string) =>
        other.startWorker({
          id,
          image,
          labels: {
            [WORKER_LABELS.function]: "default/ghost",
            [WORKER_LABELS.owner]: owner,
            [WORKER_LABELS.revision]: "rev0",
            [WORKER_LABELS.role]: "worker",
          },
          env: {},
          memoryMb: 64,
          tmpMb: 8,
        });
      const orphan = await start(`orphan-${fx.id}`, nodeName);
      const foreign = await start(`foreign-${fx.id}`, "some-other-node");
      const report = await resync.runOnce();
      expect(report).toMatchObject({ orphanWorkersRemoved: 1, failedRepairs: 0 });
      expect(await containerExists(orphan.id)).toBe(false);
      expect(await fx.network.list()).not.toContain(orphan.id);
      expect(existsSync(fx.network.netnsPath(orphan.id))).toBe(false);
      // Not this node's: neither the container nor its network is touched.
      expect(await containerExists(foreign.id)).toBe(true);
      expect(await fx.network.list()).toContain(foreign.id);
      await other.removeWorker(foreign.id);
    } finally {
      await other.close();
    }
  });

  it("frees a CNI allocation and network namespace that belong to no worker", async () => {
    const id = `leak-${fx.id}`;
    await fx.network.attach(id);
    expect(existsSync(fx.network.netnsPath(id))).toBe(true);
    const report = await resync.runOnce();
    expect(report).toMatchObject({ networkAllocationsFreed: 1, failedRepairs: 0 });
    expect(await fx.network.list()).not.toContain(id);
    expect(existsSync(fx.network.netnsPath(id))).toBe(false);
  });

  it("surfaces a failed removal, keeps the worker's network while its task exists, and retries it", async () => {
    const ref = { namespace: "default", name: "flaky" };
    await agent.prepareFunction(spec("flaky", 0));
    const got = await agent.acquire(ref, { holderId: "test-gateway" });
    conn.failTaskDeletes = 1;
    // The caller says the worker failed: the pool removes it, and containerd's Tasks.Delete fails once.
    await agent.release(got.workerId, got.leaseId, "worker-failed");
    expect(removalErrors).toHaveLength(1);
    expect(removalErrors[0]).toBeInstanceOf(WorkerRemovalError);
    expect(removalErrors[0].message).toMatch(/task delete failed: .*injected by the test/);
    // Not forgotten with its network torn down: the task and container are there, so is the network.
    const { process } = await observer.unary(Tasks.method.get, { containerId: got.workerId });
    expect(process?.status).toBe(Status.STOPPED);
    expect(await containerExists(got.workerId)).toBe(true);
    expect(await fx.network.list()).toContain(got.workerId);
    expect(existsSync(fx.network.netnsPath(got.workerId))).toBe(true);
    expect(await metrics.text()).toMatch(/^esb_agent_worker_removal_failures_total 1$/m);
    // The pool gave up on it; the resync finds it as an orphan and removes it for good.
    expect(agent.trackedWorkers().map((w) => w.workerId)).not.toContain(got.workerId);
    const report = await resync.runOnce();
    expect(report).toMatchObject({ orphanWorkersRemoved: 1, failedRepairs: 0 });
    const gone = await observer
      .unary(Tasks.method.get, { containerId: got.workerId })
      .catch((e: unknown) => e);
    expect(isNotFound(gone)).toBe(true);
    expect(await containerExists(got.workerId)).toBe(false);
    expect(await fx.network.list()).not.toContain(got.workerId);
    expect(existsSync(fx.network.netnsPath(got.workerId))).toBe(false);
    expect(await metrics.text()).toMatch(/^esb_agent_resync_repairs_total\{kind="orphan_worker"\} [1-9]/m);
    await agent.destroyFunction(ref);
  });
});
