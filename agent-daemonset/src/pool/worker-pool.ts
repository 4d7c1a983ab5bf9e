import { WorkerInitError } from "./worker-init-check.js";
import { randomBytes, randomUUID } from "node:crypto";
import { createLogger, type Logger } from "@esb/common";
import type { ListedWorker, Runtime, WorkerHandle, WorkerSpec } from "../runtime/runtime.js";
import { WORKER_LABELS } from "../runtime/runtime.js";
import { AcquireWaiters } from "./acquire-waiters.js";
import { LeaseTable, type Lease } from "./lease-table.js";
import type { StartLimiter } from "./start-limiter.js";
import { waitForWorkerPort } from "./worker-readiness.js";
import {
  AcquireCancelledError,
  ConcurrencyLimitError,
  LeaseMismatchError,
  PoolClosedError,
  WorkerNotFoundError,
} from "./pool-errors.js";

/**
 * Lifecycle state of a pooled worker. The allowed moves are {@link WORKER_TRANSITIONS};
 * every state change goes through one place that checks them.
 */
export type PoolWorkerState = "starting" | "idle" | "busy" | "paused" | "stopping" | "destroyed";

/**
 * The worker state machine:
 * - starting → idle (provisioned start done) | busy (cold start for an acquirer) | stopping
 * - idle → busy (warm acquire) | paused (after pauseAfterMs) | stopping (keep-warm expired, drained)
 * - paused → busy (thawed by an acquire) | stopping
 * - busy → idle (released healthy) | stopping (failed, timed out, lease expired, drained)
 * - stopping → destroyed (container, network and files removed)
 */
export const WORKER_TRANSITIONS: Readonly<Record<PoolWorkerState, readonly PoolWorkerState[]>> = {
  starting: ["idle", "busy", "stopping"],
  idle: ["busy", "paused", "stopping"],
  paused: ["busy", "stopping"],
  busy: ["idle", "stopping"],
  stopping: ["destroyed"],
  destroyed: [],
};

/** How an acquired worker was obtained (the proto's StartKind). */
export type StartKind = "cold" | "warm" | "thawed";

/** How an invocation ended, as told by the releasing caller. */
export type InvocationOutcome = "success" | "function-error" | "timeout" | "worker-failed";

/** What the pool needs to know about the function it serves; replaced by {@link WorkerPool.update}. */
export interface PoolFunctionConfig {
  generation: number;
  /** Content hash of the runnable spec; workers of another revision are drained. */
  revision: string;
  /** Most workers at once (reservedConcurrency, else the node's capacity for this function). */
  maxWorkers: number;
  /** Workers started ahead of demand and kept (paused). */
  provisioned: number;
  /** Idle time after a release before the worker is paused. */
  pauseAfterMs: number;
  /** Idle time after which a worker (beyond the provisioned ones) is destroyed. */
  keepWarmMs: number;
  /** Lease length when the acquirer asks for none. */
  defaultLeaseMs: number;
  /** Builds the container spec of a new worker with this id. */
  workerSpec(id: string): WorkerSpec;
  /**
   * Checks that a provisioned worker's function initialised (throws WorkerInitError when not);
   * unset: no check (images without ESB's emulator). Not on an invocation's path.
   */
  checkInit?(handle: WorkerHandle): Promise<void>;
  /**
   * A ready generic sandbox to specialise (Runtime.specialiseWorker) for the next worker
   * cold-started for an acquirer: its id, which becomes the worker's; undefined starts a new
   * worker. Unset: every worker is new. Provisioned workers are always new.
   */
  takeSandbox?(): string | undefined;
}

/** Something that happened in a pool, for metrics and logs. */
export type PoolEvent =
  | { type: "acquired"; function: string; kind: StartKind; durationMs: number }
  | { type: "cold-start"; function: string; durationMs: number; ok: boolean; fromSandbox?: boolean }
  | { type: "paused"; function: string }
  | { type: "thawed"; function: string; durationMs: number }
  | { type: "removed"; function: string; reason: string; failed: boolean };

