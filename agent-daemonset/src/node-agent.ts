import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { availableParallelism, totalmem } from "node:os";
import { join, normalize, isAbsolute } from "node:path";
import { create, fromJsonString, toJsonString } from "@bufbuild/protobuf";
import { createLogger, isHandlerInsideCode, isReservedEnvironmentVariable, type Logger } from "@esb/common";
import {
  FunctionCodeSchema,
  FunctionSpecSchema,
  type FunctionRef,
  type FunctionSpec,
} from "@esb/common/gen/esb/agent/v1/agent_pb";
import type { WorkerNetwork } from "./network/worker-network.js";
import { FunctionNotFoundError, InvalidFunctionSpecError, WorkerNotFoundError } from "./pool/pool-errors.js";
import { StartLimiter } from "./pool/start-limiter.js";
import {
  WorkerPool,
  type AcquiredWorker,
  type AcquireOptions,
  type InvocationOutcome,
  type PoolCounts,
  type PoolEvent,
  type PoolFunctionConfig,
  type PoolWorkerInfo,
} from "./pool/worker-pool.js";
import { WORKER_LABELS, type PreparedImage, type Runtime, type WorkerSpec } from "./runtime/runtime.js";
import type { FunctionImageResolver } from "./runtime-image-resolver.js";
import { writeWorkerResolvConf } from "./network/worker-resolv-conf.js";
import { checkWorkerInit } from "./pool/worker-init-check.js";
import { StagedCodeStore } from "./code-staging.js";
import { PLATFORM_MEMORY_MB } from "./sandbox/function-memory.js";
import type { WorkerAwsEnv } from "./worker-aws-env.js";
import { SandboxPool, type SandboxEvent, type SandboxTemplate } from "./pool/sandbox-pool.js";
import { sandboxTemplateOf } from "./pool/sandbox-template.js";

// The resolvers live in runtime-image-resolver.ts; re-exported here, where they were first (bench imports them from here).
export {
  LocalBuildImageResolver,
  PrebuiltImageResolver,
  TemplateImageResolver,
  type FunctionImageResolver,
} from "./runtime-image-resolver.js";

/** Options of {@link NodeAgent}. */
export interface NodeAgentOptions {
  /** This node's name; goes into every worker's owner label. */
  nodeName: string;
  runtime: Runtime;
  /** The workers' network, when the agent manages it (used to clean orphaned allocations). */
  network?: WorkerNetwork;
  /** Persisted function specs and staged code live here. */
  stateDir: string;
  /** AWS_REGION / AWS_DEFAULT_REGION seen by workers. Default `us-east-1`. */
  region?: string;
  /** Data-service endpoints (defaults under the function's variables) and credentials (reserved) of workers. */
  workerAws?: WorkerAwsEnv;
  /** Memory the node offers to workers. Default: the machine's total memory. */
  memoryCapacityMb?: number;
  /** Most workers starting at once on this node (default: the CPU count, at least 2). */
  maxConcurrentStarts?: number;
  /** Base images of managed runtimes; required to prepare `runtime` + `handler` functions. */
  imageResolver?: FunctionImageResolver;
  /** Lease length added to the function timeout when an acquirer asks for none. */
  leaseGraceMs?: number;
  /**
   * How long a new lease survives heartbeats that do not list it (default 10 s): its
   * AcquireWorker answer may still be on its way to the holder.
   */
  unlistedLeaseGraceMs?: number;
  logger?: Logger;
  /** Receives every pool event (metrics). */
  onPoolEvent?: (event: PoolEvent) => void;
  /**
   * Accept `code.hostPath` (a folder of this machine mounted at /var/task) from
   * callers. Only standalone ESB sets it: in a cluster a caller must not choose
   * host folders. Default false.
   */
  allowCodeHostPath?: boolean;
  /**
   * Generic sandboxes kept ready per sandbox template (runtime image + memory + /tmp) for
   * cold starts of managed-runtime functions, when the runtime can specialise them
   * (containerd). 0 (the default here; the agent's main passes AGENT_SANDBOX_POOL_SIZE, default 2)
   * turns them off. See docs/cold-start.md.
   */
  sandboxPoolSize?: number;
  /** Receives every sandbox pool event (metrics). */
  onSandboxEvent?: (event: SandboxEvent) => void;
}

