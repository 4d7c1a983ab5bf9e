import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { createLogger, type Logger } from "@esb/common";
import { readOciImage } from "./oci-image-writer.js";
import {
  planRuntimeImage,
  writeRuntimeImage,
  type RuntimeImage,
  type RuntimeImageOptions,
} from "./runtime-image-builder.js";

/** Default cache directory: `$ESB_IMAGE_CACHE_DIR` or ~/.cache/esb/images. */
export function defaultImageCacheDir(): string {
  return process.env.ESB_IMAGE_CACHE_DIR ?? join(homedir(), ".cache", "esb", "images");
}

/**
 * A cache of runtime images as OCI layouts, one directory per
 * `<runtime>-<fingerprint>`: an image is built only when one of its inputs
 * (worker files, Node binary and libraries, busybox, builder version, layer
 * options) changed. Safe against concurrent builders: each builds into a
 * private directory and renames it into place; the first one wins.
 */
export class RuntimeImageStore {
  private readonly log: Logger;

  /** @param dir cache directory (default {@link defaultImageCacheDir}). */
  constructor(
    readonly dir: string = defaultImageCacheDir(),
    logger?: Logger,
  ) {
    this.log = logger ?? createLogger("runtime-image-store");
  }

  /**
   * Returns the runtime image for `options` (see `buildRuntimeImage`),
   * building it if the cache has no image with the same fingerprint.
   * `cached` tells whether it came from the cache.
   */
  async get(options: RuntimeImageOptions): Promise<RuntimeImage & { cached: boolean }> {
    const plan = await planRuntimeImage(options);
    const layoutDir = join(this.dir, `${plan.runtime}-${plan.fingerprint.slice(0, 16)}`);
    if (existsSync(join(layoutDir, "index.json"))) {
      const image = await readOciImage(layoutDir);
      this.log.debug({ runtime: plan.runtime, layoutDir }, "runtime image from cache");
      return { ...image, runtime: plan.runtime, fingerprint: plan.fingerprint, cached: true };
    }
    await mkdir(this.dir, { recursive: true });
    const tmp = join(this.dir, `.build-${plan.runtime}-${randomBytes(6).toString("hex")}`);
    try {
      const started = Date.now();
      await writeRuntimeImage(plan, tmp, options);
      try {
        await rename(tmp, layoutDir);
      } catch (err) {
        // Another builder finished first: its image is identical (same fingerprint).
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== "ENOTEMPTY" && code !== "EEXIST") throw err;
      }
      this.log.info({ runtime: plan.runtime, layoutDir, ms: Date.now() - started }, "runtime image built");
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
    const image = await readOciImage(layoutDir);
    return { ...image, runtime: plan.runtime, fingerprint: plan.fingerprint, cached: false };
  }
}
