import { createHash, randomBytes } from "node:crypto";
import { chmod, mkdir, readdir, rename, rm, writeFile } from "node:fs/promises";
import { dirname, isAbsolute, join, normalize, sep } from "node:path";
import type { Logger } from "@esb/common";
import { InvalidFunctionSpecError } from "./pool/pool-errors.js";

/** A staged code folder held for the caller until it has recorded its use; see {@link StagedCodeStore.stage}. */
export interface StagedCodeHold {
  /** The staged folder (`root/<hash>`). */
  dir: string;
  /** Ends the hold; call once the function's record names `dir` (or the prepare failed). */
  release(): Promise<void>;
}

/**
 * The agent's staged code folders (`stateDir/code/<hash>`, content-addressed and shared by every
 * function with the same code): writes them ({@link stage}) and removes them once no function uses
 * them any more, so code does not pile up in the state directory after functions are removed or
 * given new code.
 *
 * A folder is in use while a prepared function's record names it (`inUse()`), or while it is
 * pinned: a destroyed function's busy workers, or the previous revision's workers, still have it
 * mounted until they drain. Folders outside `root` (a standalone `code.hostPath`) are never touched.
 */
export class StagedCodeStore {
  private readonly pins = new Map<string, number>();
  /** Removals in progress, by folder. */
  private readonly removing = new Map<string, Promise<boolean>>();
  private readonly timers = new Set<NodeJS.Timeout>();

  /**
   * @param root the folder staged code lives in (`stateDir/code`).
   * @param inUse the staged folders prepared functions use now.
   */
  constructor(
    readonly root: string,
    private readonly inUse: () => Iterable<string | undefined>,
    private readonly log: Logger,
  ) {}

  /**
   * Writes inline code files into their content-addressed folder (reused when it exists) and
   * holds it until the caller releases the hold: a function with the same code being destroyed
   * meanwhile must not remove a folder this prepare is about to record. Throws
   * InvalidFunctionSpecError for a file path that leaves /var/task.
   */
  async stage(files: Record<string, Uint8Array>): Promise<StagedCodeHold> {
    const names = Object.keys(files).sort();
    const hash = createHash("sha256");
    // The mode is part of the key: a folder staged with other modes is never reused.
    for (const n of names) {
      hash.update(`${n}\0${files[n].length}\0${codeFileMode(n).toString(8)}\0`);
      hash.update(files[n]);
    }
    const dir = join(this.root, hash.digest("hex").slice(0, 32));
    this.pin(dir);
    const hold = { dir, release: () => this.unpin(dir) };
    // A removal of the same folder that began before the pin: let it finish, then stage anew.
    await this.removing.get(dir);
    try {
      await readdir(dir);
      return hold; // already staged
    } catch {
      // stage it below
    }
    try {
      await writeFolder(dir, files, names);
      return hold;
    } catch (err) {
      await hold.release();
      throw err;
    }
  }

  /** True when `dir` is one of the folders this store manages (directly under `root`). */
  manages(dir: string | undefined): dir is string {
    return !!dir && dir.startsWith(`${this.root}${sep}`) && !dir.slice(this.root.length + 1).includes(sep);
  }

  /** Keeps `dir` while workers that mount it drain; undo with {@link unpin}. */
  pin(dir: string | undefined): void {
    if (this.manages(dir)) this.pins.set(dir, (this.pins.get(dir) ?? 0) + 1);
  }

  /** Ends one {@link pin} of `dir` and removes it at once when nothing else uses it. */
  async unpin(dir: string | undefined): Promise<void> {
    if (!this.manages(dir)) return;
    const n = (this.pins.get(dir) ?? 1) - 1;
    if (n > 0) this.pins.set(dir, n);
    else this.pins.delete(dir);
    await this.removeIfUnused(dir);
  }

  /**
   * `dir` stopped being a function's code (a new revision has other code): pinned for `drainMs`
   * (the longest a worker of the old revision can still be busy), then removed when unused.
   */
  retire(dir: string | undefined, drainMs: number): void {
    if (!this.manages(dir)) return;
    this.pin(dir);
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      void this.unpin(dir);
    }, drainMs);
    timer.unref();
    this.timers.add(timer);
  }

  /** Removes every folder under `root` that nothing uses, and staging leftovers (`*.tmp-*`) of a crash. Returns what it removed. */
  async sweep(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch {
      return [];
    }
    const removed: string[] = [];
    for (const name of names) {
      const dir = join(this.root, name);
      if (await this.removeIfUnused(dir)) removed.push(dir);
    }
    return removed;
  }

  /** Stops pending retirements (their folders are left for the next {@link sweep}). */
  close(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private async removeIfUnused(dir: string): Promise<boolean> {
    if (this.pins.has(dir) || this.removing.has(dir)) return false;
    for (const d of this.inUse()) if (d === dir) return false;
    // Registered in the same tick as the checks above: a stage() of this code from now on
    // waits for the removal to finish instead of finding a half-removed folder.
    const removal = rm(dir, { recursive: true, force: true }).then(
      () => {
        this.log.info({ dir }, "removed staged code no function uses");
        return true;
      },
      (err: unknown) => {
        this.log.warn(
          { dir, err: (err as Error).message },
          "cannot remove staged code; the next sweep retries",
        );
        return false;
      },
    );
    this.removing.set(dir, removal);
    try {
      return await removal;
    } finally {
      this.removing.delete(dir);
    }
  }
}

/** Writes `files` to a temporary folder beside `dir` and renames it into place (a concurrent stage of the same code wins harmlessly). */
async function writeFolder(dir: string, files: Record<string, Uint8Array>, names: string[]): Promise<void> {
  // Unique per call: two functions with the same code may stage it at the same moment.
  const tmp = `${dir}.tmp-${randomBytes(8).toString("hex")}`;
  const dirs = new Set<string>();
  try {
    for (const n of names) {
      const rel = normalize(n);
      if (isAbsolute(rel) || rel.startsWith("..") || rel === ".") {
        throw new InvalidFunctionSpecError(
          `code file path "${n}" must be relative to /var/task and stay inside it`,
        );
      }
      await mkdir(dirname(join(tmp, rel)), { recursive: true });
      await writeFile(join(tmp, rel), files[n], { mode: codeFileMode(rel) });
      // chmod, unlike the modes above, ignores the agent's umask: workers read /var/task as another user (993).
      await chmod(join(tmp, rel), codeFileMode(rel));
      for (let d = dirname(join(tmp, rel)); d.startsWith(tmp); d = dirname(d)) dirs.add(d);
    }
    for (const d of dirs) await chmod(d, 0o755);
    await rename(tmp, dir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "ENOTEMPTY" && code !== "EEXIST") throw err;
  }
}

/**
 * Mode of a staged code file: a custom runtime's `bootstrap` (and shell
 * scripts) must be executable, as in the zip files AWS accepts; the rest is
 * read-only data.
 */
function codeFileMode(name: string): number {
  return name === "bootstrap" || name.endsWith("/bootstrap") || name.endsWith(".sh") ? 0o755 : 0o644;
}