/** Status of one function's pool on this node. */
export interface FunctionPoolSummary {
  ref: { namespace: string; name: string };
  generation: number;
  revision: string;
  imageDigest: string;
  counts: PoolCounts;
}

/** A worker of some function, as listed by {@link NodeAgent.listWorkers}. */
export interface NodeWorkerInfo extends PoolWorkerInfo {
  ref: { namespace: string; name: string };
}

/** Capacity and usage of the node. */
export interface NodeStats {
  nodeName: string;
  runtime: string;
  memoryCapacityMb: number;
  memoryReservedMb: number;
  workers: number;
  busyWorkers: number;
  pausedWorkers: number;
  functions: number;
}

interface FunctionRecord {
  key: string;
  spec: FunctionSpec;
  image: PreparedImage;
  /** Host folder mounted read-only at /var/task (managed runtimes). */
  codeDir?: string;
  pool: WorkerPool;
}

const DEFAULTS = { memoryMb: 128, timeoutSeconds: 3, tmpMb: 512, pauseAfterMs: 50, keepWarmSeconds: 600 };

/** "namespace/name" of a function reference. */
export function functionKey(ref: { namespace: string; name: string } | undefined): string {
  return `${ref?.namespace ?? ""}/${ref?.name ?? ""}`;
}

/**
 * The node's workers: one {@link WorkerPool} per function (keyed by
 * namespace/name), images and code made ready by {@link prepareFunction},
 * crash events routed to the pools, and restart safety — specs are persisted
 * under `stateDir`, so a restarted agent re-adopts the workers whose function
 * revision it still knows and removes every other worker it owns.
 */
export class NodeAgent {
  readonly nodeName: string;
  readonly runtime: Runtime;
  /** What the pools use: the runtime, with pause retries. */
  private readonly poolRuntime: Runtime;
  /** One for the node: worker starts compete for the same CPUs whatever their function. */
  private readonly startLimiter: StartLimiter;
  private readonly network?: WorkerNetwork;
  private readonly stateDir: string;
  private readonly region: string;
  private readonly workerAws?: WorkerAwsEnv;
  readonly memoryCapacityMb: number;
  private readonly imageResolver?: FunctionImageResolver;
  private readonly leaseGraceMs: number;
  private readonly unlistedLeaseGraceMs: number | undefined;
  private readonly log: Logger;
  private readonly onPoolEvent: (event: PoolEvent) => void;
  private readonly allowCodeHostPath: boolean;
  /** The node-derived resolv.conf bind-mounted into workers (see network/worker-resolv-conf.ts). */
  private resolvConf: string | undefined;
  private readonly functions = new Map<string, FunctionRecord>();
  /** Pools of destroyed functions whose busy workers still drain (the resync must not take them for orphans). */
  private readonly drainingPools = new Set<WorkerPool>();
  /** Serializes prepare/destroy per function. */
  private readonly locks = new Map<string, Promise<unknown>>();
  private unsubscribeExit?: () => void;
  private started = false;
  /** Removes staged code (stateDir/code/<hash>) once no function uses it. */
  private readonly stagedCode: StagedCodeStore;
  private persistSeq = 0;
  /** Generic sandboxes for cold starts (undefined: the runtime cannot specialise, or turned off). */
  readonly sandboxes: SandboxPool | undefined;

  constructor(opts: NodeAgentOptions) {
    this.nodeName = opts.nodeName;
    this.runtime = opts.runtime;
    this.poolRuntime = withPauseRetries(opts.runtime);
    this.startLimiter = new StartLimiter(opts.maxConcurrentStarts ?? Math.max(2, availableParallelism()));
    this.network = opts.network;
    this.stateDir = opts.stateDir;
    this.region = opts.region ?? "us-east-1";
    this.workerAws = opts.workerAws;
    this.memoryCapacityMb = opts.memoryCapacityMb ?? Math.floor(totalmem() / 1024 / 1024);
    this.imageResolver = opts.imageResolver;
    this.leaseGraceMs = opts.leaseGraceMs ?? 30_000;
    this.unlistedLeaseGraceMs = opts.unlistedLeaseGraceMs;
    this.log = opts.logger ?? createLogger("node-agent");
    this.onPoolEvent = opts.onPoolEvent ?? (() => undefined);
    this.allowCodeHostPath = opts.allowCodeHostPath ?? false;
    const sandboxPoolSize = opts.sandboxPoolSize ?? 0;
    if (opts.runtime.specialiseWorker && sandboxPoolSize > 0) {
      this.sandboxes = new SandboxPool({
        runtime: opts.runtime,
        size: sandboxPoolSize,
        startLimiter: this.startLimiter,
        logger: this.log,
        onEvent: opts.onSandboxEvent,
      });
    }
    this.stagedCode = new StagedCodeStore(
      join(this.stateDir, "code"),
      () => [...this.functions.values()].map((r) => r.codeDir),
      this.log,
    );
  }

