/**
 * The `Runtime` interface: what the agent needs from a container engine to run
 * workers. Two implementations live beside it: `containerd-runtime.ts` (default;
 * containerd's gRPC API on its unix socket) and `docker-runtime.ts` (dockerode;
 * fallback). `runtime-conformance.ts` is the test suite both must pass.
 *
 * A worker is one container whose process serves the AWS Runtime Interface
 * Emulator contract on port 8080 of its own network address.
 */

/** Labels put on every worker container; they let a restarted agent re-adopt its workers. */
export const WORKER_LABELS = {
  /** "namespace/name" of the LambdaFunction. */
  function: "esb.dev/function",
  /** metadata.generation of the spec the worker runs. */
  generation: "esb.dev/generation",
  /** Content hash of the runnable spec. */
  revision: "esb.dev/revision",
  /** Node/agent that owns the worker. */
  owner: "esb.dev/owner",
  /** Marks a container as an ESB worker. */
  role: "esb.dev/role",
} as const;

/** An image made ready for workers: present locally and unpacked. */
export interface PreparedImage {
  /** The reference asked for (e.g. `localhost:5000/fn:1`). */
  ref: string;
  /** Digest of the manifest (or index) that was resolved: `sha256:…`. */
  digest: string;
  /** Image config: the process defaults a worker inherits. */
  config: {
    entrypoint: string[];
    cmd: string[];
    env: string[];
    workingDir: string;
    user: string;
  };
}

/** Progress of an image pull, reported while layers download. */
export interface PullProgress {
  ref: string;
  /** Bytes fetched so far, over all layers. */
  fetchedBytes: number;
  /** Total bytes of all layers, when known. */
  totalBytes: number;
  /** Layers done / all layers. */
  layersDone: number;
  layers: number;
}

/** Everything needed to create one worker container. */
export interface WorkerSpec {
  /** Unique id; also the container id. */
  id: string;
  image: PreparedImage;
  /** Labels (see {@link WORKER_LABELS}). */
  labels: Record<string, string>;
  /** Full process environment (reserved Lambda variables + the function's). */
  env: Record<string, string>;
  /** Process args; empty means the image's entrypoint + cmd. */
  args?: string[];
  workingDir?: string;
  /** Memory limit in MiB of the function (= memorySize); also sets the CPU share. */
  memoryMb: number;
  /**
   * Memory in MiB for ESB's own processes in the worker (the emulator), on top of
   * `memoryMb`. When set, the worker's cgroup is limited to memoryMb + this, and
   * the runtime prepares a child memory cgroup limited to `memoryMb` that the
   * worker's emulator moves the function's process into (`ESB_FUNCTION_CGROUP`);
   * when 0 or missing (images with their own emulator), the whole worker is
   * limited to `memoryMb`.
   */
  platformMemoryMb?: number;
  /**
   * Ephemeral storage of /tmp in MiB (ephemeralStorage). /tmp is a per-worker folder on
   * the node's disk, removed with the worker; the size is advertised, not enforced.
   */
  tmpMb: number;
  /** Read-only bind mounts: host path → container path (e.g. code at /var/task). */
  mounts?: { hostPath: string; containerPath: string }[];
  /** Most processes the worker may run. */
  pidsLimit?: number;
  /**
   * A generic sandbox, started before its function is known (see {@link Runtime.specialiseWorker}):
   * the runtime mounts an empty /var/task that code can be mounted on later, and a control
   * folder from which the worker's emulator reads its function's environment; nothing in the
   * worker listens until then; startWorker resolves once the sandbox waits for its function (it
   * writes /tmp/.esb-sandbox-ready, as ESB's emulator does once its runtime is booted). Only
   * for images with ESB's emulator; `mounts` must not name /var/task.
   */
  standby?: boolean;
}

/** A running (or paused) worker container. */
export interface WorkerHandle {
  id: string;
  /** Address (IP) where the worker's port 8080 is reachable from the agent and gateway. */
  ip: string;
  /** Host port mapping, when the runtime cannot give the worker a routable IP (rare). */
  port: number;
  labels: Record<string, string>;
  /** Process id of the worker's init process on the host, when known. */
  pid?: number;
}

