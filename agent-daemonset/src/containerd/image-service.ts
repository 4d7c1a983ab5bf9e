import { randomUUID } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Images as ImagesService } from "@esb/common/gen/containerd/services/images/v1/images_pb";
import { Leases as LeasesService } from "@esb/common/gen/containerd/services/leases/v1/leases_pb";
import type { Logger } from "@esb/common";
import { ImageUnavailableError, type PreparedImage, type PullProgress } from "../runtime/runtime.js";
import {
  ContainerdError,
  isAlreadyExists,
  isNotFound,
  type ContainerdConnection,
} from "./containerd-connection.js";
import { ContentStore } from "./content-store.js";
import { parseImageReference, type ImageReference } from "./image-reference.js";
import {
  isIndex,
  isManifest,
  type OciDescriptor,
  type OciImageConfig,
  type OciIndex,
  type OciManifest,
} from "./media-types.js";
import { RegistryClient, type RegistryClientOptions } from "./registry-client.js";
import { chainIds, SnapshotUnpacker } from "./snapshot-unpacker.js";

/** Where image blobs come from: a registry or an OCI layout directory. */
interface BlobSource {
  /** Reads a small document (index, manifest, config) fully. */
  readDocument(desc: OciDescriptor): Promise<Buffer>;
  /** Streams a blob. */
  openBlob(desc: OciDescriptor): Promise<AsyncIterable<Uint8Array>>;
}

/** An image present in containerd's stores, with what a worker needs from it. */
export interface StoredImage extends PreparedImage {
  /** Chain id of the top layer: the parent snapshot of container snapshots. */
  chainId: string;
}

/** Options of {@link ImageService}. */
export interface ImageServiceOptions extends RegistryClientOptions {
  snapshotter: string;
  /** Platform to pick from indexes. Default: this machine's (linux/amd64 on x64). */
  platform?: { os: string; architecture: string };
  logger: Logger;
}

const GC_EXPIRE_MS = 60 * 60 * 1000;

/**
 * Images in containerd: pulls from OCI registries and imports OCI layout
 * directories into the content store (labelled so containerd's GC keeps what
 * the image record references), creates the image record and unpacks the layers
 * into snapshots, all under a lease so nothing is collected half-way.
 */
export class ImageService {
  readonly content: ContentStore;
  readonly unpacker: SnapshotUnpacker;
  private readonly registry: RegistryClient;
  private readonly platform: { os: string; architecture: string };
  private readonly log: Logger;

  constructor(
    private readonly conn: ContainerdConnection,
    private readonly opts: ImageServiceOptions,
  ) {
    this.content = new ContentStore(conn);
    this.unpacker = new SnapshotUnpacker(conn, opts.snapshotter);
    this.registry = new RegistryClient(opts);
    this.platform = opts.platform ?? { os: "linux", architecture: goArch(process.arch) };
    this.log = opts.logger;
  }