  /** True once {@link start} finished. */
  get ready(): boolean {
    return this.started;
  }

  /**
   * Connects the runtime, reloads persisted functions, re-adopts their workers
   * (paused ones as paused; running ones held until released or their lease
   * expires), removes orphaned workers and network allocations, and starts the
   * provisioned workers.
   */
  async start(): Promise<void> {
    await this.runtime.start();
    this.unsubscribeExit = this.runtime.onWorkerExit((exit) => {
      const reason = exit.oomKilled ? "out of memory" : `exited with code ${exit.exitCode}`;
      for (const rec of this.functions.values()) if (rec.pool.workerExited(exit.id, reason)) return;
      this.sandboxes?.workerExited(exit.id, reason);
    });
    await mkdir(this.specDir, { recursive: true });
    this.resolvConf = await writeWorkerResolvConf(this.stateDir);
    for (const file of await readdir(this.specDir)) {
      if (!file.endsWith(".json")) continue;
      try {
        const spec = fromJsonString(FunctionSpecSchema, await readFile(join(this.specDir, file), "utf8"));
        // Serialized like PrepareFunction: a controller may already be preparing the same function.
        await this.serialized(functionKey(spec.ref), () => this.load(spec, false));
      } catch (err) {
        this.log.warn(
          { file, err: (err as Error).message },
          "cannot reload persisted function; its workers are removed",
        );
      }
    }
    await this.resync();
    // Code of functions removed while the agent was down (or of a crash mid-staging).
    await this.stagedCode.sweep();
    for (const rec of this.functions.values()) {
      rec.pool.start();
      this.ensureSandboxes(rec);
    }
    this.started = true;
    this.log.info({ functions: this.functions.size, node: this.nodeName }, "node agent started");
  }

  /** Adopts or removes the runtime's workers owned by this node, and frees orphaned network allocations. */
  private async resync(): Promise<void> {
    const listed = await this.runtime.listWorkers();
    for (const w of listed) {
      if (w.labels[WORKER_LABELS.owner] !== this.nodeName) continue;
      const rec = this.functions.get(w.labels[WORKER_LABELS.function] ?? "");
      const known = rec?.pool.workerIds().includes(w.id);
      if (known) continue;
      if (
        rec &&
        w.labels[WORKER_LABELS.revision] === rec.spec.revision &&
        (w.status === "paused" || w.status === "running")
      ) {
        rec.pool.adopt(w);
      } else {
        this.log.info({ workerId: w.id, status: w.status }, "removing orphaned worker");
        await this.runtime
          .removeWorker(w.id)
          .catch((err: unknown) =>
            this.log.warn({ workerId: w.id, err: (err as Error).message }, "orphan removal failed"),
          );
      }
    }
    if (this.network) {
      const containers = new Set(listed.map((w) => w.id));
      for (const id of await this.network.list()) {
        if (containers.has(id)) continue;
        this.log.info({ workerId: id }, "removing orphaned network allocation");
        await this.network
          .detach(id)
          .catch((err: unknown) =>
            this.log.warn({ workerId: id, err: (err as Error).message }, "network cleanup failed"),
          );
      }
    }
  }

  /**
   * Makes a function runnable on this node: image pulled and unpacked, code
   * staged, spec persisted, pool created (or updated; a new revision drains the
   * old workers) and provisioned workers started. Idempotent per revision.
   * Throws {@link InvalidFunctionSpecError}, or the runtime's
   * ImageUnavailableError / RuntimeUnavailableError.
   */
  async prepareFunction(
    spec: FunctionSpec,
  ): Promise<{ imageDigest: string; readyWorkers: number; warmWorkers: number; initError: string }> {
    validateSpec(spec, this.allowCodeHostPath);
    const key = functionKey(spec.ref);
    const rec = await this.serialized(key, () => this.load(spec, true));
    const c = rec.pool.counts();
    return {
      imageDigest: rec.image.digest,
      readyWorkers: c.idle + c.busy + c.paused,
      warmWorkers: c.idle + c.paused,
      initError: rec.pool.initError ?? "",
    };
  }

