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
import { SandboxMounts } from "../sandbox/sandbox-mounts.js";
import {
  sandboxMismatch,
  specialiseSandbox,
  waitForStandby,
  type StandbySandbox,
} from "./sandbox-specialisation.js";
import type { RegistryCredentials } from "../containerd/registry-client.js";
import { TaskLogPipes } from "../containerd/task-log-pipes.js";
import type { WorkerNetwork } from "../network/worker-network.js";
import { WorkerHostResources } from "../sandbox/worker-host-resources.js";
import { ContainerdExitReporter } from "./containerd-exit-reporter.js";
import {
  containerdTaskStatus,
  removeTaskAndContainer,
  WorkerRemovalError,
} from "./containerd-task-removal.js";
import { ContainerdWorkerFreezer } from "./containerd-worker-freezer.js";
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

export { WorkerRemovalError };

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
  /** Where the cgroup hierarchies are mounted (the workers' freezer and memory cgroups). Default /sys/fs/cgroup. */
  cgroupRoot?: string;
}

/**
 * {@link Runtime} on containerd's gRPC API: images are pulled and unpacked by
 * the agent itself, workers are runc tasks with an OCI spec built by ESB, each in
 * the network namespace the {@link WorkerNetwork} made, and task exits/OOM kills
 * come from containerd's event stream.
 *
 * The agent owns its workers' freezer ({@link ContainerdWorkerFreezer}):
 * pause and resume write the worker's cgroup freezer directly, containerd then
 * reports a frozen task as running, and this runtime reports it paused from the
 * kernel's freezer state.
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
  private readonly exits: ContainerdExitReporter;
  private readonly freezer: ContainerdWorkerFreezer;
  private readonly logListeners = new Set<(l: WorkerLogLine) => void>();
  /** Workers being removed: a listing meanwhile must not adopt them again. */
  private readonly removing = new Set<string>();
  private readonly onRemovalError: (workerId: string, err: Error) => void;
  private readonly onStartPhases: StartPhaseListener | undefined;
  private readonly sandboxMounts: SandboxMounts;
  /** Generic sandboxes started by this runtime and not yet specialised. */
  private readonly standby = new Map<string, StandbySandbox>();
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
    this.sandboxMounts = new SandboxMounts(join(opts.stateDir, "sandboxes"));
    this.images = new ImageService(this.conn, {
      snapshotter: this.snapshotter,
      insecureRegistries: opts.insecureRegistries,
      auth: opts.registryAuth,
      logger: this.log,
    });
    this.hostResources = new WorkerHostResources(
      join(opts.stateDir, ".worker-tmp"),
      this.log,
      opts.cgroupRoot,
    );
    this.freezer = new ContainerdWorkerFreezer(
      this.conn,
      (id) => this.cgroupOf(id),
      this.log,
      opts.cgroupRoot,
    );
    this.pipes = new TaskLogPipes(opts.stateDir, (line) => {
      for (const l of this.logListeners) l(line);
    });
    this.exits = new ContainerdExitReporter(this.conn, (id) => this.cgroupOf(id), this.log);
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
    if (!this.started) {
      const freezer = await this.freezer.start();
      this.log.info({ freezer }, "workers are frozen and thawed through the kernel's cgroup freezer");
      this.exits.start();
    }
    this.started = true;
    // Read-only code copies of a previous agent: the workers' own mounts do not need them.
    await this.sandboxMounts
      .sweepCodeCopies()
      .catch((err: unknown) =>
        this.log.warn({ err: (err as Error).message }, "old sandbox code copies not unmounted"),
      );
  }

  async close(): Promise<void> {
    this.exits.stop();
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
      const host = await this.hostResources.prepare(spec, this.cgroupOf(id));
      clock.mark("host-resources");
      const sandbox = spec.standby ? await this.sandboxMounts.prepare(id) : undefined;
      const ociSpec = buildWorkerSpec(spec, image, {
        netnsPath,
        cgroupParent: this.cgroupParent,
        ...host,
        sandbox,
      });
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
      this.exits.watch(id);
      await this.conn.unary(Tasks.method.create, {
        containerId: id,
        rootfs,
        stdout: io.stdout,
        stderr: io.stderr,
      });
      clock.mark("task-create");
      const { pid } = await this.conn.unary(Tasks.method.start, { containerId: id });
      clock.mark("task-start");
      if (spec.standby) {
        await waitForStandby(host.tmpHostPath, async () => (await this.workerStatus(id)) === "running");
        clock.mark("standby");
      }
      this.onStartPhases?.(id, clock.phases);
      if (spec.standby) this.standby.set(id, { spec, ip, pid, functionCgroup: !!host.functionCgroupDir });
      this.log.debug({ id, ip, pid }, "worker started");
      return { id, ip, port: WORKER_PORT, labels, pid };
    } catch (err) {
      await this.removeWorker(id).catch((e) =>
        this.log.warn({ id, err: (e as Error).message }, "cleanup failed"),
      );
      throw err;
    }
  }

  async specialiseWorker(spec: WorkerSpec): Promise<WorkerHandle> {
    const sandbox = this.standby.get(spec.id);
    if (!sandbox) throw new Error(`worker ${spec.id} is not a generic sandbox waiting for its function`);
    const mismatch = sandboxMismatch(sandbox.spec, spec);
    if (mismatch) throw new Error(`worker ${spec.id}: cannot specialise the sandbox: ${mismatch}`);
    // Once: a failed specialisation leaves a sandbox in an unknown state, which the caller removes.
    this.standby.delete(spec.id);
    const image = await this.storedImage(spec.image.ref);
    const labels = { ...spec.labels, [WORKER_LABELS.role]: WORKER_ROLE, [IP_LABEL]: sandbox.ip };
    const done = await specialiseSandbox(this.conn, this.sandboxMounts, sandbox, spec, image, labels);
    this.onStartPhases?.(spec.id, done.phases);
    done.relabelled.catch((err: unknown) =>
      this.log.warn(
        { id: spec.id, err: (err as Error).message },
        "worker labels not updated after specialisation",
      ),
    );
    return { id: spec.id, ip: sandbox.ip, port: WORKER_PORT, labels, pid: sandbox.pid };
  }

  /** Freezes the worker's cgroup (kernel freezer) and resolves once every process of it is frozen. */
  pauseWorker(id: string): Promise<void> {
    return this.freezer.pause(id);
  }

  /** Thaws the worker's cgroup: one write to the kernel's freezer, no containerd round trip. */
  resumeWorker(id: string): Promise<void> {
    return this.freezer.resume(id);
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
    this.exits.unwatch(id);
    this.removing.add(id);
    try {
      await removeTaskAndContainer(this.conn, id, () => this.freezer.thawIfPresent(id), this.log);
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
    this.standby.delete(id);
    await this.sandboxMounts.release(id).catch((err: unknown) => {
      this.log.warn({ id, err: (err as Error).message }, "sandbox mounts removal failed");
      this.onRemovalError(id, err as Error);
    });
    await this.hostResources.release(id, this.cgroupOf(id)).catch((err: unknown) => {
      this.log.warn({ id, err: (err as Error).message }, "worker /tmp or cgroup removal failed");
      this.onRemovalError(id, err as Error);
    });
    await this.network.detach(id);
    this.exits.forget(id);
  }

  /**
   * Lists the workers (containers with the role label). A task containerd reports
   * running is "paused" when the kernel's freezer has its cgroup frozen: the
   * kernel's state counts, not containerd's. Running and paused workers are
   * adopted (their exits reported, their output forwarded); a task containerd
   * itself paused is taken over: resumed through containerd, frozen by cgroup.
   */
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
      let status: WorkerStatus = "stopped";
      if (task) {
        const paused = task.status === Status.PAUSED || task.status === Status.PAUSING;
        if (paused && !this.removing.has(c.id)) await this.freezer.takeOver(c.id);
        status = await this.freezer.status(c.id, task.status);
      }
      if ((status === "running" || status === "paused") && !this.removing.has(c.id)) {
        // Adopt: report its exit and forward its output from now on.
        this.exits.watch(c.id);
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

  /** The worker's status: containerd's task status, with the kernel's freezer saying whether a live task is paused. */
  async workerStatus(id: string): Promise<WorkerStatus> {
    const status = await containerdTaskStatus(this.conn, id);
    if (status !== undefined) return this.freezer.status(id, status);
    try {
      await this.conn.unary(Containers.method.get, { id });
      return "stopped";
    } catch (err) {
      if (isNotFound(err)) return "unknown";
      throw err;
    }
  }

  functionOutOfMemory(id: string): Promise<boolean> {
    return this.hostResources.functionOomKilled(this.cgroupOf(id));
  }

  onWorkerExit(listener: (exit: WorkerExit) => void): () => void {
    return this.exits.onExit(listener);
  }

  onWorkerLog(listener: (line: WorkerLogLine) => void): () => void {
    this.logListeners.add(listener);
    return () => this.logListeners.delete(listener);
  }

  /** The worker's cgroup path in every hierarchy. */
  private cgroupOf(id: string): string {
    // Ids come from startWorker (checked there) or containerd's listing; never a path.
    if (id.includes("/") || id === "." || id === "..") throw new Error(`invalid worker id "${id}"`);
    return `${this.cgroupParent}/${id}`;
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
}

function publicImage(img: StoredImage): PreparedImage {
  return { ref: img.ref, digest: img.digest, config: img.config };
}
