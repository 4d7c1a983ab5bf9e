import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { createLogger, type Logger } from "@esb/common";
import { Containers } from "@esb/common/gen/containerd/services/containers/v1/containers_pb";
import { Namespaces } from "@esb/common/gen/containerd/services/namespaces/v1/namespace_pb";
import { Tasks } from "@esb/common/gen/containerd/services/tasks/v1/tasks_pb";
import { Version } from "@esb/common/gen/containerd/services/version/v1/version_pb";
import { Status } from "@esb/common/gen/containerd/types/task/task_pb";
import { ContainerdConnection, isAlreadyExists, isNotFound } from "../containerd/containerd-connection.js";
import { ImageService, type StoredImage } from "../containerd/image-service.js";
import { buildWorkerSpec, OCI_SPEC_TYPE_URL } from "../containerd/oci-spec.js";
import type { RegistryCredentials } from "../containerd/registry-client.js";
import { TaskEventSubscriber, type TaskEvent } from "../containerd/task-event-subscriber.js";
import { TaskLogPipes } from "../containerd/task-log-pipes.js";
import type { WorkerNetwork } from "../network/worker-network.js";
import { WorkerHostResources } from "../sandbox/worker-host-resources.js";
import { PhaseClock, type StartPhaseListener } from "./start-phases.js";
import {
  RuntimeUnavailableError,
  WORKER_LABELS,
  type ListedWorker,
  type PreparedImage,
  type PullProgress,
  type Runtime,
  type WorkerExit,
  type WorkerHandle,
  type WorkerLogLine,
  type WorkerSpec,
  type WorkerStatus,
} from "./runtime.js";

/** Label holding the worker's IP, so a restarted agent knows where its adopted workers listen. */
export const IP_LABEL = "esb.dev/ip";
/** Value of the role label on worker containers. */
export const WORKER_ROLE = "worker";
/** Port every worker serves on. */
const WORKER_PORT = 8080;
const RUNC_RUNTIME = "io.containerd.runc.v2";
const SIGKILL = 9;
/** How long removeWorker waits for a killed task to exit. */
const KILL_WAIT_MS = 15_000;

/** Options of {@link ContainerdRuntime}. */
export interface ContainerdRuntimeOptions {
  /** containerd's gRPC socket, e.g. /run/containerd/containerd.sock. */
  socketPath: string;
  /** containerd namespace of ESB's images and workers. Default `esb`. */
  namespace?: string;
  /** Gives each worker its network namespace and IP. */
  network: WorkerNetwork;
  /** Folder for per-worker files (log FIFOs; the /tmp folders under `.worker-tmp/`, never a worker id): on disk, not tmpfs. */
  stateDir: string;
  /** Registries (host[:port]) reached over plain HTTP. */
  insecureRegistries?: string[];
  /** Credentials by registry host[:port]. */
  registryAuth?: Record<string, RegistryCredentials>;
  /** containerd snapshotter. Default `overlayfs`. */
  snapshotter?: string;
  /**
   * Parent cgroup of the workers (absolute, e.g. `/kubepods/esb` so that the kubelet
   * accounts their memory). Default `/<namespace>`.
   */
  cgroupParent?: string;
  logger?: Logger;
  /**
   * Called for every removal step that failed for another reason than "already
   * gone" (metrics). The worker's container and network are then kept, so that the
   * agent's resync finds it as an orphan and removes it again.
   */
  onRemovalError?: (workerId: string, err: Error) => void;
  /** The connection to containerd; default a new one on `socketPath` (tests inject faults through their own). */
  connection?: ContainerdConnection;
  /** Told how long each step of every successful worker start took (metrics, bench). */
  onStartPhases?: StartPhaseListener;
}

/**
 * A worker removal that did not finish: the task or container is still there
 * (the message names the step). Its network is not torn down; removing again retries.
 */
export class WorkerRemovalError extends Error {
  override name = "WorkerRemovalError";
}

