import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LayerBuilder } from "./layer-builder.js";
import { OciImageWriter } from "./oci-image-writer.js";
import type { ImageConfig, ImageManifest } from "./oci-types.js";
import { parseImageReference, RegistryClient } from "./registry-client.js";

let dir: string;
let registry: string;
beforeAll(async () => {
  const r = process.env.ESB_TEST_REGISTRY;
  if (!r)
    throw new Error("ESB_TEST_REGISTRY is not set: the test registry must be running (see test/src/env)");
  registry = r;
  dir = await mkdtemp(join(tmpdir(), "esb-registry-test-"));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("parseImageReference", () => {
  it("splits registry, repository and tag", () => {
    expect(parseImageReference("127.0.0.1:5000/esb/runtime/nodejs24.x:abc")).toEqual({
      registry: "127.0.0.1:5000",
      repository: "esb/runtime/nodejs24.x",
      tag: "abc",
    });
    expect(parseImageReference("localhost:5000/fn")).toEqual({
      registry: "localhost:5000",
      repository: "fn",
      tag: "latest",
    });
    expect(() => parseImageReference("nodejs")).toThrow("expected registry/repository[:tag]");
    expect(() => parseImageReference("r:1/Upper/case")).toThrow('invalid repository name "Upper/case"');
  });
});

describe("RegistryClient", () => {
  it("pushes an image from a layout, skips blobs the registry has, and reads the manifest back", async () => {
    const layout = join(dir, "layout");
    const writer = new OciImageWriter(layout);
    const unique = randomBytes(8).toString("hex");
    const layers = [
      await writer.writeLayer(new LayerBuilder().addFile("/etc/hostname", `esb-${unique}\n`)),
      await writer.writeLayer(
        new LayerBuilder().addFile("/var/task/index.js", "exports.handler = async () => 1;\n"),
      ),
    ];
    const image = await writer.writeImage({ layers, config: { Entrypoint: ["/bin/sh"] }, tag: "v1" });

    const client = new RegistryClient({ registry });
    const repository = `esb-test/registry-client-${unique}`;
    const first = await client.pushImage(layout, { repository, tag: "v1" });
    expect(first).toEqual({
      reference: `${registry}/${repository}:v1`,
      digest: image.manifest.digest,
      uploaded: [image.config.digest, ...layers.map((l) => l.digest)],
      skipped: [],
    });
    const second = await client.pushImage(layout, { repository, tag: "v2" });
    expect(second.uploaded).toEqual([]);
    expect(second.skipped).toHaveLength(3);

    for (const tag of ["v1", "v2", image.manifest.digest]) {
      const fetched = await client.getManifest(repository, tag);
      expect(fetched.digest).toBe(image.manifest.digest);
      expect(fetched.mediaType).toBe("application/vnd.oci.image.manifest.v1+json");
      const manifest = JSON.parse(fetched.body.toString("utf8")) as ImageManifest;
      expect(manifest.layers.map((l) => l.digest)).toEqual(layers.map((l) => l.digest));
    }
    const config = JSON.parse(
      (await client.getBlob(repository, image.config.digest)).toString("utf8"),
    ) as ImageConfig;
    expect(config.rootfs.diff_ids).toEqual(layers.map((l) => l.diffId));
    for (const l of layers) expect(await client.blobExists(repository, l.digest)).toBe(true);
    expect(await client.blobExists(repository, `sha256:${"0".repeat(64)}`)).toBe(false);
  });

  it("reports registry errors with the registry's error code", async () => {
    const client = new RegistryClient({ registry });
    await expect(client.getManifest("esb-test/does-not-exist", "nope")).rejects.toThrow(
      /HTTP 404 \(.*(MANIFEST_UNKNOWN|NAME_UNKNOWN)/,
    );
    await expect(
      client.pushImage(join(dir, "missing-layout"), { repository: "esb-test/x", tag: "v1" }),
    ).rejects.toThrow("index.json");
  });
});
