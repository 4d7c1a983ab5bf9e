import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "@esb/common";
import { InvocationOutcome, StartKind } from "@esb/common/gen/esb/agent/v1/agent_pb";
import type { AgentClientPool, AgentConnection } from "./agent-client-pool.js";
import type { FunctionKey } from "./function-name.js";
import { LambdaApiError } from "./lambda-api-error.js";
import type { StartKindLabel } from "./gateway-metrics.js";

/** Settings of a {@link WorkerBroker}. */
export interface WorkerBrokerOptions {
  /** Lease the agent grants per worker (renewed by the pool's heartbeats). */
  leaseMs: number;
  logger: Logger;
  /**
   * Warm hold: how long a healthy worker is kept by the gateway after its
   * invocation before ReleaseWorker is sent. A call in that window reuses it
   * with no agent round trip. 0 (default) releases at once.
   */
  warmHoldMs?: number;
  /** Longest wait for AcquireWorker (cold starts may pull an image); default 120 s. */
  acquireTimeoutMs?: number;
  /**
   * What a caller waiting for another caller's worker (see {@link WorkerBroker.acquire})
   * waits beyond the function timeout: by default as long as a cold start may take.
   */
  passiveWaitGraceMs?: number;
  /**
   * How long an acquire keeps asking while no agent is known or every agent is
   * unreachable (an agent restarting) before failing with ServiceException; default 0.
   */
  agentOutageWaitMs?: number;
}

/** A worker held for exactly one invocation. */
export interface WorkerLease {
  agent: AgentConnection;
  workerId: string;
  /** `host:port` of the worker's invoke endpoint. */
  address: string;
  leaseId: string;
  startKind: StartKindLabel;
  /** `namespace/name` of the function the worker runs. */
  functionKey: string;
}

export { InvocationOutcome };

/** Lambda's largest function timeout (s): the passive wait's bound when the caller gives none. */
const MAX_FUNCTION_TIMEOUT_SECONDS = 900;

const START_KIND: Record<number, StartKindLabel> = {
  [StartKind.COLD]: "cold",
  [StartKind.WARM]: "warm",
  [StartKind.THAWED]: "thawed",
};

/**
 * Gets workers from agents and gives them back.
 *
 * Placement: an agent whose last heartbeat reported idle workers of the
 * function comes first, then one with paused workers, then the least loaded
 * (fewest busy workers, counting the ones this gateway holds). The local view is
 * adjusted as workers are handed out so concurrent callers spread out before the
 * next heartbeat corrects it. A warm invocation costs one round trip to the
 * agent (AcquireWorker); ReleaseWorker is sent after the response without
 * delaying the caller, and the leases are kept alive by the pool's heartbeats.
 * With a warm hold (`warmHoldMs` > 0) a healthy worker stays with the gateway
 * for that long after its invocation and the next call of the same function
 * reuses it with no round trip at all; a caller still waiting on an agent gets
 * a worker released meanwhile at once.
 *
 * When every agent refuses: RESOURCE_EXHAUSTED → TooManyRequestsException
 * (ReservedFunctionConcurrentInvocationLimitExceeded); NOT_FOUND or
 * FAILED_PRECONDITION → ResourceConflictException (function not ready on any
 * node); anything else (unreachable agent…) → ServiceException naming the agents
 * and their errors.
 */
export class WorkerBroker {
  /** Healthy workers kept after their invocation (warm hold), by `namespace/name`, most recent last. */
  private readonly held = new Map<string, { lease: WorkerLease; timer: NodeJS.Timeout }[]>();
  /** Callers waiting for a worker, and agent acquires in flight, by `namespace/name` (see {@link acquire}). */
  private readonly demand = new Map<string, FunctionDemand>();
  /** ReleaseWorker calls on their way, awaited at shutdown so that no worker is left leased. */
  private readonly releasing = new Set<Promise<void>>();

  private readonly leaseMs: number;
  private readonly logger: Logger;
  private readonly warmHoldMs: number;
  private readonly acquireTimeoutMs: number;
  private readonly passiveWaitGraceMs: number;
  private readonly agentOutageWaitMs: number;
  /** Set by {@link releaseHeld}: releases are no longer retried. */
  private stopping = false;

  constructor(
    private readonly agents: AgentClientPool,
    options: WorkerBrokerOptions,
  ) {
    this.leaseMs = options.leaseMs;
    this.logger = options.logger;
    this.warmHoldMs = options.warmHoldMs ?? 0;
    this.acquireTimeoutMs = options.acquireTimeoutMs ?? 120_000;
    this.passiveWaitGraceMs = options.passiveWaitGraceMs ?? this.acquireTimeoutMs;
    this.agentOutageWaitMs = options.agentOutageWaitMs ?? 0;
  }