/**
 * {@link Runtime} on containerd's gRPC API: images are pulled and unpacked by
 * the agent itself, workers are runc tasks with an OCI spec built by ESB, each in
 * the network namespace the {@link WorkerNetwork} made, and task exits/OOM kills
 * come from containerd's event stream.
 */
export class ContainerdRuntime implements Runtime {
  readonly name = "containerd";
  private readonly conn: ContainerdConnection;
  private readonly images: ImageService;
  private readonly network: WorkerNetwork;
  private readonly snapshotter: string;
  private readonly namespace: string;
  private readonly cgroupParent: string;
  private readonly log: Logger;
  private readonly pipes: TaskLogPipes;
  private readonly hostResources: WorkerHostResources;
  private readonly events: TaskEventSubscriber;
  private readonly exitListeners = new Set<(e: WorkerExit) => void>();
  private readonly logListeners = new Set<(l: WorkerLogLine) => void>();
  /** Workers this runtime started or adopted, whose exits are reported. */
  private readonly workers = new Set<string>();
  private readonly oomKilled = new Set<string>();
  /** Workers being removed: a listing meanwhile must not adopt them again. */
  private readonly removing = new Set<string>();
  private readonly onRemovalError: (workerId: string, err: Error) => void;
  private readonly onStartPhases: StartPhaseListener | undefined;
  private readonly prepared = new Map<string, StoredImage>();
  private readonly preparing = new Map<string, Promise<StoredImage>>();
  private started = false;

  constructor(opts: ContainerdRuntimeOptions) {
    this.namespace = opts.namespace ?? "esb";
    this.snapshotter = opts.snapshotter ?? "overlayfs";
    this.cgroupParent = (opts.cgroupParent ?? `/${this.namespace}`).replace(/\/+$/, "");
    this.network = opts.network;
    this.log = opts.logger ?? createLogger("containerd-runtime");
    this.conn =
      opts.connection ?? new ContainerdConnection({ socketPath: opts.socketPath, namespace: this.namespace });
    this.onRemovalError = opts.onRemovalError ?? (() => undefined);
    this.onStartPhases = opts.onStartPhases;
    this.images = new ImageService(this.conn, {
      snapshotter: this.snapshotter,
      insecureRegistries: opts.insecureRegistries,
      auth: opts.registryAuth,
      logger: this.log,
    });
    this.hostResources = new WorkerHostResources(join(opts.stateDir, ".worker-tmp"), this.log);
    this.pipes = new TaskLogPipes(opts.stateDir, (line) => {
      for (const l of this.logListeners) l(line);
    });
    let subscriptions = 0;
    this.events = new TaskEventSubscriber(
      this.conn,
      (e) => void this.onTaskEvent(e),
      this.log,
      () => {
        // After a reconnect, exits may have been missed: look at every worker's task.
        if (subscriptions++ > 0) void this.reconcileExits();
      },
    );
  }