  private async load(spec: FunctionSpec, startPool: boolean): Promise<FunctionRecord> {
    const key = functionKey(spec.ref);
    const existing = this.functions.get(key);
    if (existing && existing.spec.revision === spec.revision && !existing.pool.isClosed) {
      existing.spec = withStagedCode(spec, existing.codeDir);
      existing.pool.update(this.poolConfig(existing));
      await this.persist(existing);
      return existing;
    }
    const image = await this.prepareImage(spec);
    const hold = await this.stageCode(spec);
    try {
      return await this.record(key, spec, image, hold.dir, startPool);
    } finally {
      await hold.release();
    }
  }

  /** Records a function's new revision (or first one) with its prepared image and staged code. */
  private async record(
    key: string,
    spec: FunctionSpec,
    image: PreparedImage,
    codeDir: string | undefined,
    startPool: boolean,
  ): Promise<FunctionRecord> {
    const existing = this.functions.get(key);
    const staged = withStagedCode(spec, codeDir);
    if (existing && !existing.pool.isClosed) {
      // The old revision's workers may still run its code until they drain.
      if (existing.codeDir !== codeDir)
        this.stagedCode.retire(existing.codeDir, this.poolConfig(existing).defaultLeaseMs);
      existing.spec = staged;
      existing.image = image;
      existing.codeDir = codeDir;
      existing.pool.update(this.poolConfig(existing));
      await this.persist(existing);
      return existing;
    }
    const rec: FunctionRecord = { key, spec: staged, image, codeDir, pool: undefined! };
    rec.pool = new WorkerPool({
      functionKey: key,
      runtime: this.poolRuntime,
      config: this.poolConfig(rec),
      logger: this.log,
      onEvent: this.onPoolEvent,
      startLimiter: this.startLimiter,
      unlistedLeaseGraceMs: this.unlistedLeaseGraceMs,
    });
    this.functions.set(key, rec);
    await this.persist(rec);
    if (startPool) {
      rec.pool.start();
      this.ensureSandboxes(rec);
    }
    return rec;
  }

  private async prepareImage(spec: FunctionSpec): Promise<PreparedImage> {
    if (spec.image) return this.runtime.prepareImage(spec.image);
    if (!this.imageResolver) {
      throw new InvalidFunctionSpecError(
        `function ${functionKey(spec.ref)} uses runtime ${spec.runtime}, but this agent has no runtime image configured`,
      );
    }
    return this.imageResolver.prepareRuntimeImage(spec.runtime, this.runtime);
  }

  /**
   * Stages inline code (see {@link StagedCodeStore.stage}); a host path is used as it is. The
   * returned hold keeps the folder until the caller has recorded it.
   */
  private async stageCode(
    spec: FunctionSpec,
  ): Promise<{ dir: string | undefined; release(): Promise<void> }> {
    const code = spec.code;
    if (!code || Object.keys(code.files).length === 0)
      return { dir: code?.hostPath || undefined, release: async () => undefined };
    return this.stagedCode.stage(code.files);
  }

  private get specDir(): string {
    return join(this.stateDir, "functions");
  }

  private specFile(key: string): string {
    return join(this.specDir, `${key.replace("/", "_")}.json`);
  }

  private async persist(rec: FunctionRecord): Promise<void> {
    await mkdir(this.specDir, { recursive: true });
    const file = this.specFile(rec.key);
    // Unique per write: two writes of one record must never share (and rename away) a temp file.
    const tmp = `${file}.tmp-${process.pid}-${++this.persistSeq}`;
    await writeFile(tmp, toJsonString(FunctionSpecSchema, rec.spec));
    await rename(tmp, file);
  }