/** Lifecycle status of a worker container as the runtime sees it. */
export type WorkerStatus = "running" | "paused" | "stopped" | "unknown";

/** A worker container found by {@link Runtime.listWorkers}. */
export interface ListedWorker extends WorkerHandle {
  status: WorkerStatus;
}

/** Why a worker stopped, as reported by the runtime's events. */
export interface WorkerExit {
  id: string;
  exitCode: number;
  /** True when the kernel's OOM killer ended it. */
  oomKilled: boolean;
  at: Date;
}

/** A line of a worker's stdout/stderr. */
export interface WorkerLogLine {
  id: string;
  stream: "stdout" | "stderr";
  line: string;
}

/** The runtime is unreachable (daemon down, socket missing). Maps to UNAVAILABLE. */
export class RuntimeUnavailableError extends Error {
  override name = "RuntimeUnavailableError";
}

/** An image cannot be pulled, imported or unpacked. Maps to FAILED_PRECONDITION. */
export class ImageUnavailableError extends Error {
  override name = "ImageUnavailableError";
}

/**
 * A container engine that runs workers. Implementations are safe to call
 * concurrently for different worker ids.
 */
export interface Runtime {
  /** Short name: "containerd" or "docker". */
  readonly name: string;
  /** Connects and checks the engine answers; throws {@link RuntimeUnavailableError}. */
  start(): Promise<void>;
  /** Releases connections and subscriptions; does not touch workers. */
  close(): Promise<void>;
  /**
   * Makes `ref` available locally and unpacked; pulls it when missing. Progress
   * is reported through `onProgress`. Throws {@link ImageUnavailableError}.
   */
  prepareImage(ref: string, onProgress?: (p: PullProgress) => void): Promise<PreparedImage>;
  /** Creates and starts a worker; resolves once its process runs and its IP is known. */
  startWorker(spec: WorkerSpec): Promise<WorkerHandle>;
  /** Freezes every process of the worker (cgroup freezer). */
  pauseWorker(id: string): Promise<void>;
  /** Thaws a paused worker. */
  resumeWorker(id: string): Promise<void>;
  /**
   * Turns the generic sandbox `spec.id` (started with {@link WorkerSpec.standby}, not yet
   * specialised) into a worker of `spec`'s function: `spec.mounts` appear read-only in it
   * (code at /var/task), its labels become `spec.labels` (a restarted agent re-adopts it as
   * the function's worker), and its emulator starts the function with the environment a
   * worker started from `spec` would have. `spec`'s image, memory, /tmp and pids limit must be
   * the sandbox's. Resolves before the worker listens (wait for its port as after startWorker).
   * Throws when `spec.id` is no unspecialised sandbox. Optional: engines without it start
   * every worker with startWorker.
   */
  specialiseWorker?(spec: WorkerSpec): Promise<WorkerHandle>;
  /** Kills the worker, removes its container, network and files. Idempotent. */
  removeWorker(id: string): Promise<void>;
  /** Lists this runtime's workers (containers carrying the role label), with status. */
  listWorkers(): Promise<ListedWorker[]>;
  /** Status of one worker. */
  workerStatus(id: string): Promise<WorkerStatus>;
  /**
   * True when the kernel OOM-killed the function's process in worker `id`'s function
   * memory cgroup (see {@link WorkerSpec.platformMemoryMb}): the function ran out of its
   * memorySize, and the worker must not serve again (AWS resets such an environment).
   * False when the worker has no such cgroup. Optional: engines without one omit it.
   */
  functionOutOfMemory?(id: string): Promise<boolean>;
  /** Registers a callback for worker exits (crashes, OOM kills). Returns an unsubscribe function. */
  onWorkerExit(listener: (exit: WorkerExit) => void): () => void;
  /** Registers a callback for worker output lines. Returns an unsubscribe function. */
  onWorkerLog(listener: (line: WorkerLogLine) => void): () => void;
}