  async start(): Promise<void> {
    try {
      const v = await this.conn.unary(Version.method.version, {}, { timeoutMs: 10_000 });
      this.log.info({ version: v.version, namespace: this.namespace }, "connected to containerd");
      await this.conn
        .unary(Namespaces.method.create, { namespace: { name: this.namespace } })
        .catch((err) => {
          if (!isAlreadyExists(err)) throw err;
        });
    } catch (err) {
      if (err instanceof RuntimeUnavailableError) throw err;
      throw new RuntimeUnavailableError(`containerd at ${this.conn.socketPath}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (!this.started) this.events.start();
    this.started = true;
  }

  async close(): Promise<void> {
    this.events.stop();
    this.pipes.close();
    this.conn.close();
  }

  async prepareImage(ref: string, onProgress?: (p: PullProgress) => void): Promise<PreparedImage> {
    return publicImage(await this.storedImage(ref, onProgress));
  }

  /**
   * Imports an image from an OCI image layout directory under the name `ref`
   * (no registry needed); afterwards `prepareImage(ref)` finds it locally.
   * Throws {@link ImageUnavailableError}.
   */
  async importImage(
    layoutDir: string,
    ref: string,
    onProgress?: (p: PullProgress) => void,
  ): Promise<PreparedImage> {
    const img = await this.images.importLayout(layoutDir, ref, onProgress);
    this.prepared.set(ref, img);
    return publicImage(img);
  }

  async startWorker(spec: WorkerSpec): Promise<WorkerHandle> {
    const id = spec.id;
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(id)) {
      throw new Error(`invalid worker id "${id}" (letters, digits, '_', '.', '-'; at most 64)`);
    }
    const clock = new PhaseClock();
    const image = await this.storedImage(spec.image.ref);
    clock.mark("image");
    const { ip, netnsPath } = await this.network.attach(id);
    clock.mark("network");
    try {
      const host = await this.hostResources.prepare(spec, `${this.cgroupParent}/${id}`);
      clock.mark("host-resources");
      const ociSpec = buildWorkerSpec(spec, image, { netnsPath, cgroupParent: this.cgroupParent, ...host });
      const labels = { ...spec.labels, [WORKER_LABELS.role]: WORKER_ROLE, [IP_LABEL]: ip };
      // The container record references the snapshot key, which keeps it from GC once prepared.
      await this.conn.unary(Containers.method.create, {
        container: {
          id,
          labels,
          image: image.ref,
          runtime: { name: RUNC_RUNTIME },
          spec: { typeUrl: OCI_SPEC_TYPE_URL, value: Buffer.from(JSON.stringify(ociSpec)) },
          snapshotter: this.snapshotter,
          snapshotKey: id,
        },
      });
      clock.mark("container");
      const rootfs = await this.images.unpacker.prepare(id, image.chainId);
      clock.mark("snapshot");
      const io = await this.pipes.attach(id);
      clock.mark("log-pipes");
      this.workers.add(id);
      await this.conn.unary(Tasks.method.create, {
        containerId: id,
        rootfs,
        stdout: io.stdout,
        stderr: io.stderr,
      });
      clock.mark("task-create");
      const { pid } = await this.conn.unary(Tasks.method.start, { containerId: id });
      clock.mark("task-start");
      this.onStartPhases?.(id, clock.phases);
      this.log.debug({ id, ip, pid }, "worker started");
      return { id, ip, port: WORKER_PORT, labels, pid };
    } catch (err) {
      await this.removeWorker(id).catch((e) =>
        this.log.warn({ id, err: (e as Error).message }, "cleanup failed"),
      );
      throw err;
    }
  }

  async pauseWorker(id: string): Promise<void> {
    await this.taskCall(id, () => this.conn.unary(Tasks.method.pause, { containerId: id }));
  }

  async resumeWorker(id: string): Promise<void> {
    await this.taskCall(id, () => this.conn.unary(Tasks.method.resume, { containerId: id }));
  }

  /**
   * Kills the task, deletes it and the container, then frees the snapshot, log
   * pipes and network. Only "already gone" (NotFound) is ignored: any other
   * failure of the task or container steps throws {@link WorkerRemovalError}
   * before the network is touched, so a worker whose task may still run keeps
   * its network (and its labelled container, which the agent's resync finds
   * and removes again).
   */
  async removeWorker(id: string): Promise<void> {
    // Exits caused by removal are not crashes: stop reporting this worker first.
    this.workers.delete(id);
    this.removing.add(id);
    try {
      await this.removeTaskAndContainer(id);
    } catch (err) {
      const failure =
        err instanceof WorkerRemovalError
          ? err
          : new WorkerRemovalError(`worker ${id}: ${(err as Error).message}`, { cause: err });
      this.log.warn(
        { id, err: failure.message },
        "worker removal failed; its container and network are kept for a retry",
      );
      this.onRemovalError(id, failure);
      throw failure;
    } finally {
      this.removing.delete(id);
    }
    // The container is gone: what is left only holds resources, never a running process.
    await this.images.unpacker.remove(id).catch((err: unknown) => {
      // Unreferenced now, so containerd's garbage collection takes it if this never succeeds.
      this.log.warn({ id, err: (err as Error).message }, "worker snapshot removal failed");
      this.onRemovalError(id, err as Error);
    });
    await this.pipes.remove(id);
    await this.hostResources.release(id, `${this.cgroupParent}/${id}`).catch((err: unknown) => {
      this.log.warn({ id, err: (err as Error).message }, "worker /tmp or cgroup removal failed");
      this.onRemovalError(id, err as Error);
    });
    await this.network.detach(id);
    this.oomKilled.delete(id);
  }

  private async removeTaskAndContainer(id: string): Promise<void> {
    const status = await this.taskStatus(id);
    if (status !== undefined && status !== Status.STOPPED) {
      await this.removalStep(id, "kill", () =>
        this.conn.unary(Tasks.method.kill, { containerId: id, signal: SIGKILL, all: true }),
      );
      // A frozen task cannot act on SIGKILL until thawed (cgroup v1 freezer). runc often thaws it
      // itself to kill it, so "not paused" or "stopped" answers are expected: the wait below decides.
      if (status === Status.PAUSED || status === Status.PAUSING) {
        await this.conn
          .unary(Tasks.method.resume, { containerId: id })
          .catch((err: unknown) =>
            this.log.debug({ id, err: (err as Error).message }, "thaw before removal not needed"),
          );
      }
      await this.removalStep(id, "wait for exit", () =>
        this.conn.unary(Tasks.method.wait, { containerId: id }, { timeoutMs: KILL_WAIT_MS }),
      );
    }
    if (status !== undefined) {
      await this.removalStep(id, "task delete", () =>
        this.conn.unary(Tasks.method.delete, { containerId: id }),
      );
    }
    await this.removalStep(id, "container delete", () => this.conn.unary(Containers.method.delete, { id }));
  }

  async listWorkers(): Promise<ListedWorker[]> {
    const [{ containers }, { tasks }] = await Promise.all([
      this.conn.unary(Containers.method.list, {
        filters: [`labels."${WORKER_LABELS.role}"==${WORKER_ROLE}`],
      }),
      this.conn.unary(Tasks.method.list, {}),
    ]);
    // Tasks.List names each task's container in `id` (containerd 1.6 leaves container_id empty).
    const byId = new Map(tasks.map((t) => [t.containerId || t.id, t]));
    const out: ListedWorker[] = [];
    for (const c of containers) {
      const task = byId.get(c.id);
      const status = task ? toWorkerStatus(task.status) : "stopped";
      if ((status === "running" || status === "paused") && !this.removing.has(c.id)) {
        // Adopt: report its exit and forward its output from now on.
        this.workers.add(c.id);
        await this.pipes.reattach(c.id).catch(() => undefined);
      }
      out.push({
        id: c.id,
        ip: c.labels[IP_LABEL] ?? "",
        port: WORKER_PORT,
        labels: { ...c.labels },
        pid: task?.pid || undefined,
        status,
      });
    }
    return out;
  }

  async workerStatus(id: string): Promise<WorkerStatus> {
    const status = await this.taskStatus(id);
    if (status !== undefined) return toWorkerStatus(status);
    try {
      await this.conn.unary(Containers.method.get, { id });
      return "stopped";
    } catch (err) {
      if (isNotFound(err)) return "unknown";
      throw err;
    }
  }

  functionOutOfMemory(id: string): Promise<boolean> {
    return this.hostResources.functionOomKilled(`${this.cgroupParent}/${id}`);
  }

  onWorkerExit(listener: (exit: WorkerExit) => void): () => void {
    this.exitListeners.add(listener);
    return () => this.exitListeners.delete(listener);
  }

  onWorkerLog(listener: (line: WorkerLogLine) => void): () => void {
    this.logListeners.add(listener);
    return () => this.logListeners.delete(listener);
  }

  private async storedImage(ref: string, onProgress?: (p: PullProgress) => void): Promise<StoredImage> {
    const done = this.prepared.get(ref);
    if (done) return done;
    let job = this.preparing.get(ref);
    if (!job) {
      job = (async () => (await this.images.local(ref)) ?? (await this.images.pull(ref, onProgress)))();
      this.preparing.set(ref, job);
      job.then(
        (img) => {
          this.prepared.set(ref, img);
          this.preparing.delete(ref);
        },
        () => this.preparing.delete(ref),
      );
    }
    return job;
  }

  private async onTaskEvent(e: TaskEvent): Promise<void> {
    if (e.kind === "oom") {
      this.oomKilled.add(e.containerId);
      return;
    }
    // Only the init process's exit ends a worker.
    if (e.execId !== e.containerId || !this.workers.has(e.containerId)) return;
    this.workers.delete(e.containerId);
    const oomKilled = this.oomKilled.has(e.containerId) || (await this.cgroupOomKilled(e.containerId));
    this.emitExit({ id: e.containerId, exitCode: e.exitStatus, oomKilled, at: e.at });
  }

  private emitExit(exit: WorkerExit): void {
    this.log.info(exit, "worker exited");
    for (const l of this.exitListeners) {
      try {
        l(exit);
      } catch (err) {
        this.log.error({ err: (err as Error).message }, "worker exit listener failed");
      }
    }
  }

  /** Reports workers whose task stopped while the event stream was down. */
  private async reconcileExits(): Promise<void> {
    for (const id of [...this.workers]) {
      try {
        const { process } = await this.conn.unary(Tasks.method.get, { containerId: id });
        if (process?.status === Status.STOPPED && this.workers.delete(id)) {
          const oomKilled = this.oomKilled.has(id) || (await this.cgroupOomKilled(id));
          this.emitExit({ id, exitCode: process.exitStatus, oomKilled, at: new Date() });
        }
      } catch (err) {
        this.log.debug({ id, err: (err as Error).message }, "could not reconcile worker after reconnect");
      }
    }
  }

  /** Reads the worker's memory cgroup for OOM kills (covers a missed or late OOM event). */
  private async cgroupOomKilled(id: string): Promise<boolean> {
    const cg = `${this.cgroupParent}/${id}`;
    const candidates = [
      [join("/sys/fs/cgroup/memory", cg, "memory.oom_control"), /^oom_kill (\d+)/m],
      [join("/sys/fs/cgroup", cg, "memory.events"), /^oom_kill (\d+)/m],
    ] as const;
    for (const [file, re] of candidates) {
      try {
        const m = re.exec(await readFile(file, "utf8"));
        if (m) return Number(m[1]) > 0;
      } catch {
        // not this cgroup layout
      }
    }
    return false;
  }

  private async taskStatus(id: string): Promise<Status | undefined> {
    try {
      const { process } = await this.conn.unary(Tasks.method.get, { containerId: id });
      return process?.status ?? Status.UNKNOWN;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  private async taskCall(id: string, fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      if (isNotFound(err)) throw new Error(`worker ${id} has no running task`, { cause: err });
      throw err;
    }
  }

  /** One step of a removal: "already gone" (NotFound) is done; any other error ends the removal. */
  private async removalStep(id: string, step: string, call: () => Promise<unknown>): Promise<void> {
    try {
      await call();
    } catch (err) {
      if (isNotFound(err)) {
        this.log.debug({ id, step }, "already gone during worker removal");
        return;
      }
      throw new WorkerRemovalError(`worker ${id}: ${step} failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
}

function toWorkerStatus(s: Status): WorkerStatus {
  switch (s) {
    case Status.RUNNING:
      return "running";
    case Status.PAUSED:
    case Status.PAUSING:
      return "paused";
    case Status.STOPPED:
    case Status.CREATED:
      return "stopped";
    default:
      return "unknown";
  }
}

function publicImage(img: StoredImage): PreparedImage {
  return { ref: img.ref, digest: img.digest, config: img.config };
}