  /**
   * Acquires a worker for one invocation of `fn`; throws {@link LambdaApiError} when none can be had.
   * `timeoutSeconds` (the function's timeout; default Lambda's largest, 900) bounds, with
   * the grace, the wait for a worker another caller brings or gives back.
   */
  async acquire(fn: FunctionKey, options: { timeoutSeconds?: number } = {}): Promise<WorkerLease> {
    const key = `${fn.namespace}/${fn.name}`;
    const kept = this.held.get(key)?.pop();
    if (kept) {
      clearTimeout(kept.timer);
      return { ...kept.lease, startKind: "warm" };
    }
    if (this.warmHoldMs <= 0) return this.acquireFromAgents(fn, key);
    const demand = this.demandOf(key);
    // An agent acquire already on its way whose caller was served meanwhile
    // ("spare") will bring a worker: wait for it instead of asking for one more,
    // so that a burst during slow cold starts does not start a worker per request.
    if (demand.spare > demand.passive) {
      demand.passive++;
      // The worker it counts on is brought by an acquire in flight or given back by a running
      // invocation, both bounded; the timer is the backstop for one that never reaches this caller.
      const waitMs =
        (options.timeoutSeconds ?? MAX_FUNCTION_TIMEOUT_SECONDS) * 1000 + this.passiveWaitGraceMs;
      let timer: NodeJS.Timeout | undefined;
      const lease = await new Promise<WorkerLease | null | "timeout">((resolve) => {
        const waiter = (l: WorkerLease | null): boolean => {
          clearTimeout(timer);
          resolve(l);
          return true;
        };
        demand.waiters.push(waiter);
        timer = setTimeout(() => {
          const i = demand.waiters.indexOf(waiter);
          if (i >= 0) demand.waiters.splice(i, 1);
          resolve("timeout");
        }, waitMs);
      });
      demand.passive--;
      if (lease === "timeout") {
        this.forgetDemand(key, demand);
        throw new LambdaApiError(
          "ServiceException",
          `ESB gateway: no worker of ${key} became available within ${(waitMs / 1000).toFixed(1)} s`,
        );
      }
      if (lease) {
        this.forgetDemand(key, demand);
        return lease;
      }
      // The spare acquire failed: ask the agent ourselves.
    }
    return this.acquireRacingReleases(fn, key, demand);
  }

  /**
   * Asks the agents for a worker (possibly a cold start of a second or more);
   * meanwhile a worker this gateway releases serves this caller instead. The
   * first of the two serves the caller; the other becomes a held worker.
   */
  private async acquireRacingReleases(
    fn: FunctionKey,
    key: string,
    demand: FunctionDemand,
  ): Promise<WorkerLease> {
    // `settled` is set synchronously so a worker is never handed to a caller already served.
    let settled = false;
    let resolveHandOff!: (lease: WorkerLease) => void;
    const handedOff = new Promise<WorkerLease>((resolve) => (resolveHandOff = resolve));
    const waiter = (lease: WorkerLease | null): boolean => {
      if (settled || !lease) return false;
      settled = true;
      demand.spare++;
      resolveHandOff(lease);
      return true;
    };
    demand.waiters.push(waiter);
    const fromAgent = this.acquireFromAgents(fn, key).then(
      (lease) => {
        if (!settled) {
          settled = true;
          return lease;
        }
        demand.spare--;
        // Served by a hand-off already: the agent's worker goes to the next waiter or is held.
        this.release(lease, InvocationOutcome.SUCCESS);
        return handedOff;
      },
      (err: unknown) => {
        if (!settled) {
          settled = true;
          throw err;
        }
        demand.spare--;
        // A caller counting on this spare acquire must now ask by itself.
        this.wakePassiveWaiter(demand);
        return handedOff;
      },
    );
    try {
      return await Promise.race([fromAgent, handedOff]);
    } finally {
      const i = demand.waiters.indexOf(waiter);
      if (i >= 0) demand.waiters.splice(i, 1);
      this.forgetDemand(key, demand);
    }
  }

  private demandOf(key: string): FunctionDemand {
    let d = this.demand.get(key);
    if (!d) {
      d = { waiters: [], spare: 0, passive: 0 };
      this.demand.set(key, d);
    }
    return d;
  }

  private forgetDemand(key: string, d: FunctionDemand): void {
    if (d.waiters.length === 0 && d.spare === 0 && d.passive === 0) this.demand.delete(key);
  }

