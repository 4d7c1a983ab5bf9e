import { createHash, randomUUID } from "node:crypto";
import { Diff as DiffService } from "@esb/common/gen/containerd/services/diff/v1/diff_pb";
import { Snapshots as SnapshotsService } from "@esb/common/gen/containerd/services/snapshots/v1/snapshots_pb";
import type { Mount } from "@esb/common/gen/containerd/types/mount_pb";
import { isAlreadyExists, isNotFound, type ContainerdConnection } from "./containerd-connection.js";
import type { OciDescriptor } from "./media-types.js";

/**
 * Chain ids of a layer stack (OCI image spec): the first is the first diff id,
 * each next one is sha256("<previous chain id> <diff id>").
 */
export function chainIds(diffIds: string[]): string[] {
  const out: string[] = [];
  for (const diffId of diffIds) {
    const prev = out.at(-1);
    out.push(prev ? `sha256:${createHash("sha256").update(`${prev} ${diffId}`).digest("hex")}` : diffId);
  }
  return out;
}

/**
 * Snapshots and unpacking through containerd's Snapshots and Diff services:
 * each layer becomes a committed snapshot named by its chain id
 * (Prepare → Diff.Apply → Commit), layers already unpacked are skipped.
 */
export class SnapshotUnpacker {
  constructor(
    private readonly conn: ContainerdConnection,
    readonly snapshotter: string,
  ) {}

  /** True when a snapshot with that key/name exists. */
  async exists(key: string): Promise<boolean> {
    try {
      await this.conn.unary(SnapshotsService.method.stat, { snapshotter: this.snapshotter, key });
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  /**
   * Unpacks `layers` (whose uncompressed digests are `diffIds`) and returns the
   * chain id of the top layer: the parent for container snapshots.
   */
  async unpack(layers: OciDescriptor[], diffIds: string[], lease?: string): Promise<string> {
    if (layers.length !== diffIds.length) {
      throw new Error(`image has ${layers.length} layers but ${diffIds.length} diff ids`);
    }
    const chain = chainIds(diffIds);
    // Find the highest layer already unpacked; everything below it is present too.
    let start = chain.length;
    while (start > 0 && !(await this.exists(chain[start - 1]))) start--;
    for (let i = start; i < layers.length; i++) {
      const parent = i > 0 ? chain[i - 1] : "";
      const key = `esb-extract-${randomUUID()} ${chain[i]}`;
      const { mounts } = await this.conn.unary(
        SnapshotsService.method.prepare,
        { snapshotter: this.snapshotter, key, parent },
        { lease },
      );
      try {
        const layer = layers[i];
        const { applied } = await this.conn.unary(
          DiffService.method.apply,
          { diff: { mediaType: layer.mediaType, digest: layer.digest, size: BigInt(layer.size) }, mounts },
          { lease },
        );
        if (applied && applied.digest !== diffIds[i]) {
          throw new Error(
            `layer ${layer.digest} unpacked to ${applied.digest}, image config says ${diffIds[i]}`,
          );
        }
        await this.conn.unary(
          SnapshotsService.method.commit,
          { snapshotter: this.snapshotter, name: chain[i], key },
          { lease },
        );
      } catch (err) {
        await this.remove(key);
        // Another unpack of the same layer won the race: fine.
        if (!isAlreadyExists(err)) throw err;
      }
    }
    return chain.at(-1) ?? "";
  }

  /** Creates the writable snapshot `key` on top of `parent`; returns its mounts. */
  async prepare(key: string, parent: string, labels: Record<string, string> = {}): Promise<Mount[]> {
    const res = await this.conn.unary(SnapshotsService.method.prepare, {
      snapshotter: this.snapshotter,
      key,
      parent,
      labels,
    });
    return res.mounts;
  }

  /** Mounts of an existing snapshot. */
  async mounts(key: string): Promise<Mount[]> {
    const res = await this.conn.unary(SnapshotsService.method.mounts, { snapshotter: this.snapshotter, key });
    return res.mounts;
  }

  /** Removes a snapshot; a missing one is fine. */
  async remove(key: string): Promise<void> {
    try {
      await this.conn.unary(SnapshotsService.method.remove, { snapshotter: this.snapshotter, key });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
}
