#!/usr/bin/env node
/**
 * Builds ESB's runtime images (nodejs24.x, nodejs22.x, provided) into the
 * image cache and optionally pushes them to a registry and/or writes OCI
 * archives. Usage:
 *
 *   node runtime/dist/image/build-runtime-images-main.js [--runtime nodejs24.x,...]
 *     [--cache-dir DIR] [--push HOST:PORT] [--repository-prefix esb/runtime]
 *     [--archive-dir DIR] [--compression gzip|none]
 *
 * Pushed as `<prefix>/<runtime>:<fingerprint tag>` and `:latest`; registry
 * credentials from ESB_REGISTRY_USERNAME / ESB_REGISTRY_PASSWORD. Exits 1 if
 * any image failed (after trying the others).
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { writeOciArchive } from "./oci-image-writer.js";
import { RegistryClient } from "./registry-client.js";
import { RUNTIMES, type RuntimeName } from "./runtime-image-builder.js";
import { RuntimeImageStore } from "./runtime-image-store.js";

const { values } = parseArgs({
  options: {
    runtime: { type: "string", multiple: true },
    "cache-dir": { type: "string" },
    push: { type: "string" },
    "repository-prefix": { type: "string", default: "esb/runtime" },
    "archive-dir": { type: "string" },
    compression: { type: "string", default: "gzip" },
    help: { type: "boolean", short: "h" },
  },
});

if (values.help) {
  process.stdout.write(
    "usage: build-runtime-images-main.js [--runtime R[,R]] [--cache-dir DIR] [--push HOST:PORT] [--repository-prefix P] [--archive-dir DIR] [--compression gzip|none]\n",
  );
  process.exit(0);
}

const runtimes = (values.runtime ?? [RUNTIMES.join(",")]).flatMap((r) => r.split(",")).filter(Boolean);
for (const r of runtimes) {
  if (!(RUNTIMES as readonly string[]).includes(r)) {
    process.stderr.write(`unknown runtime "${r}": expected one of ${RUNTIMES.join(", ")}\n`);
    process.exit(2);
  }
}
if (values.compression !== "gzip" && values.compression !== "none") {
  process.stderr.write(`--compression must be gzip or none\n`);
  process.exit(2);
}
const compression = values.compression;

const store = new RuntimeImageStore(values["cache-dir"]);
const registry = values.push
  ? new RegistryClient({
      registry: values.push,
      username: process.env.ESB_REGISTRY_USERNAME,
      password: process.env.ESB_REGISTRY_PASSWORD,
    })
  : undefined;
let failed = 0;
for (const runtime of runtimes as RuntimeName[]) {
  const started = Date.now();
  try {
    process.stdout.write(`${runtime}: building…\n`);
    const image = await store.get({ runtime, compression });
    const bytes = image.layers.reduce((n, l) => n + l.size, image.config.size);
    process.stdout.write(
      `${runtime}: ${image.cached ? "cached" : "built"} in ${Date.now() - started} ms — ${image.layoutDir} ` +
        `(tag ${image.tag}, manifest ${image.manifest.digest}, ${(bytes / 1e6).toFixed(1)} MB)\n`,
    );
    if (values["archive-dir"]) {
      await mkdir(values["archive-dir"], { recursive: true });
      const archive = join(values["archive-dir"], `${runtime}.oci.tar`);
      await writeOciArchive(image.layoutDir, archive);
      process.stdout.write(`${runtime}: OCI archive ${archive}\n`);
    }
    if (registry) {
      const repository = `${values["repository-prefix"]}/${runtime}`;
      for (const tag of [image.tag, "latest"]) {
        const pushed = await registry.pushImage(image.layoutDir, { repository, tag });
        process.stdout.write(
          `${runtime}: pushed ${pushed.reference} (${pushed.digest}; ${pushed.uploaded.length} blobs uploaded, ${pushed.skipped.length} already there)\n`,
        );
      }
    }
  } catch (err) {
    failed++;
    process.stderr.write(`${runtime}: FAILED: ${(err as Error).message}\n`);
  }
}
process.exit(failed > 0 ? 1 : 0);
