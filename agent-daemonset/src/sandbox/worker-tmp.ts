import { chmod, chown, mkdir, rm, statfs } from "node:fs/promises";
import { join } from "node:path";
import type { WorkerUser } from "./worker-user.js";

/** statfs type of tmpfs (linux/magic.h TMPFS_MAGIC). */
const TMPFS_MAGIC = 0x01021994;

/**
 * Per-worker `/tmp` folders on the agent's disk (`<dir>/<worker id>`), bind-mounted
 * read-write at the worker's /tmp: ephemeral storage, as in AWS Lambda, not memory.
 * A tmpfs /tmp would be charged to the worker's memory cgroup and could not be
 * reclaimed (there is no swap); files written here are page cache that the
 * kernel writes back and reclaims under the worker's memory limit.
 *
 * The folder's size is not enforced (a bind mount has no size of its own): the
 * function's ephemeralStorage is documented, not a quota (docs/worker-memory.md).
 */
export class WorkerTmpFolders {
  /** @param dir folder that holds the per-worker folders; must be on disk, not tmpfs. */
  constructor(readonly dir: string) {}

  /** True when {@link dir} is on a tmpfs, where /tmp would be memory again. Makes `dir`. */
  async onTmpfs(): Promise<boolean> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    return (await statfs(this.dir)).type === TMPFS_MAGIC;
  }

  /**
   * Makes the empty /tmp folder of worker `id`, owned by `user`, mode 1777 (as
   * /tmp is), and returns its host path. An existing one (a worker id reused after
   * a crash) is emptied first.
   */
  async create(id: string, user: WorkerUser): Promise<string> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const path = this.path(id);
    await rm(path, { recursive: true, force: true });
    await mkdir(path);
    await chown(path, user.uid, user.gid);
    await chmod(path, 0o1777);
    return path;
  }

  /** Removes worker `id`'s folder and all it holds; nothing when it is missing. */
  async remove(id: string): Promise<void> {
    await rm(this.path(id), { recursive: true, force: true });
  }

  /** Host path of worker `id`'s folder. */
  path(id: string): string {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(id)) throw new Error(`invalid worker id "${id}"`);
    return join(this.dir, id);
  }
}
