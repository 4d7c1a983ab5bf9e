// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, expect, afterAll } from "@jest/globals";
import { acquireStackLocks, StackInUseError } from "./stack-lock.js";

const dir = mkdtempSync(join(tmpdir(), "esb-stack-lock-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const stack = { stateDir: "/var/lib/esb/a", bridge: "esb-a0", subnet: "10.88.0.0/16" };
// Another live process holds a claim: the test pretends every pid but its own is alive.
const othersAlive = (pid: number) => pid !== process.pid;

describe("one esb up per state folder, bridge and subnet", () => {
  it("refuses a second stack on the same state folder, bridge or subnet, naming the holder", () => {
    const first = acquireStackLocks(stack, dir);
    // Written by "another" esb up: the lock files now name a pid that is not ours.
    for (const f of readdirSync(dir)) writeFileSync(join(dir, f), "4242\n");
    for (const other of [
      { ...stack, bridge: "esb-b0", subnet: "10.89.0.0/16" },
      { ...stack, stateDir: "/var/lib/esb/b", subnet: "10.89.0.0/16" },
      { ...stack, stateDir: "/var/lib/esb/b", bridge: "esb-b0" },
    ]) {
      expect(() => acquireStackLocks(other, dir, othersAlive)).toThrow(StackInUseError);
    }
    expect(() => acquireStackLocks(stack, dir, othersAlive)).toThrow(
      /another esb up \(pid 4242\) is using the state folder \/var\/lib\/esb\/a; stop it first/,
    );
    // A refused attempt leaves the holder's claims in place.
    expect(readdirSync(dir)).toHaveLength(3);
    // The holder's release does not remove claims that are not its own.
    first.release();
    expect(readdirSync(dir)).toHaveLength(3);
    for (const f of readdirSync(dir)) rmSync(join(dir, f));
  });

  it("lets a stack beside it run on other resources, and the next one after release", () => {
    const a = acquireStackLocks(stack, dir);
    const b = acquireStackLocks(
      { stateDir: "/var/lib/esb/b", bridge: "esb-b0", subnet: "10.89.0.0/16" },
      dir,
    );
    a.release();
    b.release();
    expect(readdirSync(dir)).toEqual([]);
    acquireStackLocks(stack, dir).release();
  });

  it("takes over the claims of a stack that crashed (its pid is gone)", () => {
    const gone = spawnSync(process.execPath, [
      "-e",
      "process.stdout.write(String(process.pid))",
    ]).stdout.toString();
    const first = acquireStackLocks(stack, dir);
    for (const f of readdirSync(dir)) writeFileSync(join(dir, f), `${gone}\n`);
    const second = acquireStackLocks(stack, dir);
    second.release();
    first.release();
    expect(readdirSync(dir)).toEqual([]);
  });
});
