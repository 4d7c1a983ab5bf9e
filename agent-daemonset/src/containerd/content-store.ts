import {
  Content as ContentService,
  WriteAction,
  type Info,
} from "@esb/common/gen/containerd/services/content/v1/content_pb";
import { isAlreadyExists, isNotFound, type ContainerdConnection } from "./containerd-connection.js";

/** Size of the data messages sent to Content.Write. */
const CHUNK = 1024 * 1024;

/** A blob to store: its digest and size must match what is written. */
export interface BlobDescriptor {
  digest: string;
  size: number;
}

/**
 * containerd's content store (Content service): blob info, reads, labelled
 * writes committed against their expected digest. Concurrent writes of the same
 * digest through one store share a single upload.
 */
export class ContentStore {
  private readonly inflight = new Map<string, Promise<void>>();

  constructor(private readonly conn: ContainerdConnection) {}

  /** Info of a blob, or undefined when it is not stored. */
  async info(digest: string): Promise<Info | undefined> {
    try {
      const res = await this.conn.unary(ContentService.method.info, { digest });
      return res.info;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** Reads a whole blob into memory (for manifests and configs). */
  async readAll(digest: string): Promise<Buffer> {
    const parts: Uint8Array[] = [];
    for await (const msg of this.conn.serverStream(ContentService.method.read, { digest }))
      parts.push(msg.data);
    return Buffer.concat(parts);
  }

  /** Adds or replaces labels of a stored blob. */
  async setLabels(digest: string, labels: Record<string, string>): Promise<void> {
    const keys = Object.keys(labels);
    if (keys.length === 0) return;
    await this.conn.unary(ContentService.method.update, {
      info: { digest, labels },
      updateMask: { paths: keys.map((k) => `labels.${k}`) },
    });
  }

  /**
   * Stores a blob unless it is already present; `labels` are applied either way.
   * `open` is only called when the blob must be written; `onBytes` reports bytes
   * written. Runs under `lease` so the content survives GC until the lease ends.
   */
  async ensure(
    desc: BlobDescriptor,
    open: () => Promise<AsyncIterable<Uint8Array> | Iterable<Uint8Array>>,
    opts: { labels?: Record<string, string>; lease?: string; onBytes?: (n: number) => void } = {},
  ): Promise<boolean> {
    const labels = opts.labels ?? {};
    if (await this.info(desc.digest)) {
      await this.setLabels(desc.digest, labels);
      return false;
    }
    let job = this.inflight.get(desc.digest);
    if (!job) {
      job = this.write(desc, open, labels, opts.lease, opts.onBytes).finally(() =>
        this.inflight.delete(desc.digest),
      );
      this.inflight.set(desc.digest, job);
      await job;
      return true;
    }
    await job;
    await this.setLabels(desc.digest, labels);
    return false;
  }

  /** Writes a blob through Content.Write (STAT, WRITE…, COMMIT with the expected digest). */
  private async write(
    desc: BlobDescriptor,
    open: () => Promise<AsyncIterable<Uint8Array> | Iterable<Uint8Array>>,
    labels: Record<string, string>,
    lease: string | undefined,
    onBytes?: (n: number) => void,
  ): Promise<void> {
    const ref = `esb-${desc.digest}`;
    // A previous attempt may have left a partial upload under this ref.
    await this.conn.unary(ContentService.method.abort, { ref }, { lease }).catch(() => undefined);
    const call = this.conn.bidi(ContentService.method.write, { lease });
    try {
      await call.send({ action: WriteAction.STAT, ref, total: BigInt(desc.size), expected: desc.digest });
      try {
        await call.recv();
      } catch (err) {
        if (isAlreadyExists(err)) return; // committed meanwhile by someone else
        throw err;
      }
      let offset = 0;
      let pending = 0;
      let buffered: Uint8Array[] = [];
      let bufferedBytes = 0;
      const flush = async () => {
        if (bufferedBytes === 0) return;
        const data = Buffer.concat(buffered, bufferedBytes);
        await call.send({ action: WriteAction.WRITE, ref, offset: BigInt(offset), data });
        offset += data.length;
        onBytes?.(data.length);
        buffered = [];
        bufferedBytes = 0;
        pending++;
        // Keep the number of unanswered writes bounded.
        while (pending > 8) {
          await call.recv();
          pending--;
        }
      };
      for await (const chunk of await open()) {
        buffered.push(chunk);
        bufferedBytes += chunk.length;
        if (bufferedBytes >= CHUNK) await flush();
      }
      await flush();
      if (offset !== desc.size) {
        throw new Error(`blob ${desc.digest}: got ${offset} bytes, expected ${desc.size}`);
      }
      await call.send({
        action: WriteAction.COMMIT,
        ref,
        total: BigInt(desc.size),
        offset: BigInt(offset),
        expected: desc.digest,
        labels,
      });
      for (; pending > 0; pending--) await call.recv();
      try {
        await call.recv();
      } catch (err) {
        if (!isAlreadyExists(err)) throw err;
      }
      call.end();
    } catch (err) {
      call.cancel();
      throw err;
    }
  }
}
