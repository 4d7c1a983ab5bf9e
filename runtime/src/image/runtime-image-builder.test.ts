import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AWS_SDK_PACKAGES } from "./aws-sdk-layer.js";
import { findNodeBinary } from "./node-binary.js";
import { blobPath } from "./oci-image-writer.js";
import type { ImageConfig, ImageManifest } from "./oci-types.js";
import { RegistryClient } from "./registry-client.js";
import { buildFunctionImage, planRuntimeImage, type RuntimeImage } from "./runtime-image-builder.js";
import { RuntimeImageStore } from "./runtime-image-store.js";

let dir: string;
let registry: string;
let image: RuntimeImage & { cached: boolean };
let store: RuntimeImageStore;

beforeAll(async () => {
  const r = process.env.ESB_TEST_REGISTRY;
  if (!r)
    throw new Error("ESB_TEST_REGISTRY is not set: the test registry must be running (see test/src/env)");
  registry = r;
  dir = await mkdtemp(join(tmpdir(), "esb-runtime-image-test-"));
  // A private cache, so the cold build path is exercised on every run.
  store = new RuntimeImageStore(join(dir, "cache"));
  image = await store.get({ runtime: "nodejs24.x" });
}, 300_000);
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

function layerListing(layoutDir: string, digest: string): string {
  return execFileSync("tar", ["--numeric-owner", "-tvzf", blobPath(layoutDir, digest)], {
    encoding: "utf8",
    maxBuffer: 16 << 20,
  });
}