/** A worker handed out by {@link WorkerPool.acquire}, for exactly one invocation. */
export interface AcquiredWorker {
  workerId: string;
  /** host:port of the worker's invoke endpoint. */
  address: string;
  leaseId: string;
  startKind: StartKind;
  generation: number;
  revision: string;
}

/** A worker as reported by {@link WorkerPool.workers}. */
export interface PoolWorkerInfo {
  workerId: string;
  state: PoolWorkerState;
  generation: number;
  revision: string;
  address: string;
  createdAt: number;
  lastUsedAt: number;
  invocations: number;
  /** Holder of the current lease (busy workers). */
  holderId?: string;
}

/** Counts of a pool's workers by state (stopping/destroyed excluded). */
export interface PoolCounts {
  starting: number;
  idle: number;
  busy: number;
  paused: number;
}

/** Options of {@link WorkerPool}. */
export interface WorkerPoolOptions {
  /** "namespace/name" of the function. */
  functionKey: string;
  runtime: Runtime;
  config: PoolFunctionConfig;
  logger?: Logger;
  onEvent?: (event: PoolEvent) => void;
  /** Makes new worker ids (default: `<namespace>-<name>-<8 hex>`, container-id safe). */
  newWorkerId?: () => string;
  /**
   * Resolves once a started worker serves its invoke port; rejects when it will
   * not. Default: {@link waitForWorkerPort} with `readyTimeoutMs`.
   */
  waitReady?: (handle: WorkerHandle, stillStarting: () => boolean) => Promise<void>;
  /** How long a new worker may take to listen on its invoke port (default 15 s). */
  readyTimeoutMs?: number;
  /** Shared by the node's pools: bounds concurrent starts (container start + readiness). */
  startLimiter?: StartLimiter;
  /** How long a new lease survives heartbeats that do not list it (default 10 s; see {@link LeaseTable}). */
  unlistedLeaseGraceMs?: number;
}

/** Parameters of {@link WorkerPool.acquire}. */
export interface AcquireOptions {
  /** Caller whose heartbeats keep the lease alive. */
  holderId: string;
  /** Lease length without a heartbeat; 0/undefined = the pool's default. */
  leaseMs?: number;
  /** 0: fail at once at the concurrency limit; else wait up to this long for a worker. */
  waitMs?: number;
  /** The caller gave up (cancelled, deadline passed): hand nothing out. */
  signal?: AbortSignal;
}

interface PoolWorker {
  id: string;
  state: PoolWorkerState;
  handle?: WorkerHandle;
  generation: number;
  revision: string;
  createdAt: number;
  lastUsedAt: number;
  invocations: number;
  lease?: Lease;
  /** Remove instead of going idle when released (old revision, function destroyed). */
  drain: boolean;
  /** Re-adopted after an agent restart while running: its lease id is unknown, any release is accepted. */
  adopted: boolean;
  pauseTimer?: NodeJS.Timeout;
  reapTimer?: NodeJS.Timeout;
  /** Runtime operations on this worker, one after another. */
  chain: Promise<void>;
  /** Resolves once the worker is destroyed. */
  gone?: Promise<void>;
}

const RETIRED_MEMORY = 1000;

/**
 * The workers of one function on this node. Hands out one worker per invocation
 * (never two invocations on one worker), thaws paused workers first, reuses idle
 * ones, cold-starts new ones up to the concurrency limit, pauses idle workers
 * after `pauseAfterMs` and destroys them after `keepWarmMs`, keeps
 * `provisioned` workers started, and removes any worker that crashed, timed
 * out, failed or lost its lease — such a worker is never handed out again.
 */
export class WorkerPool {
  readonly functionKey: string;
  private readonly runtime: Runtime;
  private config: PoolFunctionConfig;
  private readonly log: Logger;
  private readonly onEvent: (event: PoolEvent) => void;
  private readonly newWorkerId: () => string;
  private readonly workersById = new Map<string, PoolWorker>();
  /** Ids of removed workers, so a late release of a reclaimed worker is a harmless no-op. */
  private readonly retired = new Set<string>();
  private readonly leases: LeaseTable;
  private readonly waiters = new AcquireWaiters();
  private closed = false;
  private provisionBackoffMs = 0;
  /**
   * Why the last provisioned worker's function failed to initialise (`errorType: message`),
   * until a provisioned worker initialises; reported to the controller by PrepareFunction.
   */
  initError: string | undefined;
  private provisionTimer?: NodeJS.Timeout;

