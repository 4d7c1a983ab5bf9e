import { readdir, rm } from "node:fs/promises";
import { join, sep } from "node:path";
import type { Logger } from "@esb/common";

/**
 * Removes the agent's staged code folders (`stateDir/code/<hash>`, content-addressed and shared by
 * every function with the same code) once no function uses them any more, so code does not pile
 * up in the state directory after functions are removed or given new code.
 *
 * A folder is in use while a prepared function's record names it (`inUse()`), or while it is
 * pinned: a destroyed function's busy workers, or the previous revision's workers, still have it
 * mounted until they drain. Folders outside `root` (a standalone `code.hostPath`) are never touched.
 */
export class StagedCodeCollector {
  private readonly pins = new Map<string, number>();
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

  /** True when `dir` is one of the folders this collector manages (directly under `root`). */
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
    if (this.pins.has(dir)) return false;
    for (const d of this.inUse()) if (d === dir) return false;
    try {
      await rm(dir, { recursive: true, force: true });
      this.log.info({ dir }, "removed staged code no function uses");
      return true;
    } catch (err) {
      this.log.warn(
        { dir, err: (err as Error).message },
        "cannot remove staged code; the next sweep retries",
      );
      return false;
    }
  }
}