  private poolConfig(rec: FunctionRecord): PoolFunctionConfig {
    const spec = rec.spec;
    const memoryMb = spec.memorySizeMb || DEFAULTS.memoryMb;
    const timeoutSeconds = spec.timeoutSeconds || DEFAULTS.timeoutSeconds;
    const byMemory = Math.max(1, Math.floor(this.memoryCapacityMb / memoryMb));
    const maxWorkers =
      spec.reservedConcurrency !== undefined ? Math.min(spec.reservedConcurrency, byMemory) : byMemory;
    return {
      generation: Number(spec.generation),
      revision: spec.revision,
      maxWorkers,
      provisioned: Math.min(spec.provisionedConcurrency, maxWorkers),
      pauseAfterMs: spec.scaling?.pauseAfterMs || DEFAULTS.pauseAfterMs,
      keepWarmMs: (spec.scaling?.keepWarmSeconds || DEFAULTS.keepWarmSeconds) * 1000,
      defaultLeaseMs: timeoutSeconds * 1000 + this.leaseGraceMs,
      workerSpec: (id) => this.workerSpec(rec, id),
      // ESB's emulator tells how init went; an image brings its own runtime interface.
      checkInit: spec.image ? undefined : (handle) => checkWorkerInit(handle),
      takeSandbox: () => {
        const template = this.sandboxes && this.sandboxTemplate(rec);
        return template ? this.sandboxes!.take(template) : undefined;
      },
    };
  }

  /** The generic sandboxes `rec`'s cold starts can use, or undefined (images, commands of their own). */
  private sandboxTemplate(rec: FunctionRecord): SandboxTemplate | undefined {
    // Node runtimes boot their runtime client ahead too; other runtimes start theirs on specialisation.
    const preBoot = rec.spec.runtime.startsWith("nodejs") ? "/var/runtime/bootstrap" : undefined;
    return sandboxTemplateOf(this.workerSpec(rec, "sandbox-template"), preBoot);
  }

  /** Has the sandbox pool keep sandboxes for `rec`'s template. */
  private ensureSandboxes(rec: FunctionRecord): void {
    const template = this.sandboxes && this.sandboxTemplate(rec);
    if (template) this.sandboxes!.ensure(template);
  }

  /** The container spec of a new worker of `rec`. */
  private workerSpec(rec: FunctionRecord, id: string): WorkerSpec {
    const spec = rec.spec;
    const managed = !spec.image;
    const ic = spec.imageConfig;
    const entry = ic?.entryPoint.length ? ic.entryPoint : rec.image.config.entrypoint;
    const cmd = ic?.command.length ? ic.command : rec.image.config.cmd;
    const overridden = !!(ic?.entryPoint.length || ic?.command.length);
    return {
      id,
      image: rec.image,
      labels: {
        [WORKER_LABELS.function]: rec.key,
        [WORKER_LABELS.generation]: String(spec.generation),
        [WORKER_LABELS.revision]: spec.revision,
        [WORKER_LABELS.owner]: this.nodeName,
        [WORKER_LABELS.role]: "worker",
      },
      env: this.workerEnv(rec, id),
      args: overridden ? [...entry, ...cmd] : undefined,
      workingDir: ic?.workingDirectory || (managed ? "/var/task" : undefined),
      memoryMb: spec.memorySizeMb || DEFAULTS.memoryMb,
      // ESB's emulator runs beside managed-runtime functions; image functions bring their own.
      platformMemoryMb: managed ? PLATFORM_MEMORY_MB : 0,
      tmpMb: spec.ephemeralStorageMb || DEFAULTS.tmpMb,
      mounts: [
        ...(rec.codeDir ? [{ hostPath: rec.codeDir, containerPath: "/var/task" }] : []),
        ...(this.resolvConf ? [{ hostPath: this.resolvConf, containerPath: "/etc/resolv.conf" }] : []),
      ],
      pidsLimit: 1024,
    };
  }

  /** Image env, then the function's variables, then the reserved Lambda variables (which always win). */
  workerEnvFor(key: string, workerId: string): Record<string, string> {
    const rec = this.functions.get(key);
    if (!rec) throw new FunctionNotFoundError(`function ${key} is not prepared on node ${this.nodeName}`);
    return this.workerEnv(rec, workerId);
  }

