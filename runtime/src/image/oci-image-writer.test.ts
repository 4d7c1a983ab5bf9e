// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { LayerBuilder } from "./layer-builder.js";
import { OciImageWriter, readOciImage, writeOciArchive } from "./oci-image-writer.js";
import type { ImageConfig, ImageIndex, ImageManifest } from "./oci-types.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "esb-oci-test-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sha = (b: Buffer): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;

function layers(): LayerBuilder[] {
  return [
    new LayerBuilder()
      .addDirectory("/tmp", { mode: 0o1777 })
      .addFile("/etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
    new LayerBuilder().addFile("/var/task/index.js", "exports.handler = async () => 1;\n"),
  ];
}

async function writeSample(layoutDir: string, compression: "gzip" | "none") {
  const writer = new OciImageWriter(layoutDir);
  const written = [];
  for (const l of layers()) written.push(await writer.writeLayer(l, { compression }));
  return writer.writeImage({
    layers: written,
    config: { User: "993:990", Env: ["PATH=/bin"], Entrypoint: ["/bin/sh"], WorkingDir: "/var/task" },
    history: [{ created_by: "base" }, { created_by: "code" }],
    tag: "v1",
    imageName: "esb.local/test/sample:v1",
  });
}

describe("OciImageWriter", () => {
  it("writes an OCI layout whose digests, sizes and diff_ids verify", async () => {
    const layout = join(dir, "gzip");
    const image = await writeSample(layout, "gzip");

    expect(JSON.parse(await readFile(join(layout, "oci-layout"), "utf8"))).toEqual({
      imageLayoutVersion: "1.0.0",
    });
    // Every blob is stored under its own sha256.
    for (const name of await readdir(join(layout, "blobs", "sha256"))) {
      expect(sha(await readFile(join(layout, "blobs", "sha256", name)))).toBe(`sha256:${name}`);
    }
    const index = JSON.parse(await readFile(join(layout, "index.json"), "utf8")) as ImageIndex;
    expect(index.schemaVersion).toBe(2);
    expect(index.manifests).toHaveLength(1);
    expect(index.manifests[0]).toMatchObject({
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      digest: image.manifest.digest,
      annotations: {
        "org.opencontainers.image.ref.name": "v1",
        "io.containerd.image.name": "esb.local/test/sample:v1",
      },
      platform: { architecture: "amd64", os: "linux" },
    });
    const manifestBytes = await readFile(join(layout, "blobs", "sha256", image.manifest.digest.slice(7)));
    expect(manifestBytes.length).toBe(index.manifests[0].size);
    const manifest = JSON.parse(manifestBytes.toString("utf8")) as ImageManifest;
    expect(manifest.schemaVersion).toBe(2);
    expect(manifest.config.mediaType).toBe("application/vnd.oci.image.config.v1+json");

    const configBytes = await readFile(join(layout, "blobs", "sha256", manifest.config.digest.slice(7)));
    expect(configBytes.length).toBe(manifest.config.size);
    const config = JSON.parse(configBytes.toString("utf8")) as ImageConfig;
    expect(config).toMatchObject({
      architecture: "amd64",
      os: "linux",
      config: { User: "993:990", Env: ["PATH=/bin"], Entrypoint: ["/bin/sh"], WorkingDir: "/var/task" },
      history: [{ created_by: "base" }, { created_by: "code" }],
    });
    expect(manifest.layers).toHaveLength(2);
    for (const [i, l] of manifest.layers.entries()) {
      expect(l.mediaType).toBe("application/vnd.oci.image.layer.v1.tar+gzip");
      const blob = await readFile(join(layout, "blobs", "sha256", l.digest.slice(7)));
      expect(blob.length).toBe(l.size);
      const tar = gunzipSync(blob);
      // diff_id is the digest of the uncompressed tar.
      expect(config.rootfs.diff_ids[i]).toBe(sha(tar));
      expect(image.layers[i].diffId).toBe(sha(tar));
    }
    const layerTar = join(dir, "layer1.tar");
    execFileSync("sh", [
      "-c",
      `gzip -dc < "${join(layout, "blobs", "sha256", manifest.layers[1].digest.slice(7))}" > "${layerTar}"`,
    ]);
    expect(execFileSync("tar", ["-tf", layerTar], { encoding: "utf8" }).trim().split("\n")).toEqual([
      "var/",
      "var/task/",
      "var/task/index.js",
    ]);
  });

  it("is reproducible, and with compression none the layer digest equals its diff_id", async () => {
    const a = await writeSample(join(dir, "repro-a"), "gzip");
    const b = await writeSample(join(dir, "repro-b"), "gzip");
    expect(b.manifest.digest).toBe(a.manifest.digest);
    const plain = await writeSample(join(dir, "plain"), "none");
    for (const [i, l] of plain.layers.entries()) {
      expect(l.mediaType).toBe("application/vnd.oci.image.layer.v1.tar");
      expect(l.digest).toBe(l.diffId);
      expect(l.diffId).toBe(a.layers[i].diffId);
    }
  });

  it("reads images back, shares layers by hard link, and writes an OCI archive the system tar reads", async () => {
    const base = join(dir, "base");
    const image = await writeSample(base, "gzip");
    const read = await readOciImage(base);
    expect(read.manifest.digest).toBe(image.manifest.digest);
    expect(read.layers).toEqual(image.layers);
    expect(read.imageName).toBe("esb.local/test/sample:v1");
    await expect(readOciImage(base, "nope")).rejects.toThrow('no image tagged "nope"');

    const derived = new OciImageWriter(join(dir, "derived"));
    const imported = await derived.importLayer(base, read.layers[0]);
    expect((await stat(derived.blobPath(imported.digest))).ino).toBe(
      (await stat(join(base, "blobs", "sha256", imported.digest.slice(7)))).ino,
    );

    const archive = join(dir, "image.oci.tar");
    await writeOciArchive(base, archive);
    const listed = execFileSync("tar", ["-tf", archive], { encoding: "utf8" }).trim().split("\n");
    expect(listed).toEqual(
      expect.arrayContaining(["oci-layout", "index.json", `blobs/sha256/${image.manifest.digest.slice(7)}`]),
    );
    expect(listed.filter((p) => /^blobs\/sha256\/[a-f0-9]{64}$/.test(p))).toHaveLength(4); // manifest, config, 2 layers
    const out = join(dir, "unpacked");
    await mkdir(out);
    execFileSync("tar", ["-xf", archive, "-C", out]);
    expect(await readFile(join(out, "index.json"))).toEqual(await readFile(join(base, "index.json")));
  });
});