  /** Tells the oldest caller waiting only on a spare acquire to ask the agents itself. */
  private wakePassiveWaiter(d: FunctionDemand): void {
    for (let i = 0; i < d.waiters.length; i++) {
      // Passive waiters accept null; racing ones refuse it and stay.
      const w = d.waiters[i];
      if (w(null)) {
        d.waiters.splice(i, 1);
        return;
      }
    }
  }

  /**
   * Asks the agents for a worker. While no agent is known or every agent is
   * unreachable (an agent restarting: its DaemonSet pod replaced, `esb up`'s
   * agent coming back), it retries for up to `agentOutageWaitMs` instead of
   * failing at once: the workers usually survive the agent, which re-adopts them.
   */
  private async acquireFromAgents(fn: FunctionKey, key: string): Promise<WorkerLease> {
    const deadline = Date.now() + this.agentOutageWaitMs;
    let delay = 100;
    for (;;) {
      const got = await this.askAgents(fn, key);
      if (!(got instanceof AgentsUnreachable)) return got;
      if (Date.now() + delay > deadline) throw got.error;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 1000);
    }
  }

  /** One round over the agents: a lease, an {@link AgentsUnreachable} (retryable), or a thrown LambdaApiError. */
  private async askAgents(fn: FunctionKey, key: string): Promise<WorkerLease | AgentsUnreachable> {
    const all = this.agents.list();
    if (all.length === 0) {
      return new AgentsUnreachable(
        new LambdaApiError(
          "ServiceException",
          "ESB gateway: no agents are known; cannot run functions (check AGENT_URLS / the agent DaemonSet)",
        ),
      );
    }
    const healthy = all.filter((a) => a.healthy);
    const candidates = (healthy.length > 0 ? healthy : all).sort((a, b) => score(a, key) - score(b, key));
    const failures: { agent: string; code: Code | undefined; message: string; unreachable: boolean }[] = [];
    for (const agent of candidates) {
      const pool = agent.pools.get(key);
      // Optimistically take one warm worker from the local view; the next heartbeat corrects it.
      if (pool && pool.idleWorkers > 0) pool.idleWorkers--;
      else if (pool && pool.pausedWorkers > 0) pool.pausedWorkers--;
      agent.inflight++;
      try {
        const res = await agent.client.acquireWorker(
          {
            function: { namespace: fn.namespace, name: fn.name },
            holderId: this.agents.holderId,
            leaseMs: this.leaseMs,
            waitMs: 0,
          },
          { timeoutMs: this.acquireTimeoutMs },
        );
        // Listed by heartbeats from now until its release is answered.
        agent.leases.add(res.leaseId);
        return {
          agent,
          workerId: res.workerId,
          address: res.address,
          leaseId: res.leaseId,
          startKind: START_KIND[res.startKind] ?? "warm",
          functionKey: key,
        };
      } catch (err) {
        agent.inflight--;
        const ce = ConnectError.from(err);
        failures.push({
          agent: agent.url,
          code: ce.code,
          message: ce.rawMessage,
          unreachable: unreachable(ce),
        });
        if (
          ce.code === Code.Unavailable ||
          ce.code === Code.DeadlineExceeded ||
          ce.code === Code.Unknown ||
          ce.code === Code.Internal
        ) {
          this.logger.warn(
            { agent: agent.url, function: key, code: Code[ce.code], err: ce.rawMessage },
            "AcquireWorker failed",
          );
        }
      }
    }
    if (failures.some((f) => f.code === Code.ResourceExhausted)) {
      throw new LambdaApiError(
        "TooManyRequestsException",
        "Rate Exceeded.",
        { Reason: "ReservedFunctionConcurrentInvocationLimitExceeded" },
        1,
      );
    }
    const notReady = failures.find((f) => f.code === Code.NotFound || f.code === Code.FailedPrecondition);
    if (notReady) {
      throw new LambdaApiError(
        "ResourceConflictException",
        `The operation cannot be performed at this time. The function ${key} is not ready on any node: ${notReady.message}`,
      );
    }
    const error = new LambdaApiError(
      "ServiceException",
      `ESB gateway: no agent could provide a worker for ${key}: ` +
        failures
          .map((f) => `${f.agent}: ${f.code !== undefined ? Code[f.code] : "error"} ${f.message}`)
          .join("; "),
    );
    // Connection refused or reset everywhere: nothing was handed out (a lease granted on a
    // connection that then broke is not listed by heartbeats, so the agent expires it).
    if (failures.every((f) => f.unreachable)) return new AgentsUnreachable(error);
    throw error;
  }

  /**
   * Gives the worker back with the invocation's outcome. Call it exactly once
   * per lease that {@link acquire} returned, whatever happened. Returns at once:
   * the call runs in the background and a failure is only logged (heartbeats
   * stop listing the lease, so the agent expires it).
   */
  release(lease: WorkerLease, outcome: InvocationOutcome): void {
    const healthy = outcome === InvocationOutcome.SUCCESS || outcome === InvocationOutcome.FUNCTION_ERROR;
    if (this.warmHoldMs > 0 && healthy && this.agents.list().includes(lease.agent)) {
      const key = lease.functionKey;
      const waiters = this.demand.get(key)?.waiters;
      while (waiters && waiters.length > 0) {
        if (waiters.shift()!({ ...lease, startKind: "warm" })) return;
      }
      const list = this.held.get(key) ?? [];
      const entry = {
        lease,
        timer: setTimeout(() => {
          const i = list.indexOf(entry);
          if (i >= 0) list.splice(i, 1);
          void this.sendRelease(lease, outcome);
        }, this.warmHoldMs),
      };
      entry.timer.unref();
      list.push(entry);
      this.held.set(key, list);
      return;
    }
    void this.sendRelease(lease, outcome);
  }

  /**
   * ReleaseWorker, asked again while the agent is unreachable (restarting: the next agent
   * re-adopts the worker as busy and takes the release of any lease of it), for up to the
   * lease's length; without it the worker stayed busy until that lease expired. Not retried
   * once this gateway is stopping.
   */
  private async releaseRetrying(lease: WorkerLease, outcome: InvocationOutcome): Promise<void> {
    const deadline = Date.now() + this.leaseMs;
    let delay = 250;
    for (;;) {
      try {
        await lease.agent.client.releaseWorker(
          { workerId: lease.workerId, leaseId: lease.leaseId, outcome },
          { timeoutMs: 10_000 },
        );
        return;
      } catch (err) {
        if (this.stopping || !unreachable(ConnectError.from(err)) || Date.now() + delay > deadline) throw err;
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 4000);
      }
    }
  }

  /**
   * Releases every held worker now (at shutdown); resolves when the agents
   * answered these and every release already on its way.
   */
  async releaseHeld(): Promise<void> {
    this.stopping = true;
    for (const list of this.held.values()) {
      for (const { lease, timer } of list.splice(0)) {
        clearTimeout(timer);
        void this.sendRelease(lease, InvocationOutcome.SUCCESS);
      }
    }
    await Promise.all([...this.releasing]);
  }

  private sendRelease(lease: WorkerLease, outcome: InvocationOutcome): Promise<void> {
    lease.agent.inflight--;
    const done: Promise<void> = this.releaseRetrying(lease, outcome)
      .catch((err: unknown) =>
        this.logger.warn(
          { agent: lease.agent.url, workerId: lease.workerId, err: String(err) },
          "ReleaseWorker failed; the lease will expire",
        ),
      )
      .then(() => {
        lease.agent.leases.delete(lease.leaseId);
        this.releasing.delete(done);
      });
    this.releasing.add(done);
    return done;
  }
}

