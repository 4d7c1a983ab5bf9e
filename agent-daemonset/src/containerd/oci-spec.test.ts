// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect } from "@jest/globals";
import type { PreparedImage, WorkerSpec } from "../runtime/runtime.js";
import { cpuSharesFor } from "../runtime/worker-resources.js";
import { DEFAULT_WORKER_USER } from "../sandbox/worker-user.js";
import { buildWorkerSpec } from "./oci-spec.js";

const image: PreparedImage = {
  ref: "r/x:1",
  digest: `sha256:${"b".repeat(64)}`,
  config: {
    entrypoint: ["/entry"],
    cmd: ["arg"],
    env: ["PATH=/bin", "A=image"],
    workingDir: "/app",
    user: "993:990",
  },
};
const spec: WorkerSpec = {
  id: "w1",
  image,
  labels: {},
  env: { A: "worker", B: "2" },
  memoryMb: 256,
  tmpMb: 512,
  pidsLimit: 100,
  mounts: [{ hostPath: "/srv/code", containerPath: "/var/task" }],
};

describe("buildWorkerSpec", () => {
  const s = buildWorkerSpec(spec, image, { netnsPath: "/run/netns/esb-w1", cgroupParent: "/esb" });

  it("runs the image's entrypoint + cmd as the image user with merged env", () => {
    expect(s.process.args).toEqual(["/entry", "arg"]);
    expect(s.process.user).toEqual({ uid: 993, gid: 990 });
    expect(s.process.cwd).toBe("/app");
    expect(s.process.env).toEqual(["PATH=/bin", "A=worker", "B=2"]);
    expect(
      buildWorkerSpec({ ...spec, args: ["/x"], workingDir: "/w" }, image, {
        netnsPath: "/n",
        cgroupParent: "/esb",
      }).process,
    ).toMatchObject({
      args: ["/x"],
      cwd: "/w",
    });
  });

  it("limits memory (no swap), CPU, pids and privileges", () => {
    expect(s.linux.resources.memory).toEqual({ limit: 256 * 1024 * 1024, swap: 256 * 1024 * 1024 });
    expect(s.linux.resources.cpu.shares).toBe(cpuSharesFor(256));
    expect(s.linux.resources.pids).toEqual({ limit: 100 });
    expect(s.process.capabilities.bounding).toEqual([]);
    expect(s.process.capabilities.effective).toEqual([]);
    expect(s.process.noNewPrivileges).toBe(true);
    expect(s.process.rlimits).toEqual([{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }]);
    expect(s.linux.cgroupsPath).toBe("/esb/w1");
  });

  it("has a read-only root, a sized /tmp, read-only binds and the given netns", () => {
    expect(s.root).toEqual({ path: "rootfs", readonly: true });
    expect(s.mounts.find((m) => m.destination === "/tmp")?.options).toEqual(
      // Owned by the worker user, so it is writable even when the image's /tmp is 0755.
      expect.arrayContaining(["size=512m", "mode=1777", "uid=993", "gid=990"]),
    );
    expect(s.mounts.find((m) => m.destination === "/var/task")).toMatchObject({
      type: "bind",
      source: "/srv/code",
      options: expect.arrayContaining(["ro", "rbind"]),
    });
    expect(s.linux.namespaces).toContainEqual({ type: "network", path: "/run/netns/esb-w1" });
    expect(s.linux.maskedPaths).toContain("/proc/kcore");
  });

  it("gives a function with its own memory cgroup the platform's allowance, the cgroup and a disk /tmp", () => {
    const ctx = {
      netnsPath: "/n",
      cgroupParent: "/esb",
      tmpHostPath: "/var/lib/esb/agent/containerd/.worker-tmp/w1",
      functionCgroupDir: "/sys/fs/cgroup/memory/esb/w1/function",
    };
    const f = buildWorkerSpec({ ...spec, platformMemoryMb: 96 }, image, ctx);
    // The worker holds the function (256) and ESB's emulator (96); the child cgroup holds 256.
    expect(f.linux.resources.memory).toEqual({ limit: 352 * 1024 * 1024, swap: 352 * 1024 * 1024 });
    expect(f.linux.resources.cpu.shares).toBe(cpuSharesFor(256));
    expect(f.mounts.find((m) => m.destination === "/tmp")).toEqual({
      destination: "/tmp",
      type: "bind",
      source: ctx.tmpHostPath,
      options: ["rbind", "rw", "nosuid", "nodev"],
    });
    expect(f.mounts.find((m) => m.destination === "/run/esb/function-memory")).toMatchObject({
      type: "bind",
      source: ctx.functionCgroupDir,
      options: expect.arrayContaining(["rw", "noexec", "nosuid", "nodev"]),
    });
    expect(f.process.env).toContain("ESB_FUNCTION_CGROUP=/run/esb/function-memory");
    // Without a function cgroup (cgroup v2 hosts) the allowance is not given: memorySize is the limit.
    const whole = buildWorkerSpec({ ...spec, platformMemoryMb: 96 }, image, {
      ...ctx,
      functionCgroupDir: undefined,
    });
    expect(whole.linux.resources.memory.limit).toBe(256 * 1024 * 1024);
    expect(whole.process.env.some((e) => e.startsWith("ESB_FUNCTION_CGROUP="))).toBe(false);
  });

  it("scales CPU shares with memory like Lambda, at least 2", () => {
    expect(cpuSharesFor(1769)).toBe(1024);
    expect(cpuSharesFor(128)).toBe(74);
    expect(cpuSharesFor(1)).toBe(2);
  });

  it("runs an image without a User as the unprivileged sandbox user, an explicit one as given", () => {
    const withUser = (user: string) => ({ ...image, config: { ...image.config, user } });
    const userOf = (user: string) =>
      buildWorkerSpec({ ...spec, image: withUser(user) }, withUser(user), {
        netnsPath: "/n",
        cgroupParent: "/esb",
      }).process.user;
    expect(userOf("")).toEqual({ uid: 993, gid: 990 });
    expect(userOf("")).toEqual(DEFAULT_WORKER_USER);
    expect(userOf("1000")).toEqual({ uid: 1000, gid: 1000 });
    expect(userOf("0")).toEqual({ uid: 0, gid: 0 });
    expect(() => userOf("sbx_user1051")).toThrow(/not numeric/);
  });

  it("applies the worker seccomp allowlist", () => {
    expect(s.linux.seccomp).toMatchObject({ defaultAction: "SCMP_ACT_ERRNO", defaultErrnoRet: 1 });
    expect(s.linux.seccomp.syscalls.find((r) => r.names.includes("clone3"))).toMatchObject({
      action: "SCMP_ACT_ERRNO",
      errnoRet: 38,
    });
  });

  it("refuses a worker without a command", () => {
    const bare = { ...image, config: { ...image.config, entrypoint: [], cmd: [] } };
    expect(() =>
      buildWorkerSpec({ ...spec, image: bare }, bare, { netnsPath: "/n", cgroupParent: "/esb" }),
    ).toThrow(/no command/);
  });
});