describe("runtime images", () => {
  it("builds nodejs24.x with the Lambda layout, busybox, Node and its libraries, the AWS SDK and the worker files", async () => {
    expect(image.cached).toBe(false);
    expect(image.layers).toHaveLength(4);
    const config = JSON.parse(
      execFileSync("cat", [blobPath(image.layoutDir, image.config.digest)], { encoding: "utf8" }),
    ) as ImageConfig;
    expect(config.architecture).toBe("amd64");
    expect(config.os).toBe("linux");
    expect(config.rootfs.diff_ids).toEqual(image.layers.map((l) => l.diffId));
    expect(config.config).toMatchObject({
      User: "993:990",
      WorkingDir: "/var/task",
      Entrypoint: ["/var/runtime/esb/start-emulator"],
    });
    expect(config.config.Env).toEqual(
      expect.arrayContaining([
        "PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
        "LAMBDA_TASK_ROOT=/var/task",
        "LAMBDA_RUNTIME_DIR=/var/runtime",
        "TZ=:UTC",
      ]),
    );

    const base = layerListing(image.layoutDir, image.layers[0].digest);
    expect(base).toMatch(/drwxrwxrwt 0\/0 +0 1970-01-01 00:00 tmp\//);
    expect(base).toMatch(/ var\/task\//);
    expect(base).toMatch(/ opt\//);
    expect(base).toMatch(/ bin\/busybox\n/);
    expect(base).toMatch(/ bin\/sh -> busybox\n/);
    expect(base).toMatch(/ bin\/wget -> busybox\n/);
    expect(base).toMatch(/ etc\/passwd\n/);
    const node = layerListing(image.layoutDir, image.layers[1].digest);
    expect(node).toMatch(/-rwxr-xr-x 0\/0 +\d+ 1970-01-01 00:00 var\/lang\/bin\/node\n/);
    expect(node).toMatch(/ lib64\/ld-linux-x86-64\.so\.2\n/);
    expect(node).toMatch(/libc\.so\.6\n/);
    expect(node).toMatch(/libstdc\+\+\.so\.6\n/);
    // The AWS SDK v3 where AWS's runtimes have it, and the link ESM resolution finds it through.
    const sdk = layerListing(image.layoutDir, image.layers[2].digest);
    expect(sdk).toMatch(/ var\/node_modules -> runtime\/node_modules\n/);
    for (const pkg of AWS_SDK_PACKAGES)
      expect(sdk).toContain(` var/runtime/node_modules/${pkg}/package.json\n`);
    expect(sdk).toContain(" var/runtime/node_modules/@smithy/core/package.json\n");
    expect(sdk).not.toMatch(/\.d\.ts\n|\.map\n/);
    const worker = layerListing(image.layoutDir, image.layers[3].digest);
    for (const f of [
      "emulator-main.js",
      "emulator.js",
      "node-client-main.js",
      "node-client.js",
      "package.json",
      "runtime-only-env.js",
    ]) {
      expect(worker).toContain(` var/runtime/esb/${f}\n`);
    }
    expect(worker).toMatch(/-rwxr-xr-x 0\/0 .* var\/runtime\/bootstrap\n/);
    expect(worker).toMatch(/-rwxr-xr-x 0\/0 .* var\/runtime\/esb\/start-emulator\n/);
  });

  it("comes from the cache when no input changed", async () => {
    const again = await store.get({ runtime: "nodejs24.x" });
    expect(again.cached).toBe(true);
    expect(again.manifest.digest).toBe(image.manifest.digest);
    expect(again.layoutDir).toBe(image.layoutDir);
    // A different input (layer compression) is a different image.
    const plain = await planRuntimeImage({ runtime: "nodejs24.x", compression: "none" });
    expect(plain.fingerprint).not.toBe(image.fingerprint);
  });

  it("plans provided with Node for the emulator but without a runtime bootstrap", async () => {
    const plan = await planRuntimeImage({ runtime: "provided" });
    const paths = plan.layers.flatMap((l) => l.builder.entries().map((e) => e.path));
    expect(paths).toContain("var/lang/bin/node");
    expect(paths).toContain("var/runtime/esb/emulator-main.js");
    expect(paths).not.toContain("var/runtime/bootstrap");
    expect(paths).not.toContain("var/runtime/node_modules/@aws-sdk/client-s3/package.json");
    expect(plan.config.Env?.some((e) => e.startsWith("AWS_EXECUTION_ENV="))).toBe(false);
  });

  it("says how to fetch a missing Node binary", async () => {
    expect(() => findNodeBinary(19, join(dir, "no-runtimes"))).toThrow("run hack/fetch-node-runtime.sh 19");
    await expect(planRuntimeImage({ runtime: "nodejs18.x" as "provided" })).rejects.toThrow(
      'unsupported runtime "nodejs18.x"',
    );
  });

  it("pushes the image to a registry and the manifest pulled back matches", async () => {
    const client = new RegistryClient({ registry });
    const repository = `esb-test/runtime-${randomBytes(4).toString("hex")}/nodejs24.x`;
    const pushed = await client.pushImage(image.layoutDir, { repository, tag: image.tag });
    expect(pushed.digest).toBe(image.manifest.digest);
    expect(pushed.uploaded).toHaveLength(5);
    const fetched = await client.getManifest(repository, image.tag);
    expect(fetched.digest).toBe(image.manifest.digest);
    const manifest = JSON.parse(fetched.body.toString("utf8")) as ImageManifest;
    expect(manifest.config.digest).toBe(image.config.digest);
    expect(manifest.layers.map((l) => [l.digest, l.size])).toEqual(
      image.layers.map((l) => [l.digest, l.size]),
    );
    for (const l of manifest.layers) expect(await client.blobExists(repository, l.digest)).toBe(true);
  });

  it("adds function code as a layer on top of a runtime image", async () => {
    const fn = await buildFunctionImage({
      baseLayout: image.layoutDir,
      outDir: join(dir, "function"),
      files: {
        "index.js": "exports.handler = async (event) => ({ ok: true, event });\n",
        "lib/util.js": "module.exports = 1;\n",
      },
      env: ["_HANDLER=index.handler", "TZ=:Europe/Paris"],
    });
    expect(fn.layers.slice(0, 4)).toEqual(image.layers);
    expect(fn.layers).toHaveLength(5);
    const code = layerListing(fn.layoutDir, fn.layers[4].digest);
    expect(code).toMatch(/-rw-r--r-- 0\/0 .* var\/task\/index\.js\n/);
    expect(code).toContain(" var/task/lib/util.js\n");
    const config = JSON.parse(
      execFileSync("cat", [blobPath(fn.layoutDir, fn.config.digest)], { encoding: "utf8" }),
    ) as ImageConfig;
    expect(config.config.Env).toContain("_HANDLER=index.handler");
    expect(config.config.Env).toContain("TZ=:Europe/Paris");
    expect(config.config.Env).not.toContain("TZ=:UTC");
    expect(config.rootfs.diff_ids).toHaveLength(5);
    expect(config.history).toHaveLength(5);
    await expect(
      buildFunctionImage({ baseLayout: image.layoutDir, outDir: join(dir, "bad") }),
    ).rejects.toThrow("exactly one of codeDir or files");
  });
});