/** Socket errors of an agent that is not there (restarting, or its node gone). */
const UNREACHABLE_ERRNOS = new Set(["ECONNREFUSED", "ECONNRESET", "EHOSTUNREACH", "ENETUNREACH", "EPIPE"]);

/** True when the call failed because the agent could not be reached (connect-node reports a refused connection as Internal). */
function unreachable(err: ConnectError): boolean {
  if (err.code === Code.Unavailable) return true;
  const errno = (err.cause as NodeJS.ErrnoException | undefined)?.code;
  return errno !== undefined && UNREACHABLE_ERRNOS.has(errno);
}

/** Every agent was unreachable (or none was known): worth asking again shortly. */
class AgentsUnreachable {
  constructor(readonly error: LambdaApiError) {}
}

/** Who is waiting for workers of one function at this gateway. */
interface FunctionDemand {
  /**
   * Oldest first. A waiter takes a released worker and returns true, or returns
   * false when it no longer needs one. Passive waiters (counting on a spare
   * acquire) also accept null: "ask the agents yourself".
   */
  waiters: ((lease: WorkerLease | null) => boolean)[];
  /** Agent acquires in flight whose caller was already served by a released worker. */
  spare: number;
  /** Callers waiting only for a spare acquire's worker (or a release). */
  passive: number;
}

/** Lower is better: warm workers first, then paused ones, then the least busy node. */
function score(agent: AgentConnection, key: string): number {
  const pool = agent.pools.get(key);
  let busy = agent.inflight;
  for (const p of agent.pools.values()) busy += p.busyWorkers;
  if (pool && pool.idleWorkers > 0) return -2_000_000 + busy;
  if (pool && pool.pausedWorkers > 0) return -1_000_000 + busy;
  return busy;
}
