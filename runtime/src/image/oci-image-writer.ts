import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { copyFile, link, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { LayerBuilder } from "./layer-builder.js";
import {
  Annotation,
  MediaType,
  type Descriptor,
  type HistoryEntry,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  type ImageRunConfig,
  type LayerDescriptor,
} from "./oci-types.js";
import { tarStream } from "./tar-writer.js";

/** How a layer blob is stored. */
export interface LayerWriteOptions {
  /** `gzip` (default; media type `…tar+gzip`) or `none` (media type `…tar`). */
  compression?: "gzip" | "none";
  /** zlib level 1–9 for gzip (default 1: the Node binary compresses ~2.5× faster than at 6 for ~9 % more bytes). */
  gzipLevel?: number;
  /** mtime of every entry, seconds since the epoch (default 0). */
  mtime?: number;
}

/** What {@link OciImageWriter.writeImage} is given. */
export interface ImageSpec {
  /** Layers bottom-up, as returned by {@link OciImageWriter.writeLayer} or {@link OciImageWriter.importLayer}. */
  layers: LayerDescriptor[];
  /** Runtime configuration (Env, Entrypoint, Cmd, WorkingDir, User…). */
  config: ImageRunConfig;
  /** One history entry per layer (same order); `created_by` defaults to "esb". */
  history?: HistoryEntry[];
  /** Tag stored as `org.opencontainers.image.ref.name` in index.json (default "latest"). */
  tag?: string;
  /** Full image name (e.g. `esb.local/runtime/nodejs24.x:latest`) stored as `io.containerd.image.name`, so `ctr images import` keeps it. */
  imageName?: string;
  /** `created` timestamp of the config (default the epoch, for reproducible digests). */
  created?: string;
  /** Manifest annotations. */
  annotations?: Record<string, string>;
}

/** An image written to a layout. */
export interface WrittenImage {
  layoutDir: string;
  manifest: Descriptor;
  config: Descriptor;
  layers: LayerDescriptor[];
  tag: string;
  imageName?: string;
}

/** An image read back from a layout. */
export interface LayoutImage extends WrittenImage {
  imageConfig: ImageConfig;
  imageManifest: ImageManifest;
}

const EPOCH = "1970-01-01T00:00:00Z";

/**
 * Writes OCI image layouts (image-spec `image-layout.md`): `oci-layout`,
 * `index.json` and content-addressed `blobs/sha256/*`. Output is
 * reproducible: the same layers and config give the same digests.
 * index.json is written last, so a layout with an index.json is complete.
 */
export class OciImageWriter {
  /** @param layoutDir directory of the layout; created if missing. */
  constructor(readonly layoutDir: string) {}

  /** Directory holding the sha256 blobs. */
  get blobsDir(): string {
    return join(this.layoutDir, "blobs", "sha256");
  }

  /** Path of the blob with `digest` (`sha256:<hex>`). */
  blobPath(digest: string): string {
    return blobPath(this.layoutDir, digest);
  }

  /** Creates the layout's directories and `oci-layout` file (idempotent). */
  async init(): Promise<void> {
    await mkdir(this.blobsDir, { recursive: true });
    await writeFile(join(this.layoutDir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  }

  /**
   * Writes `layer` as a tar blob (optionally gzip-compressed) and returns its
   * descriptor: `digest`/`size` of the stored blob and `diffId`, the sha256 of
   * the uncompressed tar.
   */
  async writeLayer(layer: LayerBuilder, options: LayerWriteOptions = {}): Promise<LayerDescriptor> {
    await this.init();
    const compression = options.compression ?? "gzip";
    const tmp = join(this.blobsDir, `.tmp-${randomBytes(8).toString("hex")}`);
    const diff = new HashingStream();
    const stored = new HashingStream();
    try {
      const tar = tarStream(layer.entries(), { mtime: options.mtime ?? 0 });
      if (compression === "gzip") {
        await pipeline(
          tar,
          diff,
          createGzip({ level: options.gzipLevel ?? 1 }),
          stored,
          createWriteStream(tmp),
        );
      } else {
        await pipeline(tar, diff, stored, createWriteStream(tmp));
      }
      const digest = stored.digest();
      await rename(tmp, this.blobPath(digest));
      return {
        mediaType: compression === "gzip" ? MediaType.layerGzip : MediaType.layerTar,
        digest,
        size: stored.bytes,
        diffId: diff.digest(),
      };
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  /** Stores `data` as a blob and returns its descriptor. */
  async writeBlob(data: Buffer, mediaType: string): Promise<Descriptor> {
    await this.init();
    const digest = sha256Digest(data);
    const path = this.blobPath(digest);
    if (!(await exists(path))) {
      const tmp = `${path}.tmp-${randomBytes(8).toString("hex")}`;
      await writeFile(tmp, data);
      await rename(tmp, path);
    }
    return { mediaType, digest, size: data.length };
  }

  /**
   * Makes a layer of another layout available in this one (hard link, or a
   * copy across file systems) and returns its descriptor unchanged.
   */
  async importLayer(fromLayoutDir: string, layer: LayerDescriptor): Promise<LayerDescriptor> {
    await this.init();
    const src = blobPath(fromLayoutDir, layer.digest);
    const dst = this.blobPath(layer.digest);
    if (!(await exists(dst))) {
      try {
        await link(src, dst);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "EEXIST") return layer;
        if (code !== "EXDEV" && code !== "EPERM") throw err;
        const tmp = `${dst}.tmp-${randomBytes(8).toString("hex")}`;
        await copyFile(src, tmp);
        await rename(tmp, dst);
      }
    }
    return layer;
  }

  /**
   * Writes the image config and manifest blobs for `spec` and records the
   * manifest in index.json (replacing an entry with the same tag). The
   * manifest's index entry carries the platform linux/amd64.
   */
  async writeImage(spec: ImageSpec): Promise<WrittenImage> {
    await this.init();
    const created = spec.created ?? EPOCH;
    const tag = spec.tag ?? "latest";
    const imageConfig: ImageConfig = {
      created,
      architecture: "amd64",
      os: "linux",
      config: spec.config,
      rootfs: { type: "layers", diff_ids: spec.layers.map((l) => l.diffId) },
      history: spec.layers.map((_, i) => ({ created, created_by: "esb", ...(spec.history?.[i] ?? {}) })),
    };
    const config = await this.writeBlob(Buffer.from(JSON.stringify(imageConfig)), MediaType.config);
    const imageManifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: MediaType.manifest,
      config,
      layers: spec.layers.map(({ mediaType, digest, size }) => ({ mediaType, digest, size })),
      ...(spec.annotations ? { annotations: spec.annotations } : {}),
    };
    const manifestBlob = await this.writeBlob(Buffer.from(JSON.stringify(imageManifest)), MediaType.manifest);
    const annotations: Record<string, string> = { [Annotation.refName]: tag };
    if (spec.imageName) annotations[Annotation.containerdImageName] = spec.imageName;
    const manifest: Descriptor = {
      ...manifestBlob,
      annotations,
      platform: { architecture: "amd64", os: "linux" },
    };

    const indexPath = join(this.layoutDir, "index.json");
    let index: ImageIndex = { schemaVersion: 2, mediaType: MediaType.index, manifests: [] };
    if (await exists(indexPath)) index = JSON.parse(await readFile(indexPath, "utf8")) as ImageIndex;
    index.manifests = index.manifests.filter((m) => m.annotations?.[Annotation.refName] !== tag);
    index.manifests.push(manifest);
    const tmp = `${indexPath}.tmp-${randomBytes(8).toString("hex")}`;
    await writeFile(tmp, JSON.stringify(index, null, 2));
    await rename(tmp, indexPath);
    return {
      layoutDir: this.layoutDir,
      manifest,
      config,
      layers: spec.layers,
      tag,
      imageName: spec.imageName,
    };
  }
}

/**
 * Reads an image of the layout at `layoutDir`: the manifest tagged `tag`, or
 * the only manifest when `tag` is omitted. Layer diff_ids come from the config.
 */
export async function readOciImage(layoutDir: string, tag?: string): Promise<LayoutImage> {
  const index = JSON.parse(await readFile(join(layoutDir, "index.json"), "utf8")) as ImageIndex;
  const candidates =
    tag === undefined
      ? index.manifests
      : index.manifests.filter((m) => m.annotations?.[Annotation.refName] === tag);
  if (candidates.length !== 1) {
    throw new Error(
      tag === undefined
        ? `${layoutDir}: expected exactly one image in index.json, found ${candidates.length}; name a tag`
        : `${layoutDir}: no image tagged "${tag}" in index.json`,
    );
  }
  const manifest = candidates[0];
  const imageManifest = JSON.parse(
    await readFile(blobPath(layoutDir, manifest.digest), "utf8"),
  ) as ImageManifest;
  const imageConfig = JSON.parse(
    await readFile(blobPath(layoutDir, imageManifest.config.digest), "utf8"),
  ) as ImageConfig;
  if (imageConfig.rootfs.diff_ids.length !== imageManifest.layers.length) {
    throw new Error(
      `${layoutDir}: manifest has ${imageManifest.layers.length} layers but config has ${imageConfig.rootfs.diff_ids.length} diff_ids`,
    );
  }
  return {
    layoutDir,
    manifest,
    config: imageManifest.config,
    layers: imageManifest.layers.map((l, i) => ({ ...l, diffId: imageConfig.rootfs.diff_ids[i] })),
    tag: manifest.annotations?.[Annotation.refName] ?? "latest",
    imageName: manifest.annotations?.[Annotation.containerdImageName],
    imageConfig,
    imageManifest,
  };
}

/**
 * Writes the layout at `layoutDir` as an OCI archive (an uncompressed tar of
 * the layout, as `ctr images import` and `podman load` read it) to `archivePath`.
 */
export async function writeOciArchive(layoutDir: string, archivePath: string): Promise<void> {
  const index = JSON.parse(await readFile(join(layoutDir, "index.json"), "utf8")) as ImageIndex;
  const layer = new LayerBuilder();
  layer.addHostFile("oci-layout", join(layoutDir, "oci-layout"), { mode: 0o644 });
  layer.addHostFile("index.json", join(layoutDir, "index.json"), { mode: 0o644 });
  // Only the blobs reachable from index.json: a layout may hold blobs of images replaced since.
  const digests = new Set<string>();
  for (const m of index.manifests) {
    digests.add(m.digest);
    const manifest = JSON.parse(await readFile(blobPath(layoutDir, m.digest), "utf8")) as ImageManifest;
    digests.add(manifest.config.digest);
    for (const l of manifest.layers) digests.add(l.digest);
  }
  for (const d of digests)
    layer.addHostFile(`blobs/sha256/${hexOf(d)}`, blobPath(layoutDir, d), { mode: 0o644 });
  const tmp = `${archivePath}.tmp-${randomBytes(8).toString("hex")}`;
  try {
    await pipeline(tarStream(layer.entries()), createWriteStream(tmp));
    await rename(tmp, archivePath);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Path of blob `digest` (`sha256:<hex>`) in the layout at `layoutDir`. */
export function blobPath(layoutDir: string, digest: string): string {
  return join(layoutDir, "blobs", "sha256", hexOf(digest));
}

/** `sha256:<hex>` of `data`. */
export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

function hexOf(digest: string): string {
  const m = /^sha256:([a-f0-9]{64})$/.exec(digest);
  if (!m) throw new Error(`unsupported digest "${digest}": only sha256 is supported`);
  return m[1];
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Pass-through stream that hashes (sha256) and counts what flows through it. */
class HashingStream extends Transform {
  private readonly hash = createHash("sha256");
  bytes = 0;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }

  digest(): string {
    return `sha256:${this.hash.digest("hex")}`;
  }
}
