import { readFileSync } from "node:fs";
import { createClient } from "@connectrpc/connect";
import { ContainerdConnection } from "@esb/agent/containerd/containerd-connection";
import type { NodeAgent } from "@esb/agent/node-agent";
import type { AcquiredWorker } from "@esb/agent/pool/worker-pool";
import { CgroupFreezer } from "@esb/agent/sandbox/cgroup-freezer";
import { agentTransport, staticTokenSource } from "@esb/common/agent-credentials";
import { Tasks } from "@esb/common/gen/containerd/services/tasks/v1/tasks_pb";
import { AgentService, StartKind } from "@esb/common/gen/esb/agent/v1/agent_pb";
import { BENCH_HOLDER, progress, waitForRuntimePaused, waitForState } from "./agent-measurements.js";
import { BENCH_NAMESPACE } from "./bench-environment.js";
import { KeepAliveTarget, postFirstByte, WORKER_INVOKE_PATH } from "./worker-http.js";

/** Samples (ms) of every way of thawing one worker, taken in turn so that all see the same machine. */
export interface ThawSamples {
  /** Paused by the pool → `acquire` (the agent thaws it) + POST on a new connection → first byte. */
  thaw: number[];
  /** The `acquire` part of {@link thaw}. */
  acquire: number[];
  /** The rest of {@link thaw}: POST on a new connection → first byte, once `acquire` returned. */
  firstByte: number[];
  /** {@link thaw} with AcquireWorker over the agent's gRPC API (HTTP/2 session kept, token checked), as the gateway asks. */
  grpc: number[];
  /** The AcquireWorker part of {@link grpc}. */
  grpcAcquire: number[];
  /** Paused by the pool → `acquire` + POST on a keep-alive connection opened before the pause (the gateway's case). */
  keepAlive: number[];
  /** Frozen by a direct write → direct write of THAWED + POST on a new connection → first byte: the limit. */
  freezerLimit: number[];
  /** Paused by containerd `Tasks.Pause` → `Tasks.Resume` + POST on a new connection → first byte (the old path). */
  containerdResume: number[];
  /** POST on a new connection → first byte to the same worker while it runs (no thaw): the worker's own answer. */
  running: number[];
}

/** Where the bench finds the worker's containerd task and cgroup. */
export interface ThawTarget {
  /** containerd socket and namespace of the agent's workers. */
  socketPath: string;
  namespace: string;
  /** Parent cgroup of the workers (`/<namespace>` in the bench). */
  cgroupParent: string;
  /** The agent's gRPC URL and a file holding the gateway's bearer token. */
  agentUrl: string;
  tokenFile: string;
}

/**
 * Thaws of one kept worker, `warmup + n` rounds; each round takes one sample
 * of every {@link ThawSamples} kind, one after another. For the pool's thaws
 * the worker is released and the bench waits until the pool and the kernel
 * have it paused; for the freezer limit and the containerd path the bench
 * holds the worker (leased, so the pool leaves it alone) and freezes it itself.
 */
export async function measureThawPaths(
  agent: NodeAgent,
  name: string,
  target: ThawTarget,
  n: number,
  warmup: number,
): Promise<ThawSamples> {
  const ref = { namespace: BENCH_NAMESPACE, name };
  const out: ThawSamples = {
    thaw: [],
    acquire: [],
    firstByte: [],
    grpc: [],
    grpcAcquire: [],
    keepAlive: [],
    freezerLimit: [],
    containerdResume: [],
    running: [],
  };
  const freezer = new CgroupFreezer();
  await freezer.kind();
  const conn = new ContainerdConnection({ socketPath: target.socketPath, namespace: target.namespace });
  const acquire = () => agent.acquire(ref, { holderId: BENCH_HOLDER, leaseMs: 120_000 });
  const token = readFileSync(target.tokenFile, "utf8").trim();
  const client = createClient(AgentService, agentTransport(target.agentUrl, staticTokenSource(token)));
  // The gateway's way: AcquireWorker over gRPC; the lease is the same pool lease as acquire()'s.
  const acquireGrpc = async (): Promise<AcquiredWorker> => {
    const r = await client.acquireWorker({ function: ref, holderId: BENCH_HOLDER, leaseMs: 120_000 });
    const kind = r.startKind === StartKind.THAWED ? "thawed" : StartKind[r.startKind];
    return {
      ...w,
      workerId: r.workerId,
      address: r.address,
      leaseId: r.leaseId,
      startKind: kind,
    } as AcquiredWorker;
  };
  let w: AcquiredWorker = await acquire();
  await postFirstByte(w.address, performance.now(), { waitListening: true });
  const keepAlive = new KeepAliveTarget(`http://${w.address}`, WORKER_INVOKE_PATH);
  const cgroup = `${target.cgroupParent}/${w.workerId}`;
  // Released to the pool, then taken back once the pool (and the kernel) have it paused.
  const pausedByPool = async (how = acquire): Promise<number> => {
    await agent.release(w.workerId, w.leaseId, "success");
    await waitForState(agent, name, w.workerId, "paused", 30_000);
    await waitForRuntimePaused(agent, w.workerId, 30_000);
    const t0 = performance.now();
    w = await how();
    if (w.startKind !== "thawed") throw new Error(`thaw: expected a thawed worker, got ${w.startKind}`);
    return t0;
  };
  try {
    await keepAlive.timedPost();
    for (let i = 0; i < warmup + n; i++) {
      const keep = i >= warmup;
      let t0 = await pausedByPool();
      const t1 = performance.now();
      const { ms } = await postFirstByte(w.address, t0);
      if (keep) {
        out.thaw.push(ms);
        out.acquire.push(t1 - t0);
        out.firstByte.push(ms - (t1 - t0));
      }

      t0 = await pausedByPool(acquireGrpc);
      const t2 = performance.now();
      const viaGrpc = await postFirstByte(w.address, t0);
      if (keep) {
        out.grpc.push(viaGrpc.ms);
        out.grpcAcquire.push(t2 - t0);
      }

      t0 = await pausedByPool();
      const tPost = performance.now();
      const kept = await keepAlive.timedPost(); // ms from tPost to the response head
      if (keep) out.keepAlive.push(tPost - t0 + kept);

      // Held by the bench from here: the pool does not touch a leased worker.
      await freezer.freeze(cgroup);
      t0 = performance.now();
      freezer.thaw(cgroup);
      const limit = await postFirstByte(w.address, t0);
      if (keep) out.freezerLimit.push(limit.ms);

      await conn.unary(Tasks.method.pause, { containerId: w.workerId });
      t0 = performance.now();
      await conn.unary(Tasks.method.resume, { containerId: w.workerId });
      const old = await postFirstByte(w.address, t0);
      const t3 = performance.now();
      const running = await postFirstByte(w.address, t3);
      if (keep) {
        out.running.push(running.ms);
        out.containerdResume.push(old.ms);
        progress("thaw", i - warmup, n);
      }
    }
  } finally {
    await keepAlive.close();
    conn.close();
    await agent.release(w.workerId, w.leaseId, "worker-failed").catch(() => undefined);
  }
  return out;
}
