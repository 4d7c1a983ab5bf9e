import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it, expect, afterEach } from "@jest/globals";
import { CgroupFreezer } from "./cgroup-freezer.js";

/**
 * The freezer against the real kernel, both interfaces: the v1 freezer hierarchy
 * (/sys/fs/cgroup, where it is mounted) and cgroup v2's cgroup.freeze (the unified
 * hierarchy: /sys/fs/cgroup/unified on a hybrid host, /sys/fs/cgroup on a v2 one).
 * A busy shell child is moved into a cgroup of this test; the kernel's own files
 * say whether it is frozen.
 */
const V1_ROOT = "/sys/fs/cgroup";
const hasV1 = existsSync(join(V1_ROOT, "freezer", "cgroup.procs"));
const V2_ROOT = existsSync("/sys/fs/cgroup/unified/cgroup.procs")
  ? "/sys/fs/cgroup/unified"
  : "/sys/fs/cgroup";
const hasV2 = existsSync(join(V2_ROOT, "cgroup.controllers"));

const cases: [string, string, string, boolean][] = [
  ["v1 (freezer.state)", V1_ROOT, join(V1_ROOT, "freezer"), hasV1],
  ["v2 (cgroup.freeze)", V2_ROOT, V2_ROOT, hasV2 && !(hasV1 && V2_ROOT === V1_ROOT)],
];

describe.each(cases)("CgroupFreezer %s", (_name, root, hierarchy, available) => {
  const run = Math.random().toString(36).slice(2, 8);
  const cgroup = `/esb-freezer-test-${run}`;
  const child = `${cgroup}/function`;
  const procs: ChildProcess[] = [];

  afterEach(async () => {
    const freezer = new CgroupFreezer(root);
    // Thawed before the kill: a frozen process cannot act on SIGKILL.
    for (const cg of [child, cgroup]) {
      try {
        await freezer.kind();
        freezer.thaw(cg);
      } catch {
        // not made
      }
    }
    for (const p of procs.splice(0)) {
      p.kill("SIGKILL");
      await new Promise((r) =>
        p.exitCode !== null || p.signalCode !== null ? r(undefined) : p.once("exit", r),
      );
    }
    for (const cg of [child, cgroup]) await rmdir(join(hierarchy, cg)).catch(() => undefined);
  });

  const busyIn = async (cg: string): Promise<number> => {
    const p = spawn("/bin/sh", ["-c", "while :; do :; done"], { stdio: "ignore" });
    procs.push(p);
    await writeFile(join(hierarchy, cg, "cgroup.procs"), String(p.pid));
    return p.pid!;
  };
  const waitForState = async (pid: number, want: string) => {
    for (let i = 0; i < 200 && (await schedState(pid)) !== want; i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(await schedState(pid)).toBe(want);
  };
  const cpuTicks = async (pid: number) =>
    (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1].split(" ")[11];
  const schedState = async (pid: number) =>
    /^State:\s+(\S)/m.exec(await readFile(`/proc/${pid}/status`, "utf8"))?.[1];

  (available ? it : it.skip)("freezes a cgroup and the one below it, reports it, and thaws it", async () => {
    await mkdir(join(hierarchy, child), { recursive: true });
    const parentPid = await busyIn(cgroup);
    const childPid = await busyIn(child);
    const freezer = new CgroupFreezer(root);
    expect(await freezer.kind()).toBe(root === hierarchy ? "v2" : "v1");
    expect(await freezer.state(cgroup)).toBe("thawed");

    await freezer.freeze(cgroup);
    expect(await freezer.state(cgroup)).toBe("frozen");
    // Both processes, the one in the child cgroup too, are stopped by the kernel's freezer:
    // v1 parks them uninterruptibly (D); v2's frozen tasks sleep (S), but a child here
    // sometimes read R right after the freeze, so on v2 the cgroup.events files count.
    // Either way a busy loop's CPU time stands still.
    const cpu = [await cpuTicks(parentPid), await cpuTicks(childPid)];
    if (root !== hierarchy) {
      expect(await schedState(parentPid)).toBe("D");
      expect(await schedState(childPid)).toBe("D");
    }
    await new Promise((r) => setTimeout(r, 100));
    expect([await cpuTicks(parentPid), await cpuTicks(childPid)]).toEqual(cpu);
    if (root !== hierarchy) {
      expect((await readFile(join(hierarchy, cgroup, "freezer.state"), "utf8")).trim()).toBe("FROZEN");
    } else {
      expect(await readFile(join(hierarchy, cgroup, "cgroup.events"), "utf8")).toMatch(/^frozen 1$/m);
      expect(await readFile(join(hierarchy, child, "cgroup.events"), "utf8")).toMatch(/^frozen 1$/m);
    }

    freezer.thaw(cgroup);
    expect(await freezer.state(cgroup)).toBe("thawed");
    // Runnable again: a busy loop is running or waiting for a core (R), not parked.
    await waitForState(parentPid, "R");
    await waitForState(childPid, "R");
  });

  (available ? it : it.skip)("says a missing cgroup is missing", async () => {
    const freezer = new CgroupFreezer(root);
    await freezer.kind();
    expect(await freezer.state(`/esb-freezer-test-missing-${run}`)).toBeUndefined();
    let thawError: unknown;
    try {
      freezer.thaw(`/esb-freezer-test-missing-${run}`);
    } catch (err) {
      thawError = err;
    }
    expect(thawError).toMatchObject({ code: "ENOENT" });
    await expect(freezer.freeze(`/esb-freezer-test-missing-${run}`)).rejects.toMatchObject({
      code: "ENOENT",
    });
  });
});
