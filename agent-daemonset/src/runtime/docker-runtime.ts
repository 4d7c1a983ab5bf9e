import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, type Readable } from "node:stream";
import Docker from "dockerode";
import { createLogger, type Logger } from "@esb/common";
import {
  ImageUnavailableError,
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
import { cpuSharesFor } from "./worker-resources.js";
import { engineSandboxOptions, type EngineSandboxOptions } from "../sandbox/engine-sandbox-options.js";
import { dockerWorkerResources, WorkerHostResources } from "../sandbox/worker-host-resources.js";
import { workerUser } from "../sandbox/worker-user.js";

/** Options of {@link DockerRuntime}. */
export interface DockerRuntimeOptions {
  /** Docker (or Podman Docker-compatible) API socket. Default /var/run/docker.sock. */
  socketPath?: string;
  /** Bridge network the workers join; created on start when missing. Default "esb". */
  network?: string;
  /** Subnet of that network when ESB creates it (e.g. "10.89.0.0/24"). */
  subnet?: string;
  /** Value of the esb.dev/owner label: only workers with it are listed. */
  owner?: string;
  /**
   * Podman reads a seccomp profile from a file (Docker takes the JSON itself): the
   * folder where a new private folder holding that file is made. Default: the OS temp folder.
   */
  seccompProfileDir?: string;
  /**
   * Folder of the per-worker /tmp folders, on disk and at the same path on the
   * engine's host (default: `esb-docker-workers` in the OS temp folder).
   */
  stateDir?: string;
  /**
   * cgroup (cgroup v1, engine with the `cgroupfs` driver) under which each worker
   * of a managed runtime gets `<cgroupParent>/<id>` with its function's memory
   * cgroup. Default `/esb-docker`.
   */
  cgroupParent?: string;
  logger?: Logger;
}

/**
 * The fallback `Runtime`: drives a Docker engine (or Podman's Docker-compatible
 * API) with dockerode. Workers join one bridge network and are reached at their
 * IP on that network, so the data path is the same as with containerd + CNI.
 * Pause/resume use the engine's cgroup freezer (`docker pause`). Workers get the
 * same sandbox as with containerd: the worker seccomp allowlist, the image user
 * or else the unprivileged sandbox user, no capabilities, no new privileges, a
 * read-only root and a /tmp owned by the worker user.
 */
export class DockerRuntime implements Runtime {
  readonly name = "docker";
  private readonly docker: Docker;
  private readonly network: string;
  private readonly owner: string | undefined;
  private readonly log: Logger;
  private readonly exitListeners = new Set<(exit: WorkerExit) => void>();
  private readonly logListeners = new Set<(line: WorkerLogLine) => void>();
  private readonly oomKilled = new Set<string>();
  /** Workers removed on purpose: their "die" events are not crashes. */
  private readonly removed = new Set<string>();
  private readonly logStreams = new Map<string, Readable>();
  private events: Readable | undefined;
  private closed = false;
  private sandbox: Promise<EngineSandboxOptions> | undefined;
  private readonly hostResources: WorkerHostResources;
  private readonly cgroupParent: string;
  /** The engine makes containers' cgroups under a given cgroup path (cgroupfs driver). */
  private cgroupfs = false;

  constructor(private readonly options: DockerRuntimeOptions = {}) {
    this.docker = new Docker({ socketPath: options.socketPath ?? "/var/run/docker.sock" });
    this.network = options.network ?? "esb";
    this.owner = options.owner;
    this.log = options.logger ?? createLogger("docker-runtime");
    this.hostResources = new WorkerHostResources(
      options.stateDir ?? join(tmpdir(), "esb-docker-workers"),
      this.log,
    );
    this.cgroupParent = (options.cgroupParent ?? "/esb-docker").replace(/\/+$/, "");
  }

  async start(): Promise<void> {
    try {
      await this.docker.ping();
    } catch (err) {
      throw new RuntimeUnavailableError(
        `Docker API at ${this.options.socketPath ?? "/var/run/docker.sock"} is unreachable: ${(err as Error).message}`,
      );
    }
    await this.ensureNetwork();
    await this.sandboxOptions();
    const info = (await this.docker.info()) as { CgroupDriver?: string };
    this.cgroupfs = info.CgroupDriver === "cgroupfs";
    if (!this.cgroupfs)
      this.log.warn(
        { cgroupDriver: info.CgroupDriver },
        "the engine's cgroup driver is not cgroupfs: managed-runtime workers are limited to memorySize as a whole",
      );
    await this.subscribeEvents();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.events?.destroy();
    for (const s of this.logStreams.values()) s.destroy();
    this.logStreams.clear();
    const sandbox = this.sandbox;
    this.sandbox = undefined;
    await (await sandbox?.catch(() => undefined))?.dispose();
  }

  async prepareImage(ref: string, onProgress?: (p: PullProgress) => void): Promise<PreparedImage> {
    let info = await this.inspectImage(ref);
    if (!info) {
      await this.pull(ref, onProgress);
      info = await this.inspectImage(ref);
      if (!info) throw new ImageUnavailableError(`image ${ref} was pulled but the engine does not list it`);
    }
    const repoDigest = (info.RepoDigests ?? []).map((d) => d.split("@")[1]).find(Boolean);
    const cfg = info.Config ?? {};
    return {
      ref,
      digest: repoDigest ?? info.Id,
      config: {
        entrypoint: toArray(cfg.Entrypoint),
        cmd: toArray(cfg.Cmd),
        env: cfg.Env ?? [],
        workingDir: cfg.WorkingDir ?? "",
        user: cfg.User ?? "",
      },
    };
  }

  async startWorker(spec: WorkerSpec): Promise<WorkerHandle> {
    const labels: Record<string, string> = { ...spec.labels, [WORKER_LABELS.role]: "worker" };
    // Docker has no namespaces: the owner label is what scopes listWorkers to this agent.
    if (this.owner) labels[WORKER_LABELS.owner] = this.owner;
    const user = workerUser(spec.image.config.user);
    const sandbox = await this.sandboxOptions();
    const cgroup = `${this.cgroupParent}/${spec.id}`;
    const host = await this.hostResources.prepare(
      this.cgroupfs ? spec : { ...spec, platformMemoryMb: 0 },
      cgroup,
    );
    const resources = dockerWorkerResources(spec, host, cgroup);
    const create: Docker.ContainerCreateOptions = {
      name: spec.id,
      Image: spec.image.ref,
      Env: Object.entries({ ...spec.env, ...resources.env }).map(([k, v]) => `${k}=${v}`),
      Labels: labels,
      WorkingDir: spec.workingDir || spec.image.config.workingDir || undefined,
      User: `${user.uid}:${user.gid}`,
      HostConfig: {
        NetworkMode: this.network,
        ...resources.hostConfig,
        Binds: [
          ...resources.hostConfig.Binds,
          ...(spec.mounts ?? []).map((m) => `${m.hostPath}:${m.containerPath}:ro`),
        ],
        CpuShares: cpuSharesFor(spec.memoryMb),
        PidsLimit: spec.pidsLimit ?? 1024,
        ReadonlyRootfs: true,
        CapDrop: ["ALL"],
        SecurityOpt: ["no-new-privileges", sandbox.seccompOpt],
      },
    };
    if (spec.args && spec.args.length > 0) {
      create.Entrypoint = [spec.args[0]];
      create.Cmd = spec.args.slice(1);
    }
    let container: Docker.Container;
    try {
      container = await this.docker.createContainer(create);
      await container.start();
    } catch (err) {
      await this.removeWorker(spec.id).catch(() => undefined);
      throw this.translate(err, `start worker ${spec.id}`);
    }
    const info = await container.inspect();
    const ip = info.NetworkSettings.Networks?.[this.network]?.IPAddress ?? "";
    if (!ip) {
      await this.removeWorker(spec.id);
      throw new Error(`worker ${spec.id} got no IP on network ${this.network}`);
    }
    this.followLogs(spec.id, container);
    return { id: spec.id, ip, port: 8080, labels, pid: info.State.Pid || undefined };
  }

  async pauseWorker(id: string): Promise<void> {
    await this.docker
      .getContainer(id)
      .pause()
      .catch((err: unknown) => {
        throw this.translate(err, `pause worker ${id}`);
      });
  }

  async resumeWorker(id: string): Promise<void> {
    await this.docker
      .getContainer(id)
      .unpause()
      .catch((err: unknown) => {
        throw this.translate(err, `resume worker ${id}`);
      });
  }

  async removeWorker(id: string): Promise<void> {
    this.removed.add(id);
    setTimeout(() => this.removed.delete(id), 60_000).unref();
    this.logStreams.get(id)?.destroy();
    this.logStreams.delete(id);
    try {
      await this.docker.getContainer(id).remove({ force: true, v: true });
    } catch (err) {
      if (statusOf(err) !== 404) throw this.translate(err, `remove worker ${id}`);
    }
    // The container is gone: its /tmp folder and what the engine left of its cgroups go too.
    await this.hostResources.release(id, `${this.cgroupParent}/${id}`).catch((err: unknown) => {
      this.log.warn({ id, err: (err as Error).message }, "worker /tmp or cgroup removal failed");
    });
  }

  async listWorkers(): Promise<ListedWorker[]> {
    const labelFilters = [`${WORKER_LABELS.role}=worker`];
    if (this.owner) labelFilters.push(`${WORKER_LABELS.owner}=${this.owner}`);
    let containers: Docker.ContainerInfo[];
    try {
      containers = await this.docker.listContainers({ all: true, filters: { label: labelFilters } });
    } catch (err) {
      throw this.translate(err, "list workers");
    }
    return containers.map((c) => ({
      id: (c.Names[0] ?? c.Id).replace(/^\//, ""),
      ip: c.NetworkSettings?.Networks?.[this.network]?.IPAddress ?? "",
      port: 8080,
      labels: c.Labels ?? {},
      status: statusFromState(c.State),
    }));
  }

  async workerStatus(id: string): Promise<WorkerStatus> {
    try {
      const info = await this.docker.getContainer(id).inspect();
      if (info.State.Paused) return "paused";
      if (info.State.Running) return "running";
      return "stopped";
    } catch (err) {
      if (statusOf(err) === 404) return "unknown";
      throw this.translate(err, `inspect worker ${id}`);
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

  /** The engine's spelling of the worker sandbox, read once; a failed attempt is retried by the next call. */
  private sandboxOptions(): Promise<EngineSandboxOptions> {
    this.sandbox ??= engineSandboxOptions(this.docker, this.options.seccompProfileDir).catch(
      (err: unknown) => {
        this.sandbox = undefined;
        throw this.translate(err, "read the engine version");
      },
    );
    return this.sandbox;
  }

  private async ensureNetwork(): Promise<void> {
    const existing = await this.docker.listNetworks({ filters: { name: [this.network] } });
    if (existing.some((n) => n.Name === this.network)) return;
    const ipam = this.options.subnet
      ? { Driver: "default", Config: [{ Subnet: this.options.subnet }] }
      : undefined;
    await this.docker.createNetwork({
      Name: this.network,
      Driver: "bridge",
      CheckDuplicate: true,
      IPAM: ipam,
    });
    this.log.info({ network: this.network, subnet: this.options.subnet }, "created worker network");
  }

  private async subscribeEvents(): Promise<void> {
    // Filtered here rather than by the engine: Podman's compat API ignores some event filters.
    const stream = (await this.docker.getEvents({})) as unknown as Readable;
    this.events = stream;
    let buffered = "";
    stream.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (line) this.onEvent(line);
      }
    });
    stream.on("error", (err) => this.log.warn({ err }, "docker event stream failed"));
    stream.on("close", () => {
      if (this.closed) return;
      // The engine restarted or dropped the stream: subscribe again so exits are not missed.
      setTimeout(
        () => void this.subscribeEvents().catch((err) => this.log.warn({ err }, "resubscribe failed")),
        1000,
      );
    });
  }

  private onEvent(line: string): void {
    let ev: {
      status?: string;
      Action?: string;
      Actor?: { Attributes?: Record<string, string> };
      time?: number;
    };
    try {
      ev = JSON.parse(line);
    } catch {
      return;
    }
    const action = ev.Action ?? ev.status;
    const attributes = ev.Actor?.Attributes ?? {};
    const name = attributes.name;
    if (!name || attributes[WORKER_LABELS.role] !== "worker") return;
    if (action === "oom") {
      this.oomKilled.add(name);
      return;
    }
    if (action !== "die" || this.removed.has(name)) return;
    const exitCode = Number(attributes.exitCode ?? -1);
    const at = ev.time ? new Date(ev.time * 1000) : new Date();
    const emit = (oomKilled: boolean) => {
      if (this.removed.has(name)) return;
      const exit: WorkerExit = { id: name, exitCode, oomKilled, at };
      for (const l of this.exitListeners) l(exit);
    };
    if (this.oomKilled.delete(name) || exitCode !== 137) {
      emit(exitCode === 137);
      return;
    }
    // Some engines (Podman) send no "oom" event: the container state tells.
    this.docker
      .getContainer(name)
      .inspect()
      .then(
        (info) => emit(info.State.OOMKilled === true),
        () => emit(false),
      );
  }

  private followLogs(id: string, container: Docker.Container): void {
    void container
      .logs({ follow: true, stdout: true, stderr: true })
      .then((raw) => {
        const stream = raw as unknown as Readable;
        this.logStreams.set(id, stream);
        const out = new PassThrough();
        const err = new PassThrough();
        this.docker.modem.demuxStream(stream, out, err);
        this.emitLines(id, "stdout", out);
        this.emitLines(id, "stderr", err);
        stream.on("end", () => {
          out.end();
          err.end();
        });
      })
      .catch((e: unknown) => this.log.debug({ err: e, id }, "log stream unavailable"));
  }

  private emitLines(id: string, stream: "stdout" | "stderr", src: Readable): void {
    let buffered = "";
    src.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        for (const l of this.logListeners) l({ id, stream, line });
      }
    });
  }

  private async inspectImage(ref: string): Promise<Docker.ImageInspectInfo | undefined> {
    try {
      return await this.docker.getImage(ref).inspect();
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw this.translate(err, `inspect image ${ref}`);
    }
  }

  private async pull(ref: string, onProgress?: (p: PullProgress) => void): Promise<void> {
    let stream: NodeJS.ReadableStream;
    try {
      stream = await this.docker.pull(ref);
    } catch (err) {
      throw new ImageUnavailableError(`cannot pull ${ref}: ${(err as Error).message}`);
    }
    const layers = new Map<string, { current: number; total: number; done: boolean }>();
    await new Promise<void>((resolve, reject) => {
      this.docker.modem.followProgress(
        stream,
        (err: Error | null) =>
          err ? reject(new ImageUnavailableError(`cannot pull ${ref}: ${err.message}`)) : resolve(),
        (event: {
          id?: string;
          status?: string;
          error?: string;
          progressDetail?: { current?: number; total?: number };
        }) => {
          if (event.error) return;
          if (!event.id || !onProgress) return;
          const layer = layers.get(event.id) ?? { current: 0, total: 0, done: false };
          if (event.progressDetail?.total) {
            layer.current = event.progressDetail.current ?? layer.current;
            layer.total = event.progressDetail.total;
          }
          if (/complete|already exists/i.test(event.status ?? "")) layer.done = true;
          layers.set(event.id, layer);
          const all = [...layers.values()];
          onProgress({
            ref,
            fetchedBytes: all.reduce((s, l) => s + l.current, 0),
            totalBytes: all.reduce((s, l) => s + l.total, 0),
            layersDone: all.filter((l) => l.done).length,
            layers: all.length,
          });
        },
      );
    });
  }

  private translate(err: unknown, what: string): Error {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ECONNREFUSED" || code === "EACCES") {
      return new RuntimeUnavailableError(`Docker API unreachable during ${what}: ${(err as Error).message}`);
    }
    const message = (err as { json?: { message?: string } }).json?.message ?? (err as Error).message;
    return new Error(`${what} failed: ${message}`);
  }
}

function toArray(v: string | string[] | null | undefined): string[] {
  if (!v) return [];
  return Array.isArray(v) ? v : [v];
}

function statusOf(err: unknown): number | undefined {
  return (err as { statusCode?: number }).statusCode;
}

function statusFromState(state: string): WorkerStatus {
  switch (state) {
    case "running":
      return "running";
    case "paused":
      return "paused";
    case "exited":
    case "dead":
    case "created":
    case "stopped":
      return "stopped";
    default:
      return "unknown";
  }
}
