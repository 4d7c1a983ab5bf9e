import type { PreparedImage, WorkerSpec } from "../runtime/runtime.js";
import { cpuSharesFor } from "../runtime/worker-resources.js";
import { FUNCTION_CGROUP_ENV, FUNCTION_CGROUP_PATH } from "../sandbox/function-memory.js";
import { workerSeccompProfile, type SeccompProfile } from "../sandbox/seccomp-profile.js";
import { workerUser } from "../sandbox/worker-user.js";

/** type_url containerd uses for an OCI runtime spec inside a google.protobuf.Any. */
export const OCI_SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/** The subset of the OCI runtime spec ESB writes. */
export interface OciRuntimeSpec {
  ociVersion: string;
  process: {
    terminal: boolean;
    user: { uid: number; gid: number; additionalGids?: number[] };
    args: string[];
    env: string[];
    cwd: string;
    capabilities: {
      bounding: string[];
      effective: string[];
      permitted: string[];
      inheritable: string[];
      ambient: string[];
    };
    rlimits: { type: string; hard: number; soft: number }[];
    noNewPrivileges: boolean;
    oomScoreAdj?: number;
  };
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: { destination: string; type: string; source: string; options: string[] }[];
  linux: {
    cgroupsPath: string;
    resources: {
      devices: { allow: boolean; access: string }[];
      memory: { limit: number; swap: number };
      cpu: { shares: number };
      pids?: { limit: number };
    };
    namespaces: { type: string; path?: string }[];
    maskedPaths: string[];
    readonlyPaths: string[];
    seccomp: SeccompProfile;
  };
}

/** Where and how the worker runs, beyond its {@link WorkerSpec}. */
export interface SpecContext {
  /** Network namespace the worker joins (made by the WorkerNetwork). */
  netnsPath: string;
  /** Parent cgroup of the worker's cgroup (`<cgroupParent>/<worker id>`), e.g. `/esb`. */
  cgroupParent: string;
  /** Host folder mounted read-write at /tmp (see WorkerTmpFolders); without it /tmp is a tmpfs. */
  tmpHostPath?: string;
  /** Host directory of the function's memory cgroup (see FunctionMemoryCgroups), mounted for the emulator. */
  functionCgroupDir?: string;
  /** A generic sandbox's host folders (see SandboxMounts): /var/task (propagation from the host) and its control folder. */
  sandbox?: { taskHostPath: string; controlHostPath: string };
}

/** Where a generic sandbox sees its control folder (named in ESB_SANDBOX_CONTROL). */
export const SANDBOX_CONTROL_PATH = "/run/esb/control";

/**
 * The environment of a worker's process: the image's, then the worker spec's (by name), a
 * default PATH, and ESB_FUNCTION_CGROUP when the function has its own memory cgroup. A
 * generic sandbox is handed the same for its function (see Runtime.specialiseWorker).
 */
export function workerProcessEnv(
  spec: WorkerSpec,
  image: PreparedImage,
  functionCgroup: boolean,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const kv of image.config.env) {
    const i = kv.indexOf("=");
    if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  env.PATH ??= "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  Object.assign(env, spec.env);
  if (functionCgroup) env[FUNCTION_CGROUP_ENV] = FUNCTION_CGROUP_PATH;
  return env;
}

/**
 * A generic sandbox's mounts: /var/task from a host folder as a recursive slave (the code the
 * agent mounts on that folder later appears in the worker, read-only as mounted) and the
 * control folder, read-only: only the agent writes the function's environment there.
 */
function sandboxMounts(dirs: { taskHostPath: string; controlHostPath: string }): OciRuntimeSpec["mounts"] {
  return [
    {
      destination: "/var/task",
      type: "bind",
      source: dirs.taskHostPath,
      options: ["rbind", "ro", "nosuid", "nodev", "rslave"],
    },
    {
      destination: SANDBOX_CONTROL_PATH,
      type: "bind",
      source: dirs.controlHostPath,
      options: ["rbind", "ro", "nosuid", "nodev", "noexec"],
    },
  ];
}

/** Open files limit in AWS Lambda. */
const NOFILE = 1024;

/**
 * Builds the OCI runtime spec of a worker: image defaults overridden by the
 * worker spec, read-only root with a writable /tmp (the caller's disk folder, else
 * a tmpfs), memory (= swap, so no swapping; memorySize + the platform's allowance
 * when the function has its own memory cgroup, which is then mounted at
 * FUNCTION_CGROUP_PATH and named in ESB_FUNCTION_CGROUP), CPU shares and pids limits, no capabilities, no new privileges,
 * the worker seccomp allowlist ({@link workerSeccompProfile}), the image user or
 * else the unprivileged sandbox user ({@link workerUser}), the caller's network
 * namespace and fresh pid/ipc/uts/mount namespaces. No AppArmor profile
 * (`process.apparmorProfile`): it must name a profile loaded on the node, and the
 * kernels ESB is built and tested on have no AppArmor.
 */
