import { createHash } from "node:crypto";
import { renameSync, writeFileSync } from "node:fs";
import { mkdir, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { run } from "../network/exec.js";

/** Name of the file a sandbox's emulator waits for (runtime/src/sandbox-standby.ts SPECIALISE_FILE). */
export const SPECIALISE_FILE = "specialise.json";

/** Host folders of one generic sandbox. */
export interface SandboxDirs {
  /** Mounted (recursive slave) at /var/task: a shared mount point the code is mounted on later. */
  taskHostPath: string;
  /** Mounted read-only at the sandbox's control path: where the specialisation is written. */
  controlHostPath: string;
}

/**
 * The host side of generic sandboxes (see Runtime.specialiseWorker), one folder per
 * sandbox under `dir` (on the node's disk, in the agent's mount namespace, which must
 * propagate to the container engine's: a hostPath with Bidirectional propagation in
 * Kubernetes):
 * - `task/`: bind-mounted on itself and made a shared mount before the container exists;
 *   the container's /var/task is its slave, so a mount made on it later appears there;
 * - `.code/<hash>` (shared by the sandboxes of one code folder): a bind of the function's code
 *   remounted read-only; bound from there onto `task/`, the copy the worker receives is
 *   read-only too (a remount itself would not propagate);
 * - `control/`: the specialisation file, written atomically (temp file + rename).
 * {@link release} unmounts and removes all of it; it is idempotent.
 */
export class SandboxMounts {
  /** Read-only copies of code folders, by code folder. */
  private readonly copies = new Map<string, Promise<string>>();
  /** The copy each specialised sandbox's code came from. */
  private readonly users = new Map<string, string>();
  private queue: Promise<void> = Promise.resolve();

  /** @param dir folder of the per-sandbox folders, e.g. `<stateDir>/sandboxes`. */
  constructor(readonly dir: string) {}

  private paths(id: string): { root: string; task: string; control: string } {
    const root = join(this.dir, id);
    return { root, task: join(root, "task"), control: join(root, "control") };
  }

  /** Makes sandbox `id`'s folders and its shared /var/task mount point; on failure what was made is removed. */
  async prepare(id: string): Promise<SandboxDirs> {
    const p = this.paths(id);
    try {
      for (const d of [p.task, p.control]) await mkdir(d, { recursive: true, mode: 0o755 });
      await run("mount", ["--bind", p.task, p.task]);
      await run("mount", ["--make-shared", p.task]);
    } catch (err) {
      await this.release(id).catch(() => undefined);
      throw err;
    }
    return { taskHostPath: p.task, controlHostPath: p.control };
  }

  /** True when `id` has sandbox folders (it was started as a generic sandbox). */
  async has(id: string): Promise<boolean> {
    try {
      await stat(this.paths(id).control);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Makes `codeDir` appear read-only at the sandbox's /var/task: one `mount --bind` of the
   * code's read-only copy (made once per code folder, see {@link readOnlyCopy}) onto the
   * shared task folder. The worker's mount is a copy of its own, independent of the source.
   */
  mountCode(id: string, codeDir: string): Promise<void> {
    return this.serial(async () => {
      const source = await this.readOnlyCopy(codeDir);
      this.users.set(id, source);
      await run("mount", ["--bind", source, this.paths(id).task]);
    });
  }

  /** Writes the specialisation (the worker's whole environment) for the sandbox's emulator. */
  writeSpecialisation(id: string, env: Record<string, string>): void {
    const file = join(this.paths(id).control, SPECIALISE_FILE);
    // Synchronous: a small file on the critical path of a cold start, where the thread pool's
    // queue (busy with other files under load) costs more than the write. Readable by the
    // worker's (non-root) user; only root writes the folder.
    writeFileSync(`${file}.tmp`, JSON.stringify({ env }), { mode: 0o644 });
    renameSync(`${file}.tmp`, file);
  }

  /**
   * A read-only bind of `codeDir` under `<dir>/.code/`, made on first use (a bind, then its
   * read-only remount: binding a read-only mount gives a read-only mount, which a remount
   * alone would not propagate). Kept while a sandbox uses it; see {@link release}.
   */
  private readOnlyCopy(codeDir: string): Promise<string> {
    let copy = this.copies.get(codeDir);
    if (!copy) {
      const path = join(this.dir, ".code", createHash("sha256").update(codeDir).digest("hex").slice(0, 24));
      copy = (async () => {
        await mkdir(path, { recursive: true, mode: 0o755 });
        if (!(await mountsUnder(path)).includes(path)) {
          await run("/bin/sh", [
            "-c",
            'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2"',
            "esb-sandbox-code",
            codeDir,
            path,
          ]);
        }
        return path;
      })();
      this.copies.set(codeDir, copy);
      copy.catch(() => this.copies.delete(codeDir));
    }
    return copy;
  }

  /**
   * Unmounts the read-only code copies no sandbox uses (the workers' own mounts stay: they
   * are copies). At start, with no sandbox in use, all of them.
   */
  sweepCodeCopies(): Promise<void> {
    // Serialised with mountCode: a copy is never unmounted between its lookup and its use.
    return this.serial(async () => {
      const inUse = new Set(this.users.values());
      for (const point of await mountsUnder(join(this.dir, ".code"))) {
        if (inUse.has(point)) continue;
        await run("umount", ["-l", point]).catch(() => undefined);
        for (const [dir, copy] of this.copies) {
          if ((await copy.catch(() => "")) === point) this.copies.delete(dir);
        }
      }
    });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.then(
      () => undefined,
      () => undefined,
    );
    return next;
  }

  /** Unmounts and removes sandbox `id`'s folders (call once its container is gone). Idempotent. */
  async release(id: string): Promise<void> {
    const p = this.paths(id);
    if (this.users.delete(id) && this.users.size === 0) await this.sweepCodeCopies();
    if (!(await exists(p.root))) return;
    // The code is stacked on the task folder's own bind: one unmount per layer, deepest first,
    // a few rounds. Lazy: the container (the only other user) is gone already.
    let left = await mountsUnder(p.root);
    for (let round = 0; round < 4 && left.length > 0; round++) {
      for (const point of left.sort((a, b) => b.length - a.length)) {
        await run("umount", ["-l", point]).catch(() => undefined);
      }
      left = await mountsUnder(p.root);
    }
    // Never remove through a mount: that would delete the function's code.
    if (left.length > 0) throw new Error(`sandbox ${id}: still mounted: ${left.join(", ")}`);
    await rm(p.root, { recursive: true, force: true });
  }
}

/** Mount points at or under `root` in the agent's mount namespace. */
async function mountsUnder(root: string): Promise<string[]> {
  const text = await readFile("/proc/self/mountinfo", "utf8");
  const out: string[] = [];
  for (const line of text.split("\n")) {
    // Field 5 is the mount point, with spaces and the like octal-escaped.
    const point = line
      .split(" ")[4]
      ?.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (point && (point === root || point.startsWith(`${root}/`))) out.push(point);
  }
  return out;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