  private readonly waitReady: (handle: WorkerHandle, stillStarting: () => boolean) => Promise<void>;
  private readonly startLimiter: StartLimiter | undefined;

  constructor(opts: WorkerPoolOptions) {
    this.functionKey = opts.functionKey;
    this.runtime = opts.runtime;
    this.config = opts.config;
    this.log = (opts.logger ?? createLogger("worker-pool")).child({ function: opts.functionKey });
    this.onEvent = opts.onEvent ?? (() => undefined);
    const slug = opts.functionKey
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, "-")
      .slice(0, 48);
    this.newWorkerId = opts.newWorkerId ?? (() => `${slug}-${randomBytes(4).toString("hex")}`);
    this.startLimiter = opts.startLimiter;
    const readyTimeoutMs = opts.readyTimeoutMs ?? 15_000;
    this.waitReady =
      opts.waitReady ??
      ((handle, stillStarting) => waitForWorkerPort(handle.ip, handle.port, readyTimeoutMs, stillStarting));
    this.leases = new LeaseTable((lease, reason) => {
      const w = this.workersById.get(lease.workerId);
      if (!w || w.lease !== lease || w.state !== "busy") return;
      // The holder vanished or let go: what the worker is doing is unknown, so it is not reused.
      void this.remove(w, reason, true);
    }, opts.unlistedLeaseGraceMs);
  }

  /** The configuration in force. */
  get current(): Readonly<PoolFunctionConfig> {
    return this.config;
  }

  /** True once {@link destroy} or {@link close} was called. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Starts the provisioned workers; call once after construction (and adoption). */
  start(): void {
    this.ensureProvisioned();
  }

  /**
   * Hands out one worker for one invocation: a paused worker is thawed, else an
   * idle one is reused, else one is cold-started when under `maxWorkers`.
   * At the limit it throws {@link ConcurrencyLimitError} at once (`waitMs` 0) or
   * after waiting up to `waitMs` for a release. Throws {@link PoolClosedError}
   * when the pool is destroyed, and the runtime's errors when a cold start fails.
   * Once `signal` aborts it throws {@link AcquireCancelledError} and hands
   * nothing out: a worker already taken for the caller goes back to the pool
   * (a cold start in progress finishes and the worker becomes idle).
   */
  async acquire(opts: AcquireOptions): Promise<AcquiredWorker> {
    const started = Date.now();
    const deadline = started + (opts.waitMs ?? 0);
    let retry = false;
    for (;;) {
      if (this.closed)
        throw new PoolClosedError(`function ${this.functionKey} is being removed from this node`);
      this.throwIfCancelled(opts);
      const paused = this.pick("paused");
      if (paused) {
        this.transition(paused, "busy");
        const leaseId = this.grantLease(paused, opts);
        // performance.now(): a thaw by the cgroup freezer takes well under a millisecond.
        const t0 = performance.now();
        try {
          await this.op(paused, () => this.runtime.resumeWorker(paused.id));
        } catch (err) {
          void this.remove(paused, `resume failed: ${(err as Error).message}`, true);
          continue;
        }
        // A crash or lease loss while thawing takes it away from us; try again.
        if (paused.state !== "busy" || paused.lease?.id !== leaseId) continue;
        if (opts.signal?.aborted) {
          void this.giveBack(paused);
          this.throwIfCancelled(opts);
        }
        this.onEvent({ type: "thawed", function: this.functionKey, durationMs: performance.now() - t0 });
        return this.handOut(paused, "thawed", started);
      }
      const idle = this.pick("idle");
      if (idle) {
        this.transition(idle, "busy");
        this.grantLease(idle, opts);
        return this.handOut(idle, "warm", started);
      }
      if (this.activeCount() < this.config.maxWorkers) {
        const got = await this.coldStart(opts, started);
        if (got) return got;
        continue;
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new ConcurrencyLimitError(
          `function ${this.functionKey} is at its concurrency limit (${this.config.maxWorkers} workers on this node)`,
        );
      }
      await this.waiters.wait(remaining, retry, opts.signal);
      retry = true;
    }
  }

  /**
   * Returns a worker after its invocation. `success`/`function-error` keep it
   * warm (idle, then paused); `timeout`/`worker-failed` remove it. A release of
   * a worker the pool already reclaimed is a no-op. Throws
   * {@link WorkerNotFoundError} for unknown workers and {@link LeaseMismatchError}
   * when the lease is not the worker's current one.
   */
  async release(workerId: string, leaseId: string, outcome: InvocationOutcome): Promise<void> {
    const w = this.workersById.get(workerId);
    if (!w || w.state === "stopping" || w.state === "destroyed") {
      if (this.retired.has(workerId) || w) return;
      throw new WorkerNotFoundError(`worker ${workerId} is not a worker of ${this.functionKey}`);
    }
    if (w.state !== "busy") throw new LeaseMismatchError(`worker ${workerId} is ${w.state}, not acquired`);
    if (!w.adopted && w.lease?.id !== leaseId) {
      throw new LeaseMismatchError(`lease ${leaseId} is not the current lease of worker ${workerId}`);
    }
    w.adopted = false;
    w.lastUsedAt = Date.now();
    if (outcome === "timeout" || outcome === "worker-failed") {
      this.dropLease(w);
      await this.remove(w, `released as ${outcome}`, true);
      return;
    }
    await this.giveBack(w);
  }

  /**
   * Renews the leases of `holderId`: all of them, or with `listed` (the ids the
   * holder still holds) only those, and expires its others (their workers are
   * removed), sparing leases granted within the grace. Returns how many leases
   * the holder still has and how many this expired.
   */
  heartbeat(holderId: string, listed?: ReadonlySet<string>): { held: number; expired: number } {
    const { held, expired } = this.leases.heartbeat(holderId, listed);
    return { held, expired: expired.length };
  }

  /**
   * Applies a new configuration. On a revision change, workers of the old
   * revision are never handed out again: idle/paused ones are removed now, busy
   * and starting ones when they finish.
   */
  update(config: PoolFunctionConfig): void {
    const before = this.activeCount();
    this.config = config;
    for (const w of [...this.workersById.values()]) {
      if (w.revision === config.revision || w.state === "stopping" || w.state === "destroyed") continue;
      if (w.state === "idle" || w.state === "paused") void this.remove(w, "revision changed", false);
      else w.drain = true;
    }
    // A lowered limit (e.g. this node's share of reservedConcurrency shrank): surplus
    // idle and paused workers go now, busy ones when they are released.
    const live = [...this.workersById.values()].filter(
      (w) => w.state !== "stopping" && w.state !== "destroyed" && !w.drain,
    );
    let surplus = live.length - config.maxWorkers;
    for (const w of live.filter((x) => x.state === "idle" || x.state === "paused")) {
      if (surplus-- <= 0) break;
      void this.remove(w, "over the concurrency limit", false);
    }
    for (const w of live.filter((x) => x.state === "busy" || x.state === "starting")) {
      if (surplus-- <= 0) break;
      w.drain = true;
    }
    this.ensureProvisioned();
    // A raised limit may let waiters cold-start now.
    for (let i = before; i < config.maxWorkers && this.waiters.length > 0; i++) this.waiters.wakeOne();
  }

  /** Called for a runtime exit event of one of this pool's workers; returns false when the worker is not ours. */
  workerExited(workerId: string, reason: string): boolean {
    const w = this.workersById.get(workerId);
    if (!w) return false;
    void this.remove(w, reason, true);
    return true;
  }

  /**
   * Re-adopts a worker found in the runtime after an agent restart. A paused
   * worker becomes paused (thawable); a running one may still be serving an
   * invocation for a caller we no longer know, so it is held busy under an
   * anonymous lease of `defaultLeaseMs`: any release returns it, expiry removes it.
   */
  adopt(listed: ListedWorker): void {
    const now = Date.now();
    const w: PoolWorker = {
      id: listed.id,
      state: listed.status === "paused" ? "paused" : "busy",
      handle: listed,
      generation: Number(listed.labels[WORKER_LABELS.generation] ?? 0),
      revision: listed.labels[WORKER_LABELS.revision] ?? "",
      createdAt: now,
      lastUsedAt: now,
      invocations: 0,
      drain: false,
      adopted: listed.status !== "paused",
      chain: Promise.resolve(),
    };
    this.workersById.set(w.id, w);
    if (w.state === "paused") this.armReap(w);
    else w.lease = this.leases.grant(w.id, "", this.config.defaultLeaseMs, `adopted-${randomUUID()}`);
    this.log.info({ workerId: w.id, state: w.state }, "worker re-adopted");
  }

  /**
   * Removes every worker: idle, paused and starting ones now, busy ones when
   * released (or when their lease expires). No worker is handed out any more.
   * Resolves, with the number of workers that will be destroyed, once the
   * non-busy ones are gone.
   */
  async destroy(): Promise<number> {
    this.closed = true;
    this.clearProvisionTimer();
    this.waiters.failAll(new PoolClosedError(`function ${this.functionKey} is being removed from this node`));
    const all = [...this.workersById.values()].filter(
      (w) => w.state !== "stopping" && w.state !== "destroyed",
    );
    const removals: Promise<void>[] = [];
    for (const w of all) {
      if (w.state === "busy" || w.state === "starting") w.drain = true;
      else removals.push(this.remove(w, "function destroyed", false));
    }
    await Promise.all(removals);
    return all.length;
  }

  /** Resolves once every worker of the pool is destroyed (after {@link destroy}). */
  async drained(): Promise<void> {
    while (this.workersById.size > 0) {
      await Promise.all([...this.workersById.values()].map((w) => w.gone ?? w.chain));
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /**
   * Stops managing workers without destroying them (agent shutdown): timers are
   * cleared, waiters fail, idle workers are paused so that the next agent can
   * re-adopt them as paused.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.clearProvisionTimer();
    this.waiters.failAll(new PoolClosedError("agent is shutting down"));
    const pauses: Promise<void>[] = [];
    this.leases.clearTimers();
    for (const w of this.workersById.values()) {
      this.clearIdleTimers(w);
      if (w.state === "idle") {
        this.transition(w, "paused");
        pauses.push(this.op(w, () => this.runtime.pauseWorker(w.id)).catch(() => undefined));
      }
    }
    await Promise.all(pauses);
    await Promise.all([...this.workersById.values()].map((w) => w.chain));
  }

  /**
   * A worker that became free after {@link close} (its start finished or it was given back):
   * paused like the idle ones, so that the next agent re-adopts it instead of this one removing
   * it on the way out (one removal at a time made a loaded agent's stop take longer than its grace).
   */
  private async keepForNextAgent(w: PoolWorker): Promise<void> {
    if (w.state !== "idle") this.transition(w, "idle");
    this.transition(w, "paused");
    await this.op(w, () => this.runtime.pauseWorker(w.id)).catch(() => undefined);
  }

  /** Worker counts by state (stopping and destroyed ones excluded). */
  counts(): PoolCounts {
    const c: PoolCounts = { starting: 0, idle: 0, busy: 0, paused: 0 };
    for (const w of this.workersById.values()) {
      if (w.state in c) c[w.state as keyof PoolCounts]++;
    }
    return c;
  }

  /** The pool's workers (stopping ones included), for listing. */
  workers(): PoolWorkerInfo[] {
    return [...this.workersById.values()]
      .filter((w) => w.state !== "destroyed")
      .map((w) => ({
        workerId: w.id,
        state: w.state,
        generation: w.generation,
        revision: w.revision,
        address: w.handle ? address(w.handle) : "",
        createdAt: w.createdAt,
        lastUsedAt: w.lastUsedAt,
        invocations: w.invocations,
        holderId: w.lease?.holderId,
      }));
  }

  /** True when the worker is, or recently was, one of this pool's (so a late release finds its pool). */
  owns(workerId: string): boolean {
    return this.workersById.has(workerId) || this.retired.has(workerId);
  }

  /** Ids of all workers the pool tracks (for orphan detection). */
  workerIds(): string[] {
    return [...this.workersById.keys()];
  }

  // ---- internals ----

  private transition(w: PoolWorker, to: PoolWorkerState): void {
    if (!WORKER_TRANSITIONS[w.state].includes(to)) {
      throw new Error(`worker ${w.id}: illegal state change ${w.state} → ${to}`);
    }
    this.log.trace({ workerId: w.id, from: w.state, to }, "worker state");
    w.state = to;
  }

  /** Runs a runtime operation after the worker's previous ones. */
  private op<T>(w: PoolWorker, fn: () => Promise<T>): Promise<T> {
    const p = w.chain.then(fn);
    w.chain = p.then(
      () => undefined,
      () => undefined,
    );
    return p;
  }

  /** A usable worker in `state` of the current revision (most recently used first keeps the warmest). */
  private pick(state: "idle" | "paused"): PoolWorker | undefined {
    let best: PoolWorker | undefined;
    for (const w of this.workersById.values()) {
      if (w.state !== state || w.drain || w.revision !== this.config.revision) continue;
      if (!best || w.lastUsedAt > best.lastUsedAt) best = w;
    }
    return best;
  }

  /** Workers that hold (or are about to hold) resources: everything not being removed. */
  private activeCount(): number {
    let n = 0;
    for (const w of this.workersById.values()) if (w.state !== "stopping" && w.state !== "destroyed") n++;
    return n;
  }

  private newWorker(id: string): PoolWorker {
    const now = Date.now();
    const w: PoolWorker = {
      id,
      state: "starting",
      generation: this.config.generation,
      revision: this.config.revision,
      createdAt: now,
      lastUsedAt: now,
      invocations: 0,
      drain: false,
      adopted: false,
      chain: Promise.resolve(),
    };
    this.workersById.set(id, w);
    return w;
  }

  /** Starts a worker for this acquirer; null when it vanished before it could be handed out (caller retries). */
  private async coldStart(opts: AcquireOptions, started: number): Promise<AcquiredWorker | null> {
    const sandboxId = this.config.takeSandbox?.();
    const fromSandbox = sandboxId !== undefined;
    const w = this.newWorker(sandboxId ?? this.newWorkerId());
    const t0 = Date.now();
    let handle: WorkerHandle;
    try {
      const spec = this.config.workerSpec(w.id);
      handle = await this.op(w, () => this.startReady(w, spec, fromSandbox));
    } catch (err) {
      this.onEvent({
        type: "cold-start",
        function: this.functionKey,
        durationMs: Date.now() - t0,
        ok: false,
        fromSandbox,
      });
      await this.remove(w, `start failed: ${(err as Error).message}`, true);
      throw err;
    }
    w.handle = handle;
    this.onEvent({
      type: "cold-start",
      function: this.functionKey,
      durationMs: Date.now() - t0,
      ok: true,
      fromSandbox,
    });
    if (w.state !== "starting") {
      // It exited (crash event) while starting: a broken function, do not loop on it.
      throw new Error(`worker ${w.id} of ${this.functionKey} exited while starting`);
    }
    if (w.drain || w.revision !== this.config.revision) {
      void this.remove(w, "drained", false);
      return null;
    }
    if (this.closed) {
      void this.keepForNextAgent(w);
      return null;
    }
    if (opts.signal?.aborted) {
      // Nobody waits for it any more: it serves the next caller warm.
      this.transition(w, "idle");
      this.becameIdle(w);
      this.throwIfCancelled(opts);
    }
    this.transition(w, "busy");
    this.grantLease(w, opts);
    return this.handOut(w, "cold", started);
  }

  /**
   * Starts the worker's container (or specialises the generic sandbox `spec.id`), then waits
   * until its invoke port listens; with a start limiter, only once a slot is free (the
   * readiness deadline counts from then).
   */
  private startReady(w: PoolWorker, spec: WorkerSpec, fromSandbox = false): Promise<WorkerHandle> {
    const start = async () => {
      const handle = fromSandbox
        ? await this.runtime.specialiseWorker!(spec)
        : await this.runtime.startWorker(spec);
      w.handle = handle;
      await this.waitReady(handle, () => w.state === "starting");
      return handle;
    };
    // A specialisation is no start: it does not wait for (nor take) a start slot.
    return this.startLimiter && !fromSandbox ? this.startLimiter.run(start) : start();
  }

  private handOut(w: PoolWorker, kind: StartKind, started: number): AcquiredWorker {
    w.invocations++;
    w.lastUsedAt = Date.now();
    this.onEvent({ type: "acquired", function: this.functionKey, kind, durationMs: Date.now() - started });
    return {
      workerId: w.id,
      address: address(w.handle!),
      leaseId: w.lease!.id,
      startKind: kind,
      generation: w.generation,
      revision: w.revision,
    };
  }

  private grantLease(w: PoolWorker, opts: AcquireOptions): string {
    this.clearIdleTimers(w);
    w.lease = this.leases.grant(w.id, opts.holderId, opts.leaseMs || this.config.defaultLeaseMs);
    return w.lease.id;
  }

  private dropLease(w: PoolWorker): void {
    this.leases.drop(w.lease);
    w.lease = undefined;
  }

  /**
   * Ends the lease of a busy worker whose invocation ended cleanly (or never
   * began): idle again, or removed when it is being drained.
   */
  private async giveBack(w: PoolWorker): Promise<void> {
    this.dropLease(w);
    if (w.drain || w.revision !== this.config.revision) {
      await this.remove(w, "drained", false);
      return;
    }
    if (this.closed) return this.keepForNextAgent(w);
    this.transition(w, "idle");
    this.becameIdle(w);
  }

  private throwIfCancelled(opts: AcquireOptions): void {
    if (opts.signal?.aborted) {
      // A wake-up meant for this caller must not be lost: pass it on while a worker or slot is free.
      const free = this.pick("idle") || this.pick("paused") || this.activeCount() < this.config.maxWorkers;
      if (free && this.waiters.length > 0) this.waiters.wakeOne();
      throw new AcquireCancelledError(`the caller cancelled the acquire of a ${this.functionKey} worker`);
    }
  }

  /** An idle worker: given to a waiter, or scheduled for pause and reaping. */
  private becameIdle(w: PoolWorker): void {
    if (this.waiters.length > 0) {
      this.waiters.wakeOne();
      // The woken waiter takes it on its next turn; if it does not, timers still apply.
    }
    this.clearIdleTimers(w);
    w.pauseTimer = setTimeout(() => {
      w.pauseTimer = undefined;
      if (w.state !== "idle") return;
      this.transition(w, "paused");
      this.op(w, () => this.runtime.pauseWorker(w.id)).then(
        () => this.onEvent({ type: "paused", function: this.functionKey }),
        (err: unknown) => {
          // An acquirer may already have taken it and will see the resume fail; either way it goes.
          void this.remove(w, `pause failed: ${(err as Error).message}`, true);
        },
      );
    }, this.config.pauseAfterMs);
    w.pauseTimer.unref();
    this.armReap(w);
  }

  private armReap(w: PoolWorker): void {
    if (w.reapTimer) clearTimeout(w.reapTimer);
    w.reapTimer = setTimeout(() => {
      w.reapTimer = undefined;
      if (w.state !== "idle" && w.state !== "paused") return;
      if (this.currentCount() <= this.config.provisioned && w.revision === this.config.revision) {
        this.armReap(w); // a provisioned worker is kept
        return;
      }
      void this.remove(w, "idle longer than keepWarm", false);
    }, this.config.keepWarmMs);
    w.reapTimer.unref();
  }

  private clearIdleTimers(w: PoolWorker): void {
    if (w.pauseTimer) clearTimeout(w.pauseTimer);
    if (w.reapTimer) clearTimeout(w.reapTimer);
    w.pauseTimer = w.reapTimer = undefined;
  }

  /** Workers of the current revision that are or will become usable. */
  private currentCount(): number {
    let n = 0;
    for (const w of this.workersById.values()) {
      if (
        w.revision === this.config.revision &&
        !w.drain &&
        w.state !== "stopping" &&
        w.state !== "destroyed"
      )
        n++;
    }
    return n;
  }

  /** Takes a worker out of service for good: stopping now, destroyed once the runtime removed it. */
  private remove(w: PoolWorker, reason: string, failed: boolean): Promise<void> {
    if (w.state === "stopping" || w.state === "destroyed") return w.gone ?? Promise.resolve();
    this.clearIdleTimers(w);
    this.dropLease(w);
    this.transition(w, "stopping");
    this.retire(w.id);
    (failed ? this.log.warn : this.log.info).call(this.log, { workerId: w.id, reason }, "removing worker");
    this.onEvent({ type: "removed", function: this.functionKey, reason, failed });
    w.gone = this.op(w, () => this.runtime.removeWorker(w.id))
      .catch((err: unknown) =>
        this.log.error({ workerId: w.id, err: (err as Error).message }, "worker removal failed"),
      )
      .finally(() => {
        this.transition(w, "destroyed");
        this.workersById.delete(w.id);
      });
    // Its slot is free at once: a waiter may cold-start, provisioned workers are replaced.
    if (this.waiters.length > 0) this.waiters.wakeOne();
    this.ensureProvisioned();
    return w.gone;
  }

  private retire(id: string): void {
    this.retired.add(id);
    if (this.retired.size > RETIRED_MEMORY) this.retired.delete(this.retired.values().next().value!);
  }

  private ensureProvisioned(): void {
    if (this.closed || this.provisionTimer) return;
    const need = Math.min(
      this.config.provisioned - this.currentCount(),
      this.config.maxWorkers - this.activeCount(),
    );
    for (let i = 0; i < need; i++) this.startProvisioned();
  }

  private startProvisioned(): void {
    const w = this.newWorker(this.newWorkerId());
    const t0 = Date.now();
    let spec: WorkerSpec;
    try {
      spec = this.config.workerSpec(w.id);
    } catch (err) {
      void this.remove(w, `cannot build worker spec: ${(err as Error).message}`, true);
      return;
    }
    this.op(w, async () => {
      const handle = await this.startReady(w, spec);
      await this.config.checkInit?.(handle);
      return handle;
    }).then(
      (handle) => {
        w.handle = handle;
        this.provisionBackoffMs = 0;
        this.initError = undefined;
        this.onEvent({
          type: "cold-start",
          function: this.functionKey,
          durationMs: Date.now() - t0,
          ok: true,
        });
        if (w.state !== "starting") return;
        if (w.drain || w.revision !== this.config.revision) {
          void this.remove(w, "drained", false);
          return;
        }
        if (this.closed) return void this.keepForNextAgent(w);
        this.transition(w, "idle");
        this.becameIdle(w);
      },
      (err: unknown) => {
        this.onEvent({
          type: "cold-start",
          function: this.functionKey,
          durationMs: Date.now() - t0,
          ok: false,
        });
        if (err instanceof WorkerInitError) this.initError = err.initError;
        // Back off so that a broken image does not become a tight restart loop.
        this.provisionBackoffMs = Math.min(30_000, this.provisionBackoffMs * 2 || 1000);
        this.log.warn(
          { workerId: w.id, err: (err as Error).message, retryMs: this.provisionBackoffMs },
          "provisioned start failed",
        );
        this.clearProvisionTimer();
        this.provisionTimer = setTimeout(() => {
          this.provisionTimer = undefined;
          this.ensureProvisioned();
        }, this.provisionBackoffMs);
        this.provisionTimer.unref();
        void this.remove(w, `start failed: ${(err as Error).message}`, true);
      },
    );
  }

  private clearProvisionTimer(): void {
    if (this.provisionTimer) clearTimeout(this.provisionTimer);
    this.provisionTimer = undefined;
  }
}

function address(h: WorkerHandle): string {
  return `${h.ip}:${h.port || 8080}`;
}
