import { writeFileSync } from "node:fs";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** The kernel's freezer state of a cgroup, as {@link CgroupFreezer.state} reads it. */
export type FreezerState = "frozen" | "freezing" | "thawed";

/** Which kernel interface freezes a cgroup on this host. */
export type FreezerKind = "v1" | "v2";

/** The cgroup could not be frozen in time (a task kept it busy); it was thawed again. */
export class FreezeTimeoutError extends Error {
  override name = "FreezeTimeoutError";
}

/** How long {@link CgroupFreezer.freeze} waits for every task to freeze before it gives up. */
const FREEZE_TIMEOUT_MS = 2_000;

/**
 * Freezes and thaws cgroups by writing the kernel's freezer directly: the v1
 * `freezer` hierarchy's `freezer.state` where it is mounted (cgroup v1, and the
 * hybrid layout, where it is the freezer runc uses too), else cgroup v2's
 * `cgroup.freeze`. Both freeze every process of the cgroup and of the cgroups
 * below it. Paths are absolute in the hierarchy (e.g. `/esb/<worker id>`).
 *
 * Thawing is one small synchronous write (a few µs; no thread-pool round trip
 * on the thaw path); freezing waits until the kernel reports every task frozen.
 */
export class CgroupFreezer {
  private kindFound: FreezerKind | undefined;

  /** @param root where the cgroup hierarchies are mounted (default /sys/fs/cgroup). */
  constructor(private readonly root = "/sys/fs/cgroup") {}

  /**
   * The freezer interface of this host: `v1` when the v1 freezer hierarchy is
   * mounted, `v2` on a unified (cgroup v2 only) host. Throws when there is neither.
   */
  async kind(): Promise<FreezerKind> {
    if (this.kindFound) return this.kindFound;
    if (await exists(join(this.root, "freezer", "cgroup.procs"))) this.kindFound = "v1";
    else if (await exists(join(this.root, "cgroup.controllers"))) this.kindFound = "v2";
    else
      throw new Error(`no cgroup freezer under ${this.root} (neither a v1 freezer hierarchy nor cgroup v2)`);
    return this.kindFound;
  }

  /**
   * Freezes every process of `cgroup` and its children, and resolves once the
   * kernel reports the cgroup frozen. When the tasks do not all freeze within
   * 2 s, the cgroup is thawed again and {@link FreezeTimeoutError} is thrown
   * (its message says "unable to freeze", as runc's does: callers may retry).
   * Throws ENOENT-coded errors when the cgroup does not exist.
   */
  async freeze(cgroup: string): Promise<void> {
    const kind = await this.kind();
    await writeFile(this.controlFile(kind, cgroup), kind === "v1" ? "FROZEN" : "1");
    const deadline = Date.now() + FREEZE_TIMEOUT_MS;
    // The kernel does not notify (v1): poll, every millisecond at most, because a thaw
    // (an acquire) that arrives meanwhile waits for this freeze to settle.
    for (let polls = 0; ; polls++) {
      const state = await this.state(cgroup);
      if (state === "frozen") return;
      // Its tasks exited and the cgroup went with them (runc removes it): nothing to wait for.
      if (state === undefined) throw Object.assign(new Error(`cgroup ${cgroup} is gone`), { code: "ENOENT" });
      if (Date.now() > deadline) {
        this.thaw(cgroup);
        throw new FreezeTimeoutError(
          `unable to freeze cgroup ${cgroup}: its tasks did not all freeze within ${FREEZE_TIMEOUT_MS} ms`,
        );
      }
      await new Promise((r) => (polls < 3 ? setImmediate(r) : setTimeout(r, 1)));
    }
  }

  /**
   * Thaws `cgroup` (and its children). Synchronous on purpose: it is one write
   * to a kernel file on the thaw path of every paused invocation. Idempotent;
   * throws an ENOENT-coded error when the cgroup does not exist. Call
   * {@link kind} once before (the agent does at start).
   */
  thaw(cgroup: string): void {
    const kind = this.kindFound;
    if (!kind) throw new Error("CgroupFreezer.thaw before kind() was resolved");
    writeFileSync(this.controlFile(kind, cgroup), kind === "v1" ? "THAWED" : "0");
  }

  /**
   * The kernel's freezer state of `cgroup`, or undefined when it does not exist (or is being removed).
   * On v1, `freezing` while a freeze is in progress; on v2 a cgroup asked to
   * freeze whose tasks are not all frozen yet is `freezing` too.
   */
  async state(cgroup: string): Promise<FreezerState | undefined> {
    const kind = await this.kind();
    try {
      if (kind === "v1") {
        const s = (await readFile(join(this.root, "freezer", cgroup, "freezer.state"), "utf8")).trim();
        return s === "FROZEN" ? "frozen" : s === "FREEZING" ? "freezing" : "thawed";
      }
      const [wanted, events] = await Promise.all([
        readFile(join(this.root, cgroup, "cgroup.freeze"), "utf8"),
        readFile(join(this.root, cgroup, "cgroup.events"), "utf8"),
      ]);
      if (/^frozen 1$/m.test(events)) return "frozen";
      return wanted.trim() === "1" ? "freezing" : "thawed";
    } catch (err) {
      // ENODEV: the cgroup is being removed (its last task exited) while we read it.
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENODEV") return undefined;
      throw err;
    }
  }

  private controlFile(kind: FreezerKind, cgroup: string): string {
    return kind === "v1"
      ? join(this.root, "freezer", cgroup, "freezer.state")
      : join(this.root, cgroup, "cgroup.freeze");
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
