#!/usr/bin/env node
/**
 * Builds the controller, agent and gateway images, the nats image (the
 * unmodified nats-server that `make nats` builds, which the chart deploys for
 * durable Event invocations) and the victoria-logs image (the unmodified
 * VictoriaLogs of `make victorialogs`, the chart's function log store), as OCI layouts without a container engine (the project's one image build path, like ko or jib), and
 * optionally writes OCI archives and pushes them to a registry. The
 * workspaces must be built first (`npx tsc -b controller agent-daemonset
 * gateway`); the agent image carries the managed-runtime images, whose
 * nodejs22.x needs Node 22 (`hack/fetch-node-runtime.sh 22`). Usage:
 *
 *   node runtime/dist/image/build-component-images-main.js [--component controller,agent,gateway,nats,victoria-logs]
 *     [--out-dir DIR] [--archive-dir DIR] [--push HOST:PORT] [--repository-prefix esb]
 *     [--name-prefix docker.io/esb] [--runtime-image-cache-dir DIR] [--compression gzip|none] [--json]
 *
 * Layouts go to `<out-dir>/<component>` (default out-dir `.esb/component-images`),
 * archives to `<archive-dir>/<component>.oci.tar`: a tar of the layout whose
 * index.json names the image (`io.containerd.image.name`
 * `<name-prefix>/<component>:<version>`), as `ctr -n k8s.io images import`,
 * `kind load image-archive` and `podman load` read it. Pushes go to
 * `<prefix>/<component>:<version>` (credentials from ESB_REGISTRY_USERNAME /
 * ESB_REGISTRY_PASSWORD). `--json` prints one JSON document describing the
 * images instead of progress lines. Exits 1 on failure, 2 on bad arguments.
 */
