import { createHash } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { buffer } from "node:stream/consumers";
import { gzipSync } from "node:zlib";
import { tarStream } from "@esb/runtime/image/tar-writer";
import { MediaTypes } from "../containerd/media-types.js";

/**
 * Shell script run by the test worker. `TEST_MODE` picks a behaviour:
 * serve (default) — HTTP on :8080 with busybox httpd; crash — exit 3;
 * oom — allocate memory until the cgroup's OOM killer ends it.
 */
const SERVE_SCRIPT = `#!/bin/sh
echo "test-worker starting mode=\${TEST_MODE:-serve}"
echo "test-worker stderr line" >&2
case "\${TEST_MODE:-serve}" in
  crash) echo "test-worker crashing"; exit 3 ;;
  oom) exec /bin/busybox awk 'BEGIN { s = "x"; while (1) { s = s s } }' ;;
esac
exec /bin/busybox httpd -f -p 8080 -h /www
`;

/** Body that the test worker serves at `/`. */
export const TEST_WORKER_BODY = "esb-test-worker ok\n";

/** An image held in memory: its root document and all blobs by digest. */
export interface OciTestImage {
  /** Media type and digest of the root document (manifest or index). */
  mediaType: string;
  digest: string;
  /** All blobs, including the root document. */
  blobs: Map<string, Buffer>;
}

/** Layout of the test image's documents. */
export type TestImageFormat = "oci" | "docker" | "oci-index";

function digestOf(b: Buffer): string {
  return `sha256:${createHash("sha256").update(b).digest("hex")}`;
}

/** Variations of the test image's configuration. */
export interface TestImageOptions {
  /** The image config's `User`; "" leaves it out (as most images do). Default "1000:1000". */
  user?: string;
  /** Adds a root-owned /tmp with this mode (an image whose /tmp is not 1777). Default: no /tmp. */
  tmpDirMode?: number;
}

/**
 * Builds the test worker image: a static busybox (from the host's
 * /bin/busybox, Debian busybox-static) and a script serving HTTP on :8080,
 * running as uid 1000 unless `options` say otherwise. Two layers, gzip-compressed.
 */
export async function buildTestImage(
  format: TestImageFormat = "oci",
  options: TestImageOptions = {},
): Promise<OciTestImage> {
  const user = options.user ?? "1000:1000";
  const busybox = await readFile("/bin/busybox");
  const base = await buffer(
    tarStream([
      { type: "directory", path: "bin", mode: 0o755 },
      { type: "file", path: "bin/busybox", content: busybox, mode: 0o755 },
      { type: "symlink", path: "bin/sh", target: "busybox" },
      ...(options.tmpDirMode !== undefined
        ? [{ type: "directory" as const, path: "tmp", mode: options.tmpDirMode }]
        : []),
    ]),
  );
  const app = await buffer(
    tarStream([
      { type: "directory", path: "www", mode: 0o755 },
      { type: "file", path: "www/index.html", content: Buffer.from(TEST_WORKER_BODY), mode: 0o644 },
      { type: "file", path: "serve.sh", content: Buffer.from(SERVE_SCRIPT), mode: 0o755 },
    ]),
  );
  const docker = format === "docker";
  const blobs = new Map<string, Buffer>();
  const layers = [base, app].map((tar) => {
    const gz = gzipSync(tar);
    blobs.set(digestOf(gz), gz);
    return {
      desc: {
        mediaType: docker ? MediaTypes.dockerLayerGzip : MediaTypes.ociLayerGzip,
        digest: digestOf(gz),
        size: gz.length,
      },
      diffId: digestOf(tar),
    };
  });
  const config = Buffer.from(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      config: {
        Entrypoint: ["/bin/sh", "/serve.sh"],
        Env: ["PATH=/bin", "TEST_IMAGE=1"],
        WorkingDir: "/",
        ...(user ? { User: user } : {}),
      },
      rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
    }),
  );
  blobs.set(digestOf(config), config);
  const manifestType = docker ? MediaTypes.dockerManifest : MediaTypes.ociManifest;
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: manifestType,
      config: {
        mediaType: docker ? MediaTypes.dockerConfig : MediaTypes.ociConfig,
        digest: digestOf(config),
        size: config.length,
      },
      layers: layers.map((l) => l.desc),
    }),
  );
  blobs.set(digestOf(manifest), manifest);
  if (format !== "oci-index") return { mediaType: manifestType, digest: digestOf(manifest), blobs };
  // A second manifest for another platform first: the puller must choose linux/amd64.
  const decoy = Buffer.from(
    JSON.stringify({ ...JSON.parse(manifest.toString("utf8")), annotations: { decoy: "s390x" } }),
  );
  blobs.set(digestOf(decoy), decoy);
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaTypes.ociIndex,
      manifests: [
        {
          mediaType: manifestType,
          digest: digestOf(decoy),
          size: decoy.length,
          platform: { os: "linux", architecture: "s390x" },
        },
        {
          mediaType: manifestType,
          digest: digestOf(manifest),
          size: manifest.length,
          platform: { os: "linux", architecture: "amd64" },
        },
      ],
    }),
  );
  blobs.set(digestOf(index), index);
  return { mediaType: MediaTypes.ociIndex, digest: digestOf(index), blobs };
}