  private workerEnv(rec: FunctionRecord, workerId: string): Record<string, string> {
    const spec = rec.spec;
    const env: Record<string, string> = {};
    for (const kv of rec.image.config.env) {
      const i = kv.indexOf("=");
      if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1);
    }
    env.TZ = ":UTC";
    Object.assign(env, this.workerAws?.endpoints, spec.environment);
    const name = spec.ref?.name ?? "";
    const day = new Date().toISOString().slice(0, 10).replaceAll("-", "/");
    const reserved: Record<string, string> = {
      AWS_LAMBDA_FUNCTION_NAME: name,
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(spec.memorySizeMb || DEFAULTS.memoryMb),
      AWS_LAMBDA_FUNCTION_TIMEOUT: String(spec.timeoutSeconds || DEFAULTS.timeoutSeconds),
      AWS_LAMBDA_FUNCTION_VERSION: "$LATEST",
      AWS_LAMBDA_LOG_GROUP_NAME: `/aws/lambda/${name}`,
      AWS_LAMBDA_LOG_STREAM_NAME: `${day}/[$LATEST]${createHash("sha256").update(workerId).digest("hex").slice(0, 32)}`,
      AWS_LAMBDA_INITIALIZATION_TYPE:
        spec.provisionedConcurrency > 0 ? "provisioned-concurrency" : "on-demand",
      AWS_REGION: this.region,
      AWS_DEFAULT_REGION: this.region,
      LAMBDA_TASK_ROOT: "/var/task",
      LAMBDA_RUNTIME_DIR: "/var/runtime",
      AWS_LAMBDA_RUNTIME_API: "127.0.0.1:9001",
    };
    Object.assign(reserved, this.workerAws?.credentials);
    if (spec.handler) reserved._HANDLER = spec.handler;
    if (spec.runtime) reserved.AWS_EXECUTION_ENV = `AWS_Lambda_${spec.runtime}`;
    return Object.assign(env, reserved);
  }

  private pool(ref: FunctionRef | { namespace: string; name: string } | undefined): WorkerPool {
    const key = functionKey(ref);
    const rec = this.functions.get(key);
    if (!rec || rec.pool.isClosed)
      throw new FunctionNotFoundError(`function ${key} is not prepared on node ${this.nodeName}`);
    return rec.pool;
  }

  /** Hands out one worker of the function (see {@link WorkerPool.acquire}); {@link FunctionNotFoundError} when not prepared. */
  acquire(
    ref: { namespace: string; name: string } | undefined,
    opts: AcquireOptions,
  ): Promise<AcquiredWorker> {
    return this.pool(ref).acquire(opts);
  }

  /**
   * Returns a worker (see {@link WorkerPool.release}); {@link WorkerNotFoundError} when no pool knows it.
   * A function error whose function the kernel OOM-killed counts as a failed worker: it is replaced.
   */
  async release(workerId: string, leaseId: string, outcome: InvocationOutcome): Promise<void> {
    // A function that ran out of memory (Runtime.OutOfMemory) leaves its worker for good, as on AWS.
    if (
      outcome === "function-error" &&
      (await this.runtime.functionOutOfMemory?.(workerId).catch(() => false))
    )
      outcome = "worker-failed";
    for (const rec of this.functions.values()) {
      // A worker reclaimed meanwhile (lease expired) still finds its pool, where the release is a no-op.
      if (rec.pool.owns(workerId)) return rec.pool.release(workerId, leaseId, outcome);
    }
    throw new WorkerNotFoundError(`worker ${workerId} is not a worker of node ${this.nodeName}`);
  }

  /**
   * Renews the holder's leases: all of them, or only the `listed` ones, the
   * holder's others being expired (see {@link WorkerPool.heartbeat}). Returns
   * how many leases it still holds, how many were expired, and every pool's status.
   */
  heartbeat(
    holderId: string,
    listed?: ReadonlySet<string>,
  ): { activeLeases: number; expiredLeases: number; pools: FunctionPoolSummary[] } {
    let activeLeases = 0;
    let expiredLeases = 0;
    for (const rec of this.functions.values()) {
      const { held, expired } = rec.pool.heartbeat(holderId, listed);
      activeLeases += held;
      expiredLeases += expired;
    }
    return { activeLeases, expiredLeases, pools: this.pools() };
  }

  /** Status of every function's pool. */
  pools(): FunctionPoolSummary[] {
    return [...this.functions.values()].map((rec) => ({
      ref: { namespace: rec.spec.ref?.namespace ?? "", name: rec.spec.ref?.name ?? "" },
      generation: Number(rec.spec.generation),
      revision: rec.spec.revision,
      imageDigest: rec.image.digest,
      counts: rec.pool.counts(),
    }));
  }

  /**
   * Destroys every worker of the function on this node (busy ones when
   * released) and forgets it; returns how many workers are destroyed. 0 when
   * the function is unknown.
   */
  async destroyFunction(ref: { namespace: string; name: string } | undefined): Promise<number> {
    const key = functionKey(ref);
    return this.serialized(key, async () => {
      const rec = this.functions.get(key);
      if (!rec) return 0;
      const n = await rec.pool.destroy();
      this.functions.delete(key);
      // Sandboxes of a template no function uses any more go with the last such function.
      if (this.sandboxes) {
        const used = new Set<string>();
        for (const r of this.functions.values()) {
          const t = this.sandboxTemplate(r);
          if (t) used.add(t.key);
        }
        await this.sandboxes.retain(used);
      }
      await rm(this.specFile(key), { force: true });
      // Busy workers finish in the background.
      this.drainingPools.add(rec.pool);
      this.stagedCode.pin(rec.codeDir);
      void rec.pool.drained().finally(() => {
        this.drainingPools.delete(rec.pool);
        void this.stagedCode.unpin(rec.codeDir);
      });
      return n;
    });
  }

  /** Workers of one function, or of all. */
  listWorkers(ref?: { namespace: string; name: string }): NodeWorkerInfo[] {
    const out: NodeWorkerInfo[] = [];
    const only = ref && (ref.namespace || ref.name) ? functionKey(ref) : undefined;
    for (const rec of this.functions.values()) {
      if (only && rec.key !== only) continue;
      const r = { namespace: rec.spec.ref?.namespace ?? "", name: rec.spec.ref?.name ?? "" };
      for (const w of rec.pool.workers()) out.push({ ...w, ref: r });
    }
    return out;
  }

  /** Every worker a pool tracks, draining ones of destroyed functions included (see agent-resync.ts). */
  trackedWorkers(): { workerId: string; state: PoolWorkerInfo["state"] }[] {
    const pools = [...[...this.functions.values()].map((r) => r.pool), ...this.drainingPools];
    const workers = pools.flatMap((p) => p.workers().map((w) => ({ workerId: w.workerId, state: w.state })));
    // Sandboxes not yet taken are the agent's too (as starting: the resync leaves them alone).
    const sandboxes = (this.sandboxes?.ids() ?? []).map((id) => ({
      workerId: id,
      state: "starting" as const,
    }));
    return [...workers, ...sandboxes];
  }

  /**
   * A worker whose task is gone although no exit event said so (found by the
   * resync): its pool removes it as crashed, and replaces it when provisioned.
   * False when no pool knows it.
   */
  workerLost(workerId: string, reason: string): boolean {
    for (const rec of this.functions.values()) if (rec.pool.workerExited(workerId, reason)) return true;
    for (const pool of this.drainingPools) if (pool.workerExited(workerId, reason)) return true;
    return this.sandboxes?.workerExited(workerId, reason) ?? false;
  }

  /** Capacity and usage of this node. */
  nodeStats(): NodeStats {
    let workers = 0;
    let busy = 0;
    let paused = 0;
    let reserved = 0;
    for (const rec of this.functions.values()) {
      const c = rec.pool.counts();
      const n = c.starting + c.idle + c.busy + c.paused;
      workers += n;
      busy += c.busy;
      paused += c.paused;
      reserved += n * (rec.spec.memorySizeMb || DEFAULTS.memoryMb);
    }
    return {
      nodeName: this.nodeName,
      runtime: this.runtime.name,
      memoryCapacityMb: this.memoryCapacityMb,
      memoryReservedMb: reserved,
      workers,
      busyWorkers: busy,
      pausedWorkers: paused,
      functions: this.functions.size,
    };
  }

  /**
   * Stops managing workers without destroying them (agent shutdown): idle
   * workers are paused so that the next agent re-adopts them; the runtime
   * connection is closed.
   */
  async close(): Promise<void> {
    this.started = false;
    this.unsubscribeExit?.();
    this.stagedCode.close();
    await Promise.all([...this.functions.values()].map((r) => r.pool.close()));
    // Sandboxes not taken are removed: a next agent would not know what they wait for.
    await this.sandboxes?.close();
    await this.runtime.close();
  }

  private async serialized<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const settled = next.catch(() => undefined);
    this.locks.set(key, settled);
    void settled.then(() => {
      if (this.locks.get(key) === settled) this.locks.delete(key);
    });
    return next;
  }
}

