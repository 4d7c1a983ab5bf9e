import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { Logger } from "@esb/common";
import {
  AgentService,
  AcquireWorkerResponseSchema,
  DestroyFunctionResponseSchema,
  FunctionPoolStatusSchema,
  FunctionRefSchema,
  GetNodeStatsResponseSchema,
  HeartbeatResponseSchema,
  InvocationOutcome,
  ListWorkersResponseSchema,
  PrepareFunctionResponseSchema,
  ReleaseWorkerResponseSchema,
  StartKind,
  WorkerInfoSchema,
  WorkerState,
} from "@esb/common/gen/esb/agent/v1/agent_pb";
import type { NodeAgent } from "../node-agent.js";
import {
  AcquireCancelledError,
  ConcurrencyLimitError,
  FunctionNotFoundError,
  InvalidFunctionSpecError,
  LeaseMismatchError,
  PoolClosedError,
  WorkerNotFoundError,
} from "../pool/pool-errors.js";
import type {
  InvocationOutcome as PoolOutcome,
  PoolWorkerState,
  StartKind as PoolStartKind,
} from "../pool/worker-pool.js";
import { ImageUnavailableError, RuntimeUnavailableError } from "../runtime/runtime.js";

const START_KINDS: Record<PoolStartKind, StartKind> = {
  cold: StartKind.COLD,
  warm: StartKind.WARM,
  thawed: StartKind.THAWED,
};

const STATES: Record<PoolWorkerState, WorkerState> = {
  starting: WorkerState.STARTING,
  idle: WorkerState.IDLE,
  busy: WorkerState.BUSY,
  paused: WorkerState.PAUSED,
  stopping: WorkerState.STOPPING,
  destroyed: WorkerState.STOPPING,
};

const OUTCOMES: Partial<Record<InvocationOutcome, PoolOutcome>> = {
  [InvocationOutcome.SUCCESS]: "success",
  [InvocationOutcome.FUNCTION_ERROR]: "function-error",
  [InvocationOutcome.TIMEOUT]: "timeout",
  [InvocationOutcome.WORKER_FAILED]: "worker-failed",
};

/** Longest an acquirer may ask to wait for a worker. */
const MAX_WAIT_MS = 15 * 60_000;

/**
 * Maps an agent error onto a ConnectError with the status code the proto
 * documents: NOT_FOUND, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, UNAVAILABLE,
 * INVALID_ARGUMENT, CANCELLED (an acquire its caller gave up); anything else is INTERNAL.
 */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  const e = err instanceof Error ? err : new Error(String(err));
  if (
    e instanceof FunctionNotFoundError ||
    e instanceof WorkerNotFoundError ||
    e instanceof PoolClosedError
  ) {
    return new ConnectError(e.message, Code.NotFound, undefined, undefined, e);
  }
  if (e instanceof AcquireCancelledError)
    return new ConnectError(e.message, Code.Canceled, undefined, undefined, e);
  if (e instanceof ConcurrencyLimitError)
    return new ConnectError(e.message, Code.ResourceExhausted, undefined, undefined, e);
  if (e instanceof LeaseMismatchError || e instanceof ImageUnavailableError) {
    return new ConnectError(e.message, Code.FailedPrecondition, undefined, undefined, e);
  }
  if (e instanceof RuntimeUnavailableError)
    return new ConnectError(e.message, Code.Unavailable, undefined, undefined, e);
  if (e instanceof InvalidFunctionSpecError)
    return new ConnectError(e.message, Code.InvalidArgument, undefined, undefined, e);
  return new ConnectError(e.message, Code.Internal, undefined, undefined, e);
}

/**
 * The AgentService implementation over a {@link NodeAgent}: request checks
 * (INVALID_ARGUMENT), then the agent's answer, with its errors mapped by
 * {@link toConnectError}.
 */