export function buildWorkerSpec(spec: WorkerSpec, image: PreparedImage, ctx: SpecContext): OciRuntimeSpec {
  const args = spec.args?.length ? spec.args : [...image.config.entrypoint, ...image.config.cmd];
  if (args.length === 0)
    throw new Error(`worker ${spec.id}: no command (image ${image.ref} has no entrypoint or cmd)`);
  const env = workerProcessEnv(spec, image, ctx.functionCgroupDir !== undefined);
  if (ctx.sandbox) env.ESB_SANDBOX_CONTROL = SANDBOX_CONTROL_PATH;
  // The function's own limit is its child cgroup's; the worker's adds ESB's processes.
  const memoryBytes =
    (spec.memoryMb + (ctx.functionCgroupDir ? (spec.platformMemoryMb ?? 0) : 0)) * 1024 * 1024;
  const noCaps = { bounding: [], effective: [], permitted: [], inheritable: [], ambient: [] };
  const user = workerUser(image.config.user);
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user,
      args,
      env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      cwd: spec.workingDir || image.config.workingDir || "/",
      capabilities: noCaps,
      rlimits: [{ type: "RLIMIT_NOFILE", hard: NOFILE, soft: NOFILE }],
      noNewPrivileges: true,
    },
    root: { path: "rootfs", readonly: true },
    hostname: spec.id.slice(0, 63),
    mounts: [
      { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
      {
        destination: "/dev",
        type: "tmpfs",
        source: "tmpfs",
        options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
      },
      {
        destination: "/dev/pts",
        type: "devpts",
        source: "devpts",
        options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
      },
      {
        destination: "/dev/shm",
        type: "tmpfs",
        source: "shm",
        options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
      },
      {
        destination: "/dev/mqueue",
        type: "mqueue",
        source: "mqueue",
        options: ["nosuid", "noexec", "nodev"],
      },
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
      {
        destination: "/sys/fs/cgroup",
        type: "cgroup",
        source: "cgroup",
        options: ["nosuid", "noexec", "nodev", "relatime", "ro"],
      },
      ctx.tmpHostPath
        ? // Disk, not memory: the folder is made owned by the worker user, mode 1777.
          {
            destination: "/tmp",
            type: "bind",
            source: ctx.tmpHostPath,
            options: ["rbind", "rw", "nosuid", "nodev"],
          }
        : {
            destination: "/tmp",
            type: "tmpfs",
            source: "tmpfs",
            // Owned by the worker user: runc gives a tmpfs the mode of the image's own /tmp
            // (0755 in some images), which would leave a non-root worker without a writable /tmp.
            options: [
              "nosuid",
              "nodev",
              `size=${spec.tmpMb}m`,
              "mode=1777",
              `uid=${user.uid}`,
              `gid=${user.gid}`,
            ],
          },
      ...(ctx.functionCgroupDir
        ? [
            {
              destination: FUNCTION_CGROUP_PATH,
              type: "bind",
              source: ctx.functionCgroupDir,
              // Read-write for cgroup.procs only (the one file the worker user owns).
              options: ["rbind", "rw", "nosuid", "nodev", "noexec"],
            },
          ]
        : []),
      ...(ctx.sandbox ? sandboxMounts(ctx.sandbox) : []),
      ...(spec.mounts ?? []).map((m) => ({
        destination: m.containerPath,
        type: "bind",
        source: m.hostPath,
        options: ["rbind", "ro", "nosuid", "nodev"],
      })),
    ],
    linux: {
      cgroupsPath: `${ctx.cgroupParent}/${spec.id}`,
      resources: {
        devices: [{ allow: false, access: "rwm" }],
        memory: { limit: memoryBytes, swap: memoryBytes },
        cpu: { shares: cpuSharesFor(spec.memoryMb) },
        ...(spec.pidsLimit ? { pids: { limit: spec.pidsLimit } } : {}),
      },
      namespaces: [
        { type: "pid" },
        { type: "ipc" },
        { type: "uts" },
        { type: "mount" },
        { type: "network", path: ctx.netnsPath },
      ],
      maskedPaths: [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
      ],
      readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
      seccomp: workerSeccompProfile(),
    },
  };
}