/**
 * The runtime as the pools see it: `pauseWorker` retries runc's transient
 * "unable to freeze" (runc gives up freezing a cgroup whose tasks do not
 * settle quickly, on a busy machine, and thaws it again; a later try usually
 * succeeds and is much cheaper than replacing the worker).
 */
function withPauseRetries(rt: Runtime): Runtime {
  return {
    get name() {
      return rt.name;
    },
    start: () => rt.start(),
    close: () => rt.close(),
    prepareImage: (ref, onProgress) => rt.prepareImage(ref, onProgress),
    startWorker: (spec) => rt.startWorker(spec),
    specialiseWorker: rt.specialiseWorker ? (spec) => rt.specialiseWorker!(spec) : undefined,
    pauseWorker: async (id) => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await rt.pauseWorker(id);
        } catch (err) {
          if (attempt >= 5 || !/unable to freeze/i.test((err as Error).message)) throw err;
          await new Promise((r) => setTimeout(r, 100 * attempt));
        }
      }
    },
    resumeWorker: (id) => rt.resumeWorker(id),
    removeWorker: (id) => rt.removeWorker(id),
    listWorkers: () => rt.listWorkers(),
    workerStatus: (id) => rt.workerStatus(id),
    onWorkerExit: (listener) => rt.onWorkerExit(listener),
    onWorkerLog: (listener) => rt.onWorkerLog(listener),
  };
}