export function createAgentService(agent: NodeAgent, log?: Logger): ServiceImpl<typeof AgentService> {
  const guard = async <T>(method: string, fn: () => Promise<T> | T): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      const ce = toConnectError(err);
      if (ce.code === Code.Internal) log?.error({ method, err: ce.message }, "request failed");
      throw ce;
    }
  };
  const invalid = (msg: string): never => {
    throw new ConnectError(msg, Code.InvalidArgument);
  };
  const requireRef = (ref: { namespace: string; name: string } | undefined, field: string) => {
    if (!ref?.namespace || !ref.name) invalid(`${field} needs a namespace and a name`);
    return ref!;
  };

  return {
    prepareFunction: (req) =>
      guard("PrepareFunction", async () => {
        if (!req.spec) invalid("spec is required");
        requireRef(req.spec!.ref, "spec.ref");
        const r = await agent.prepareFunction(req.spec!);
        return create(PrepareFunctionResponseSchema, r);
      }),

    acquireWorker: (req, ctx) =>
      guard("AcquireWorker", async () => {
        const ref = requireRef(req.function, "function");
        if (!req.holderId) invalid("holder_id is required");
        if (req.waitMs > MAX_WAIT_MS) invalid(`wait_ms must be at most ${MAX_WAIT_MS}`);
        const w = await agent.acquire(ref, {
          holderId: req.holderId,
          leaseMs: req.leaseMs,
          waitMs: req.waitMs,
          // Aborts when the caller cancels or its deadline passes: no worker is then handed out.
          signal: ctx.signal,
        });
        return create(AcquireWorkerResponseSchema, {
          workerId: w.workerId,
          address: w.address,
          leaseId: w.leaseId,
          startKind: START_KINDS[w.startKind],
          generation: BigInt(w.generation),
          revision: w.revision,
        });
      }),

    releaseWorker: (req) =>
      guard("ReleaseWorker", async () => {
        if (!req.workerId) invalid("worker_id is required");
        const outcome = OUTCOMES[req.outcome];
        if (!outcome) invalid("outcome is required");
        await agent.release(req.workerId, req.leaseId, outcome!);
        return create(ReleaseWorkerResponseSchema);
      }),

    heartbeat: (req) =>
      guard("Heartbeat", () => {
        // Without the flag, only a caller that lists nothing predates lease_ids.
        const listed = req.leasesListed || req.leaseIds.length > 0 ? new Set(req.leaseIds) : undefined;
        const { activeLeases, expiredLeases, pools } = agent.heartbeat(req.holderId, listed);
        if (expiredLeases > 0) {
          log?.info({ holder: req.holderId, expiredLeases }, "expired leases their holder no longer holds");
        }
        return create(HeartbeatResponseSchema, {
          nodeName: agent.nodeName,
          activeLeases,
          expiredLeases,
          pools: pools.map((p) =>
            create(FunctionPoolStatusSchema, {
              function: create(FunctionRefSchema, p.ref),
              generation: BigInt(p.generation),
              revision: p.revision,
              idleWorkers: p.counts.idle,
              pausedWorkers: p.counts.paused,
              busyWorkers: p.counts.busy,
              startingWorkers: p.counts.starting,
              imageDigest: p.imageDigest,
            }),
          ),
        });
      }),

    destroyFunction: (req) =>
      guard("DestroyFunction", async () => {
        const ref = requireRef(req.function, "function");
        return create(DestroyFunctionResponseSchema, { destroyedWorkers: await agent.destroyFunction(ref) });
      }),

    listWorkers: (req) =>
      guard("ListWorkers", () =>
        create(ListWorkersResponseSchema, {
          workers: agent.listWorkers(req.function).map((w) =>
            create(WorkerInfoSchema, {
              workerId: w.workerId,
              function: create(FunctionRefSchema, w.ref),
              generation: BigInt(w.generation),
              revision: w.revision,
              state: STATES[w.state],
              address: w.address,
              containerId: w.workerId,
              createdAtUnixMs: BigInt(w.createdAt),
              lastUsedUnixMs: BigInt(w.lastUsedAt),
              invocations: w.invocations,
            }),
          ),
        }),
      ),

    getNodeStats: () =>
      guard("GetNodeStats", () => {
        const s = agent.nodeStats();
        return create(GetNodeStatsResponseSchema, {
          nodeName: s.nodeName,
          runtime: s.runtime,
          memoryCapacityMb: BigInt(s.memoryCapacityMb),
          memoryReservedMb: BigInt(s.memoryReservedMb),
          workers: s.workers,
          busyWorkers: s.busyWorkers,
          pausedWorkers: s.pausedWorkers,
          functions: s.functions,
        });
      }),
  };
}