  /**
   * Returns the image when its record, content and snapshots are all present
   * (unpacking from local content when only snapshots are missing); undefined otherwise.
   */
  async local(ref: string): Promise<StoredImage | undefined> {
    let name: string;
    try {
      name = parseImageReference(ref).name;
    } catch (err) {
      throw new ImageUnavailableError((err as Error).message);
    }
    let target;
    try {
      target = (await this.conn.unary(ImagesService.method.get, { name })).image?.target;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
    if (!target) return undefined;
    try {
      const root: OciDescriptor = {
        mediaType: target.mediaType,
        digest: target.digest,
        size: Number(target.size),
      };
      const local: BlobSource = {
        readDocument: (d) => this.content.readAll(d.digest),
        openBlob: (d) => Promise.reject(new ContainerdError("Content.Read", 5, `${d.digest} not found`)),
      };
      return await this.store(ref, name, root, local, undefined);
    } catch (err) {
      if (err instanceof ContainerdError) {
        this.log.info({ ref, err: err.message }, "local image incomplete; fetching again");
        return undefined;
      }
      throw err;
    }
  }

  /** Pulls `ref` from its registry into containerd and unpacks it. Throws {@link ImageUnavailableError}. */
  async pull(ref: string, onProgress?: (p: PullProgress) => void): Promise<StoredImage> {
    let parsed: ImageReference;
    try {
      parsed = parseImageReference(ref);
    } catch (err) {
      throw new ImageUnavailableError((err as Error).message);
    }
    return this.withErrors(ref, async () => {
      const { descriptor } = await this.registry.getManifest(parsed);
      const source: BlobSource = {
        // Indexes and manifests come from /manifests/, configs and layers from /blobs/.
        readDocument: async (d) => {
          if (isIndex(d.mediaType) || isManifest(d.mediaType))
            return this.registry.getManifestByDigest(parsed, d);
          const parts: Uint8Array[] = [];
          for await (const c of await this.registry.openBlob(parsed, d.digest)) parts.push(c);
          return Buffer.concat(parts);
        },
        openBlob: (d) => this.registry.openBlob(parsed, d.digest),
      };
      return this.store(ref, parsed.name, descriptor, source, onProgress);
    });
  }

  /**
   * Imports an image from an OCI image layout directory (index.json + blobs/)
   * under the name `ref`. The manifest is the one annotated with `ref`'s tag or
   * full name, else the only one. Throws {@link ImageUnavailableError}.
   */
  async importLayout(dir: string, ref: string, onProgress?: (p: PullProgress) => void): Promise<StoredImage> {
    return this.withErrors(ref, async () => {
      const parsed = parseImageReference(ref);
      const index = JSON.parse(await readFile(join(dir, "index.json"), "utf8")) as OciIndex;
      const named = index.manifests.filter((m) => {
        const n = m.annotations?.["org.opencontainers.image.ref.name"];
        return n !== undefined && (n === ref || n === parsed.tag || n === parsed.name);
      });
      const chosen = named[0] ?? (index.manifests.length === 1 ? index.manifests[0] : undefined);
      if (!chosen) {
        throw new ImageUnavailableError(
          `${ref}: OCI layout ${dir} has ${index.manifests.length} manifests and none is named "${parsed.tag ?? ref}"`,
        );
      }
      const blobPath = (d: OciDescriptor) => join(dir, "blobs", ...d.digest.split(":"));
      const source: BlobSource = {
        readDocument: (d) => readFile(blobPath(d)),
        openBlob: async (d) => createReadStream(blobPath(d)),
      };
      return this.store(ref, parsed.name, chosen, source, onProgress);
    });
  }

  private async withErrors<T>(ref: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof ImageUnavailableError || (err as Error).name === "RuntimeUnavailableError")
        throw err;
      throw new ImageUnavailableError(`${ref}: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Makes the image rooted at `root` complete in containerd: content (children
   * before parents, with GC labels), snapshots, image record.
   */
  private async store(
    ref: string,
    name: string,
    root: OciDescriptor,
    source: BlobSource,
    onProgress: ((p: PullProgress) => void) | undefined,
  ): Promise<StoredImage> {
    const lease = await this.createLease();
    try {
      const snapLabel = `containerd.io/gc.ref.snapshot.${this.opts.snapshotter}`;
      const rootBytes = await this.document(root, source);
      let manifestDesc = root;
      let manifestBytes = rootBytes;
      let indexLabels: Record<string, string> | undefined;
      if (isIndex(root.mediaType)) {
        const index = JSON.parse(rootBytes.toString("utf8")) as OciIndex;
        const pick = index.manifests.find(
          (m) =>
            isManifest(m.mediaType) &&
            (!m.platform ||
              (m.platform.os === this.platform.os && m.platform.architecture === this.platform.architecture)),
        );
        if (!pick) {
          throw new ImageUnavailableError(
            `${ref}: no ${this.platform.os}/${this.platform.architecture} manifest in the image index`,
          );
        }
        manifestDesc = pick;
        manifestBytes = await this.document(pick, source);
        indexLabels = { [`containerd.io/gc.ref.content.m.${index.manifests.indexOf(pick)}`]: pick.digest };
      } else if (!isManifest(root.mediaType)) {
        throw new ImageUnavailableError(`${ref}: unsupported manifest media type "${root.mediaType}"`);
      }
      const manifest = JSON.parse(manifestBytes.toString("utf8")) as OciManifest;
      const configBytes = await this.document(manifest.config, source);
      const config = JSON.parse(configBytes.toString("utf8")) as OciImageConfig;
      const diffIds = config.rootfs?.diff_ids ?? [];
      const chain = chainIds(diffIds);
      const topChain = chain.at(-1) ?? "";

      // Layers first, then the documents that reference them.
      const totalBytes = manifest.layers.reduce((n, l) => n + l.size, 0);
      const progress: PullProgress = {
        ref,
        fetchedBytes: 0,
        totalBytes,
        layersDone: 0,
        layers: manifest.layers.length,
      };
      onProgress?.({ ...progress });
      await Promise.all(
        manifest.layers.map(async (layer, i) => {
          const wrote = await this.content.ensure(layer, () => source.openBlob(layer), {
            lease,
            labels: { "containerd.io/uncompressed": diffIds[i] ?? "" },
            onBytes: (n) => {
              progress.fetchedBytes += n;
              onProgress?.({ ...progress });
            },
          });
          if (!wrote) progress.fetchedBytes += layer.size;
          progress.layersDone++;
          onProgress?.({ ...progress });
        }),
      );
      await this.content.ensure(manifest.config, async () => [configBytes], {
        lease,
        labels: topChain ? { [snapLabel]: topChain } : {},
      });
      const manifestLabels: Record<string, string> = {
        "containerd.io/gc.ref.content.config": manifest.config.digest,
      };
      manifest.layers.forEach((l, i) => (manifestLabels[`containerd.io/gc.ref.content.l.${i}`] = l.digest));
      await this.content.ensure(manifestDesc, async () => [manifestBytes], { lease, labels: manifestLabels });
      if (indexLabels)
        await this.content.ensure(root, async () => [rootBytes], { lease, labels: indexLabels });

      const chainId = await this.unpacker.unpack(manifest.layers, diffIds, lease);
      await this.putImageRecord(name, root);
      const c = config.config ?? {};
      this.log.debug({ ref, digest: root.digest, chainId }, "image ready");
      return {
        ref,
        digest: root.digest,
        chainId,
        config: {
          entrypoint: c.Entrypoint ?? [],
          cmd: c.Cmd ?? [],
          env: c.Env ?? [],
          workingDir: c.WorkingDir ?? "",
          user: c.User ?? "",
        },
      };
    } finally {
      await this.deleteLease(lease);
    }
  }

  /** A document from the content store when present there, else from the source. */
  private async document(desc: OciDescriptor, source: BlobSource): Promise<Buffer> {
    if (await this.content.info(desc.digest)) return this.content.readAll(desc.digest);
    return source.readDocument(desc);
  }

  private async putImageRecord(name: string, root: OciDescriptor): Promise<void> {
    const image = {
      name,
      target: { mediaType: root.mediaType, digest: root.digest, size: BigInt(root.size) },
    };
    try {
      await this.conn.unary(ImagesService.method.create, { image });
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
      await this.conn.unary(ImagesService.method.update, { image, updateMask: { paths: ["target"] } });
    }
  }

  private async createLease(): Promise<string> {
    const id = `esb-pull-${randomUUID()}`;
    await this.conn.unary(LeasesService.method.create, {
      id,
      labels: { "containerd.io/gc.expire": new Date(Date.now() + GC_EXPIRE_MS).toISOString() },
    });
    return id;
  }

  private async deleteLease(id: string): Promise<void> {
    try {
      await this.conn.unary(LeasesService.method.delete, { id });
    } catch (err) {
      this.log.warn(
        { lease: id, err: (err as Error).message },
        "could not delete pull lease; it expires by itself",
      );
    }
  }
}

function goArch(arch: string): string {
  return arch === "x64" ? "amd64" : arch === "ia32" ? "386" : arch;
}
