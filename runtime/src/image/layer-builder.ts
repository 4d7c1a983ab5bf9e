import { lstat, readdir, readlink } from "node:fs/promises";
import { statSync } from "node:fs";
import { join } from "node:path";
import type { TarEntry } from "./tar-writer.js";

/** Ownership and permission of an entry in a layer. */
export interface EntryOwner {
  uid?: number;
  gid?: number;
}

/**
 * Collects the files of one image layer under image paths (absolute, like
 * `/var/task/index.js`) and turns them into tar entries: sorted by path,
 * parents created implicitly (mode 0755, root-owned), later additions of the
 * same path replacing earlier ones. Host files are read only when the layer is
 * written.
 */
export class LayerBuilder {
  private readonly byPath = new Map<string, TarEntry>();

  /** Adds a directory (default mode 0755). */
  addDirectory(path: string, options: EntryOwner & { mode?: number } = {}): this {
    const p = normalizeImagePath(path);
    this.byPath.set(p, {
      type: "directory",
      path: p,
      mode: options.mode ?? 0o755,
      uid: options.uid,
      gid: options.gid,
    });
    return this;
  }

  /** Adds a file with the given bytes (default mode 0644). */
  addFile(path: string, content: Buffer | string, options: EntryOwner & { mode?: number } = {}): this {
    const p = normalizeImagePath(path);
    const data = typeof content === "string" ? Buffer.from(content, "utf8") : content;
    this.byPath.set(p, {
      type: "file",
      path: p,
      mode: options.mode ?? 0o644,
      content: data,
      uid: options.uid,
      gid: options.gid,
    });
    return this;
  }

  /**
   * Adds a host file (symlinks followed) at `path`; its mode defaults to the
   * host file's permission bits. The file must not change until the layer is written.
   */
  addHostFile(path: string, hostPath: string, options: EntryOwner & { mode?: number } = {}): this {
    const p = normalizeImagePath(path);
    const st = statSync(hostPath);
    if (!st.isFile()) throw new Error(`${hostPath} is not a regular file`);
    this.byPath.set(p, {
      type: "file",
      path: p,
      mode: options.mode ?? st.mode & 0o7777,
      sourcePath: hostPath,
      size: st.size,
      uid: options.uid,
      gid: options.gid,
    });
    return this;
  }

  /** Adds a symbolic link at `path` pointing to `target` (kept verbatim). */
  addSymlink(path: string, target: string, options: EntryOwner = {}): this {
    const p = normalizeImagePath(path);
    this.byPath.set(p, { type: "symlink", path: p, target, uid: options.uid, gid: options.gid });
    return this;
  }

  /**
   * Adds the contents of host directory `hostDir` under image directory
   * `imageDir`. Modes are normalised so the result does not depend on the
   * host's umask: directories 0755, files 0755 when any execute bit is set and
   * 0644 otherwise; symlinks are kept as links. Owner is root unless given.
   */
  async addHostTree(imageDir: string, hostDir: string, options: EntryOwner = {}): Promise<this> {
    const root = normalizeImagePath(imageDir);
    this.addDirectory(`/${root}`, options);
    const walk = async (hostSub: string, imageSub: string): Promise<void> => {
      const names = (await readdir(hostSub)).sort();
      for (const name of names) {
        const h = join(hostSub, name);
        const i = `${imageSub}/${name}`;
        const st = await lstat(h);
        if (st.isDirectory()) {
          this.addDirectory(i, options);
          await walk(h, i);
        } else if (st.isSymbolicLink()) {
          this.addSymlink(i, await readlink(h), options);
        } else if (st.isFile()) {
          this.addHostFile(i, h, { ...options, mode: st.mode & 0o111 ? 0o755 : 0o644 });
        }
        // Sockets, fifos and devices have no place in function code: skipped.
      }
    };
    await walk(hostDir, `/${root}`);
    return this;
  }

  /** Number of entries added explicitly. */
  get size(): number {
    return this.byPath.size;
  }

  /** The tar entries of the layer, parents first, in a deterministic order. */
  entries(): TarEntry[] {
    const all = new Map(this.byPath);
    for (const p of this.byPath.keys()) {
      const parts = p.split("/");
      for (let i = 1; i < parts.length; i++) {
        const parent = parts.slice(0, i).join("/");
        if (!all.has(parent)) all.set(parent, { type: "directory", path: parent, mode: 0o755 });
      }
    }
    return [...all.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, e]) => e);
  }
}

/** Turns an image path (`/var/task/x`) into a tar path (`var/task/x`); rejects `..` and empty paths. */
export function normalizeImagePath(path: string): string {
  const parts = path.split("/").filter((s) => s !== "" && s !== ".");
  if (parts.length === 0) throw new Error(`invalid image path "${path}": the root cannot be an entry`);
  if (parts.includes("..")) throw new Error(`invalid image path "${path}": ".." is not allowed`);
  return parts.join("/");
}