/** The spec as persisted: inline code replaced by the staged folder, so restarts need not keep the bytes twice. */
function withStagedCode(spec: FunctionSpec, codeDir: string | undefined): FunctionSpec {
  if (!codeDir) return spec;
  return { ...spec, code: create(FunctionCodeSchema, { hostPath: codeDir }) };
}

function validateSpec(spec: FunctionSpec, allowCodeHostPath: boolean): void {
  const key = functionKey(spec.ref);
  const bad = (msg: string): never => {
    throw new InvalidFunctionSpecError(`function ${key}: ${msg}`);
  };
  if (!spec.ref?.namespace || !spec.ref.name) bad("spec.ref needs a namespace and a name");
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(spec.ref!.namespace))
    bad("namespace is not a valid Kubernetes name");
  if (!/^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/.test(spec.ref!.name))
    bad("name may hold letters, digits, '-', '_' and '.'");
  if (!spec.revision) bad("revision is required");
  if (!spec.image && !(spec.runtime && spec.handler))
    bad("either image, or runtime and handler, is required");
  if (spec.image && spec.runtime) bad("image and runtime are mutually exclusive");
  if (spec.handler && !isHandlerInsideCode(spec.handler))
    bad(`handler "${spec.handler}" must name a file inside the code (no leading '/' and no '..' segment)`);
  const code = spec.code;
  const hasCode = Boolean(code && (Object.keys(code.files).length > 0 || code.hostPath));
  if (spec.image && hasCode) bad("image and code are mutually exclusive (an image carries its own code)");
  if (code?.hostPath) {
    if (!allowCodeHostPath)
      bad("code.hostPath is accepted by standalone ESB only; send the code's files instead");
    if (!isAbsolute(code.hostPath) || normalize(code.hostPath) === "/")
      bad(`code.hostPath "${code.hostPath}" must be an absolute folder other than /`);
  }
  const mem = spec.memorySizeMb;
  if (mem && (mem < 128 || mem > 10240)) bad(`memorySize ${mem} MB is outside 128–10240`);
  const t = spec.timeoutSeconds;
  if (t && (t < 1 || t > 900)) bad(`timeout ${t} s is outside 1–900`);
  for (const name of Object.keys(spec.environment)) {
    // The same rule as the CRD and the folder validation (one list, in common).
    if (isReservedEnvironmentVariable(name)) {
      bad(`environment variable ${name} is reserved by Lambda and cannot be set`);
    }
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) bad(`environment variable name "${name}" is invalid`);
  }
}
