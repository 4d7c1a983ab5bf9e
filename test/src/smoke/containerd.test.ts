// Proves the test containerd is real: it runs a container through runc and
// hands back the container's output.
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { execFile } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { testContainerdSocket } from "../env/dev-env.js";

const run = promisify(execFile);
const namespace = "esb-smoke";

describe("test containerd", () => {
  let socket = "";
  let rootfs = "";
  const id = `smoke-${process.pid}-${Date.now()}`;

  const ctr = (...args: string[]) =>
    run("ctr", ["--address", socket, "-n", namespace, ...args], { timeout: 60_000 });

  beforeAll(() => {
    socket = testContainerdSocket();
    // A one-file root filesystem: the statically linked busybox (Debian busybox-static).
    rootfs = mkdtempSync(join(tmpdir(), "esb-smoke-rootfs-"));
    mkdirSync(join(rootfs, "bin"));
    copyFileSync(realpathSync("/bin/busybox"), join(rootfs, "bin", "busybox"));
  });

  afterAll(async () => {
    // Nothing to clean when beforeAll failed (no containerd).
    if (!socket || !rootfs) return;
    await ctr("tasks", "kill", "-s", "SIGKILL", id).catch(() => undefined);
    await ctr("tasks", "delete", "-f", id).catch(() => undefined);
    await ctr("containers", "delete", id).catch(() => undefined);
    rmSync(rootfs, { recursive: true, force: true });
  });

  it("answers version requests on its own socket", async () => {
    const { stdout } = await ctr("version");
    expect(stdout).toMatch(/Server:\s+Version:/);
  });

  it("runs a container that prints to its stdout, in its own PID namespace", async () => {
    const { stdout } = await ctr(
      "run",
      "--rm",
      "--rootfs",
      rootfs,
      id,
      "/bin/busybox",
      "sh",
      "-c",
      "echo hello from containerd as pid $$",
    );
    expect(stdout.trim()).toBe("hello from containerd as pid 1");
    const { stdout: left } = await ctr("containers", "list", "-q");
    expect(left.split("\n")).not.toContain(id);
  });
});