import { mkdir, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { buildComponentImages, COMPONENTS, type ComponentName } from "./component-image-builder.js";
import { buildNatsImage } from "./nats-image-builder.js";
import type { ServerImageOptions, ServerImage } from "./server-image-builder.js";
import { buildVictoriaLogsImage } from "./victoria-logs-image-builder.js";
import { writeOciArchive } from "./oci-image-writer.js";
import { RegistryClient } from "./registry-client.js";

/** Third-party servers: each image carries only the server's binary. */
const SERVERS: Record<string, (o: ServerImageOptions) => Promise<ServerImage>> = {
  nats: buildNatsImage,
  "victoria-logs": buildVictoriaLogsImage,
};
/** The Node components, then the servers. */
const ALL = [...COMPONENTS, ...Object.keys(SERVERS)];

const USAGE = `usage: build-component-images-main.js [--component C[,C]] [--out-dir DIR] [--archive-dir DIR]
       [--push HOST:PORT] [--repository-prefix P] [--name-prefix P] [--runtime-image-cache-dir DIR]
       [--compression gzip|none] [--json]

Builds the ESB component images (${ALL.join(", ")}) as OCI layouts in <out-dir>/<component>,
and OCI archives <archive-dir>/<component>.oci.tar (for ctr images import, kind load image-archive).
The agent image carries the runtime images nodejs24.x, nodejs22.x, python3.13, python3.11 and provided;
nodejs22.x needs Node 22: run hack/fetch-node-runtime.sh 22 first; the Python ones hack/build-python-runtime.sh. The nats image needs nats-server: run make nats first; victoria-logs: make victorialogs.
`;

let values;
try {
  ({ values } = parseArgs({
    options: {
      component: { type: "string", multiple: true },
      "out-dir": { type: "string", default: ".esb/component-images" },
      "archive-dir": { type: "string" },
      push: { type: "string" },
      "repository-prefix": { type: "string", default: "esb" },
      "name-prefix": { type: "string", default: "docker.io/esb" },
      "runtime-image-cache-dir": { type: "string" },
      compression: { type: "string", default: "gzip" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h" },
    },
  }));
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n${USAGE}`);
  process.exit(2);
}

if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const wanted = (values.component ?? [ALL.join(",")]).flatMap((c) => c.split(",")).filter(Boolean);
const servers = wanted.filter((c) => c in SERVERS);
const components = wanted.filter((c) => !(c in SERVERS));
for (const c of components) {
  if (!(COMPONENTS as readonly string[]).includes(c)) {
    process.stderr.write(`unknown component "${c}": expected one of ${ALL.join(", ")}\n`);
    process.exit(2);
  }
}
if (values.compression !== "gzip" && values.compression !== "none") {
  process.stderr.write("--compression must be gzip or none\n");
  process.exit(2);
}
const compression = values.compression;
const say = (line: string): void => {
  if (!values.json) process.stdout.write(`${line}\n`);
};
const mb = (bytes: number): string => (bytes / 1e6).toFixed(1);

try {
  const outDir = resolve(values["out-dir"]);
  // Layouts are rebuilt from scratch so no blob of an earlier build lingers.
  for (const c of wanted) await rm(join(outDir, c), { recursive: true, force: true });
  const started = Date.now();
  say(`building ${wanted.join(", ")} into ${outDir}…`);
  const images = [
    ...(components.length > 0
      ? await buildComponentImages({
          outDir,
          components: components as ComponentName[],
          compression,
          namePrefix: values["name-prefix"],
          runtimeImageCacheDir: values["runtime-image-cache-dir"],
          onProgress: say,
        })
      : []),
    ...(await Promise.all(
      servers.map((c) => SERVERS[c]({ outDir, compression, namePrefix: values["name-prefix"] })),
    )),
  ];
  const buildMs = Date.now() - started;
  const report = [];
  for (const image of images) {
    let archive: string | undefined;
    if (values["archive-dir"]) {
      await mkdir(values["archive-dir"], { recursive: true });
      archive = resolve(values["archive-dir"], `${image.component}.oci.tar`);
      await writeOciArchive(image.layoutDir, archive);
    }
    const pushed: string[] = [];
    if (values.push) {
      const registry = new RegistryClient({
        registry: values.push,
        username: process.env.ESB_REGISTRY_USERNAME,
        password: process.env.ESB_REGISTRY_PASSWORD,
      });
      const result = await registry.pushImage(image.layoutDir, {
        repository: `${values["repository-prefix"]}/${image.component}`,
        tag: image.version,
      });
      pushed.push(result.reference);
    }
    say(
      `${image.component}: ${image.imageName} — ${image.layoutDir} (manifest ${image.manifest.digest}, ` +
        `${mb(image.storedBytes)} MB, ${image.packages.packages.length} npm packages)` +
        (archive ? `; archive ${archive}` : "") +
        (pushed.length ? `; pushed ${pushed.join(", ")}` : ""),
    );
    image.layers.forEach((l, i) => say(`  ${mb(l.size).padStart(7)} MB  ${image.layerHistory[i]}`));
    report.push({
      component: image.component,
      version: image.version,
      imageName: image.imageName,
      tag: image.tag,
      layoutDir: image.layoutDir,
      manifestDigest: image.manifest.digest,
      configDigest: image.config.digest,
      entrypoint: image.entrypoint,
      storedBytes: image.storedBytes,
      layers: image.layers.map((l, i) => ({
        digest: l.digest,
        mediaType: l.mediaType,
        size: l.size,
        createdBy: image.layerHistory[i],
      })),
      programs: image.programs,
      runtimeImages: image.runtimeImages.map((r) => ({
        runtime: r.runtime,
        tag: r.tag,
        imageName: r.imageName,
        manifestDigest: r.manifest.digest,
        storedBytes: r.layers.reduce((n, l) => n + l.size, r.config.size),
      })),
      workspaces: image.packages.workspaces,
      npmPackages: image.packages.packages.length,
      archive,
      pushed,
    });
  }
  say(`built in ${buildMs} ms`);
  if (values.json) process.stdout.write(`${JSON.stringify({ buildMs, images: report }, null, 2)}\n`);
  process.exit(0);
} catch (err) {
  process.stderr.write(`build-component-images: FAILED: ${(err as Error).message}\n`);
  process.exit(1);
}
