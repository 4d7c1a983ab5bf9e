// Proves the test registry is a real OCI distribution registry: a blob and an
// image manifest go in over HTTP and come back byte for byte.
import { describe, it, expect, beforeAll } from "@jest/globals";
import { createHash } from "node:crypto";
import { testRegistry } from "../env/dev-env.js";

const manifestType = "application/vnd.oci.image.manifest.v1+json";

function digestOf(data: Buffer): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

describe("test registry", () => {
  let base: string;
  const repository = `esb-smoke/r${process.pid}${Date.now()}`;

  async function pushBlob(data: Buffer): Promise<string> {
    const digest = digestOf(data);
    const start = await fetch(`${base}/v2/${repository}/blobs/uploads/`, { method: "POST" });
    expect(start.status).toBe(202);
    const location = new URL(start.headers.get("location") ?? "", base);
    location.searchParams.set("digest", digest);
    const put = await fetch(location, {
      method: "PUT",
      body: new Uint8Array(data),
      headers: { "content-type": "application/octet-stream" },
    });
    expect(put.status).toBe(201);
    return digest;
  }

  beforeAll(() => {
    base = `http://${testRegistry()}`;
  });

  it("speaks the distribution API", async () => {
    const res = await fetch(`${base}/v2/`);
    expect(res.status).toBe(200);
  });

  it("stores and serves a blob and a manifest", async () => {
    const layer = Buffer.from(`esb smoke layer ${Date.now()}\n`);
    const config = Buffer.from(
      JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } }),
    );
    const layerDigest = await pushBlob(layer);
    const configDigest = await pushBlob(config);

    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: manifestType,
        config: {
          mediaType: "application/vnd.oci.image.config.v1+json",
          digest: configDigest,
          size: config.length,
        },
        layers: [
          { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: layerDigest, size: layer.length },
        ],
      }),
    );
    const put = await fetch(`${base}/v2/${repository}/manifests/v1`, {
      method: "PUT",
      body: new Uint8Array(manifest),
      headers: { "content-type": manifestType },
    });
    expect(put.status).toBe(201);
    expect(put.headers.get("docker-content-digest")).toBe(digestOf(manifest));

    const got = await fetch(`${base}/v2/${repository}/manifests/v1`, { headers: { accept: manifestType } });
    expect(got.status).toBe(200);
    expect(got.headers.get("content-type")).toBe(manifestType);
    expect(Buffer.from(await got.arrayBuffer()).equals(manifest)).toBe(true);

    const blob = await fetch(`${base}/v2/${repository}/blobs/${layerDigest}`);
    expect(blob.status).toBe(200);
    expect(Buffer.from(await blob.arrayBuffer()).equals(layer)).toBe(true);

    const tags = (await (await fetch(`${base}/v2/${repository}/tags/list`)).json()) as { tags: string[] };
    expect(tags.tags).toEqual(["v1"]);

    const del = await fetch(`${base}/v2/${repository}/manifests/${digestOf(manifest)}`, { method: "DELETE" });
    expect(del.status).toBe(202);
    const gone = await fetch(`${base}/v2/${repository}/manifests/v1`, { headers: { accept: manifestType } });
    expect(gone.status).toBe(404);
  });
});