/**
 * Pushes an image to a registry over plain HTTP (the test registry):
 * blobs by monolithic upload, then the root document under `tag`.
 */
export async function pushTestImage(
  registry: string,
  repository: string,
  tag: string,
  image: OciTestImage,
): Promise<string> {
  const base = `http://${registry}/v2/${repository}`;
  const root = image.blobs.get(image.digest)!;
  const rootDoc = JSON.parse(root.toString("utf8")) as {
    manifests?: { digest: string; mediaType: string }[];
  };
  const childManifests = new Set((rootDoc.manifests ?? []).map((m) => m.digest));
  for (const [digest, data] of image.blobs) {
    if (digest === image.digest || childManifests.has(digest)) continue;
    const head = await fetch(`${base}/blobs/${digest}`, { method: "HEAD" });
    if (head.ok) continue;
    const start = await fetch(`${base}/blobs/uploads/`, { method: "POST" });
    if (start.status !== 202) throw new Error(`registry upload start: ${start.status}`);
    const loc = new URL(start.headers.get("location")!, `http://${registry}`);
    loc.searchParams.set("digest", digest);
    const put = await fetch(loc, {
      method: "PUT",
      headers: { "content-type": "application/octet-stream" },
      body: data,
    });
    if (put.status !== 201)
      throw new Error(`registry blob upload ${digest}: ${put.status} ${await put.text()}`);
  }
  for (const m of rootDoc.manifests ?? []) {
    const data = image.blobs.get(m.digest);
    if (data) await putManifest(`${base}/manifests/${m.digest}`, m.mediaType, data);
  }
  await putManifest(`${base}/manifests/${tag}`, image.mediaType, root);
  return `${registry}/${repository}:${tag}`;
}

async function putManifest(url: string, mediaType: string, data: Buffer): Promise<void> {
  const res = await fetch(url, { method: "PUT", headers: { "content-type": mediaType }, body: data });
  if (res.status !== 201)
    throw new Error(`registry manifest upload ${url}: ${res.status} ${await res.text()}`);
}

/** Writes an image as an OCI image layout directory, the root annotated with `refName`. */
export async function writeTestImageLayout(dir: string, image: OciTestImage, refName: string): Promise<void> {
  await mkdir(join(dir, "blobs", "sha256"), { recursive: true });
  for (const [digest, data] of image.blobs) await writeFile(join(dir, "blobs", ...digest.split(":")), data);
  await writeFile(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  const root = image.blobs.get(image.digest)!;
  await writeFile(
    join(dir, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: image.mediaType,
          digest: image.digest,
          size: root.length,
          annotations: { "org.opencontainers.image.ref.name": refName },
        },
      ],
    }),
  );
}
