import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { cp, lstat, mkdir, readdir, readlink, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";

/**
 * Content-addressed, read-only-by-convention copies of standalone `code.path` folders, one per
 * distinct content, under `root/<hash>`. A function's workers mount its snapshot, not the live
 * folder: one revision is one version of the code, so an edit becomes a new revision (the hash is
 * part of the path the revision is computed from) instead of reaching only the next cold starts.
 */
export class CodeSnapshots {
  // Live folder → the cheap stat listing it had and the snapshot made from it, so an unchanged
  // folder is not read again on every rescan.
  private readonly known = new Map<string, { listing: string; path: string }>();
  // Snapshot path → when it stopped being used (absent: in use or never seen unused).
  private readonly unusedSince = new Map<string, number>();

  constructor(private readonly root: string) {}

  /**
   * The snapshot of `dir` as it is now (made when its content is new). Symbolic links are copied
   * as links, never followed, so a link keeps meaning what it meant in the live mount (resolved
   * inside the worker, not on this host).
   */
  async snapshot(dir: string): Promise<string> {
    const listing = await statListing(dir);
    const known = this.known.get(dir);
    if (known && known.listing === listing) {
      try {
        await stat(known.path);
        return known.path;
      } catch {
        // removed behind our back: make it again
      }
    }
    const hash = await contentHash(dir);
    const path = join(this.root, hash);
    try {
      await stat(path);
    } catch {
      await mkdir(this.root, { recursive: true });
      const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
      await cp(dir, tmp, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
      await rename(tmp, path).catch(async (err: NodeJS.ErrnoException) => {
        await rm(tmp, { recursive: true, force: true });
        // Another scan made the same snapshot first: same content, keep theirs.
        if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
      });
    }
    this.known.set(dir, { listing, path });
    return path;
  }

  /**
   * Removes snapshots that no path in `inUse` names and that have been unused for `graceMs`
   * (workers of the previous revision may still run on them until they drain; 0 removes at once).
   * Returns the removed paths.
   */
  async prune(inUse: Set<string>, graceMs: number, now = Date.now()): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch {
      return [];
    }
    const removed: string[] = [];
    for (const name of names) {
      const path = join(this.root, name);
      if (inUse.has(path)) {
        this.unusedSince.delete(path);
        continue;
      }
      const since = this.unusedSince.get(path) ?? now;
      this.unusedSince.set(path, since);
      if (now - since < graceMs) continue;
      await rm(path, { recursive: true, force: true });
      this.unusedSince.delete(path);
      for (const [dir, k] of this.known) if (k.path === path) this.known.delete(dir);
      removed.push(path);
    }
    return removed;
  }
}

interface Item {
  rel: string;
  kind: "file" | "dir" | "link";
  mode: number;
  size: number;
  mtimeMs: number;
  abs: string;
}

async function walk(dir: string): Promise<Item[]> {
  const out: Item[] = [];
  const visit = async (abs: string, rel: string): Promise<void> => {
    const entries = (await readdir(abs)).sort();
    for (const name of entries) {
      const a = join(abs, name);
      const r = rel ? `${rel}/${name}` : name;
      const s = await lstat(a);
      const kind = s.isSymbolicLink() ? "link" : s.isDirectory() ? "dir" : s.isFile() ? "file" : undefined;
      if (!kind) continue; // sockets, fifos, devices are not code
      out.push({ rel: r, kind, mode: s.mode & 0o7777, size: s.size, mtimeMs: s.mtimeMs, abs: a });
      if (kind === "dir") await visit(a, r);
    }
  };
  await visit(dir, "");
  return out;
}

/** Names, kinds, modes, sizes and mtimes of everything under `dir`: changes whenever an edit does. */
async function statListing(dir: string): Promise<string> {
  const items = await walk(dir);
  return items.map((i) => `${i.rel}\0${i.kind}\0${i.mode}\0${i.size}\0${i.mtimeMs}`).join("\n");
}

/** sha256 (32 hex digits) of the names, kinds, modes, link targets and file contents under `dir`. */
export async function contentHash(dir: string): Promise<string> {
  const hash = createHash("sha256");
  for (const i of await walk(dir)) {
    hash.update(`${i.rel}\0${i.kind}\0${i.mode.toString(8)}\0`);
    if (i.kind === "link") hash.update(await readlink(i.abs));
    if (i.kind === "file") {
      hash.update(`${i.size}\0`);
      for await (const chunk of createReadStream(i.abs)) hash.update(chunk as Buffer);
    }
    hash.update("\n");
  }
  return hash.digest("hex").slice(0, 32);
}
