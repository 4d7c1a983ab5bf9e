import type {
  ListedWorker,
  PreparedImage,
  Runtime,
  WorkerExit,
  WorkerHandle,
  WorkerSpec,
  WorkerStatus,
} from "../runtime/runtime.js";
import { WORKER_LABELS } from "../runtime/runtime.js";
import type { PoolFunctionConfig } from "./worker-pool.js";

/**
 * FakeRuntime: an in-memory Runtime double used ONLY for the pool's pure
 * state-transition logic (ordering of thaw/warm/cold, waiters, leases, drains),
 * which needs dozens of workers and failure injection that a real containerd
 * cannot provide cheaply or deterministically. Everything that touches real
 * containers is covered by worker-pool.test.ts against the real ContainerdRuntime.
 * TEST SUPPORT only: shared by the pool's state tests.
 */
export class FakeRuntime implements Runtime {
  readonly name = "fake";
  readonly status = new Map<string, WorkerStatus>();
  readonly calls: string[] = [];
  failNextStart = false;
  failResumeOf = new Set<string>();
  /** While set, starts and resumes wait for it: lets a test act in the middle of one. */
  gate: Promise<void> | undefined;
  private exitListeners: ((e: WorkerExit) => void)[] = [];
  /** Sandboxes started with `standby` and not yet specialised. */
  readonly standby = new Set<string>();
  private n = 0;
  async start(): Promise<void> {}
  async close(): Promise<void> {}
  async prepareImage(ref: string): Promise<PreparedImage> {
    return {
      ref,
      digest: "sha256:0",
      config: { entrypoint: [], cmd: [], env: [], workingDir: "/", user: "" },
    };
  }
  async startWorker(spec: WorkerSpec): Promise<WorkerHandle> {
    this.calls.push(`start ${spec.id}`);
    await (this.gate ?? Promise.resolve());
    if (this.failNextStart) {
      this.failNextStart = false;
      throw new Error("image broken");
    }
    this.status.set(spec.id, "running");
    if (spec.standby) this.standby.add(spec.id);
    return { id: spec.id, ip: `10.0.0.${++this.n}`, port: 8080, labels: spec.labels };
  }
  /** Specialises a running sandbox started with `standby` (see Runtime.specialiseWorker). */
  async specialiseWorker(spec: WorkerSpec): Promise<WorkerHandle> {
    this.calls.push(`specialise ${spec.id}`);
    if (!this.standby.delete(spec.id))
      throw new Error(`${spec.id} is not a sandbox waiting for its function`);
    if (this.status.get(spec.id) !== "running") throw new Error(`cannot specialise ${spec.id}`);
    return { id: spec.id, ip: `10.0.1.${++this.n}`, port: 8080, labels: spec.labels };
  }
  async pauseWorker(id: string): Promise<void> {
    this.calls.push(`pause ${id}`);
    if (this.status.get(id) !== "running") throw new Error(`cannot pause ${id}: ${this.status.get(id)}`);
    this.status.set(id, "paused");
  }
  async resumeWorker(id: string): Promise<void> {
    this.calls.push(`resume ${id}`);
    await this.gate;
    if (this.failResumeOf.has(id)) throw new Error("resume failed");
    if (this.status.get(id) !== "paused") throw new Error(`cannot resume ${id}: ${this.status.get(id)}`);
    this.status.set(id, "running");
  }
  async removeWorker(id: string): Promise<void> {
    this.calls.push(`remove ${id}`);
    this.status.delete(id);
    this.standby.delete(id);
  }
  async listWorkers(): Promise<ListedWorker[]> {
    return [];
  }
  async workerStatus(id: string): Promise<WorkerStatus> {
    return this.status.get(id) ?? "unknown";
  }
  onWorkerExit(listener: (exit: WorkerExit) => void): () => void {
    this.exitListeners.push(listener);
    return () => (this.exitListeners = this.exitListeners.filter((l) => l !== listener));
  }
  onWorkerLog(): () => void {
    return () => undefined;
  }
}

/** A pool configuration for the FakeRuntime's tests (2 workers, pause after 20 ms), with `over` applied. */
export function fakePoolConfig(over: Partial<PoolFunctionConfig> = {}): PoolFunctionConfig {
  return {
    generation: 1,
    revision: "r1",
    maxWorkers: 2,
    provisioned: 0,
    pauseAfterMs: 20,
    keepWarmMs: 60_000,
    defaultLeaseMs: 60_000,
    workerSpec: (id) => ({
      id,
      image: {
        ref: "x",
        digest: "sha256:0",
        config: { entrypoint: [], cmd: [], env: [], workingDir: "/", user: "" },
      },
      labels: { [WORKER_LABELS.revision]: over.revision ?? "r1" },
      env: {},
      memoryMb: 128,
      tmpMb: 64,
    }),
    ...over,
  };
}
