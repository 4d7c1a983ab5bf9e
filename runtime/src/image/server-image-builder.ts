import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { NONROOT_USER, type ComponentImage } from "./component-image-builder.js";
import { LayerBuilder } from "./layer-builder.js";
import { OciImageWriter, type LayerWriteOptions, type WrittenImage } from "./oci-image-writer.js";
import type { ImageRunConfig } from "./oci-types.js";

/** A third-party server the chart deploys, from a static binary a `hack/build-*.sh` script built. */
export interface ServerImageSpec {
  /** Image and component name, e.g. `nats`. */
  component: "nats" | "victoria-logs";
  /** Binary name in ~/.cache/esb/bin (and its `.<name>.version` stamp). */
  binaryName: string;
  /** The `make` target that builds it (for the error message). */
  makeTarget: string;
  /** Where the binary goes in the image; the entrypoint. */
  binaryPath: string;
  /** Its data folder (owned by the non-root user); the chart mounts a volume there. */
  dataDir: string;
  exposedPorts: string[];
  /** Module it was built from, for the layer history. */
  module: string;
  description: string;
  licence: string;
}

/** Inputs of a server image; all but outDir have defaults. */
export interface ServerImageOptions extends LayerWriteOptions {
  /** The layout goes to `<outDir>/<component>`. */
  outDir: string;
  /** The static binary (default: ~/.cache/esb/bin/<binaryName>). */
  binary?: string;
  /** Its version without the v, the image's tag (default: the build's version stamp). */
  version?: string;
  /** Image name prefix: the image is `<prefix>/<component>:<version>` (default `docker.io/esb`). */
  namePrefix?: string;
}

/** A server image written to its layout; described like a component image (no npm packages, programs or runtime images). */
export interface ServerImage extends WrittenImage, Omit<ComponentImage, "component" | keyof WrittenImage> {
  component: ServerImageSpec["component"];
}

/**
 * Builds the image of a third-party server without a container engine: one
 * layer holding the unmodified binary built from its Go module (static,
 * CGO_ENABLED=0, so nothing else is needed), /etc/passwd with `nonroot`
 * (65532), a world-writable /tmp and the data folder owned by 65532.
 * Entrypoint the binary, user 65532. Throws when the binary is missing.
 */
export async function buildServerImage(
  spec: ServerImageSpec,
  options: ServerImageOptions,
): Promise<ServerImage> {
  const cacheBin = join(process.env.ESB_CACHE_DIR ?? join(homedir(), ".cache", "esb"), "bin");
  const binary = options.binary ?? join(cacheBin, spec.binaryName);
  if (!existsSync(binary)) throw new Error(`${binary} is missing: run make ${spec.makeTarget} first`);
  const stamp = join(cacheBin, `.${spec.binaryName}.version`);
  const version =
    options.version ?? (existsSync(stamp) ? readFileSync(stamp, "utf8").trim().replace(/^v/, "") : "latest");
  const { name, uid, gid } = NONROOT_USER;
  const layer = new LayerBuilder();
  for (const d of ["/etc", "/usr", "/usr/local", "/usr/local/bin"]) layer.addDirectory(d);
  layer.addDirectory("/tmp", { mode: 0o1777 });
  layer.addDirectory(spec.dataDir, { uid, gid, mode: 0o700 });
  layer.addFile(
    "/etc/passwd",
    `root:x:0:0:root:/root:/sbin/nologin\n${name}:x:${uid}:${gid}:nonroot:/:/sbin/nologin\n`,
  );
  layer.addFile("/etc/group", `root:x:0:\n${name}:x:${gid}:\n`);
  layer.addHostFile(spec.binaryPath, binary, { mode: 0o755 });
  const writer = new OciImageWriter(join(options.outDir, spec.component));
  const written = await writer.writeLayer(layer, options);
  const history = [
    `esb: ${spec.binaryName} ${version} (${spec.module}, built by hack/build-${spec.makeTarget}.sh)`,
  ];
  const entrypoint = [spec.binaryPath];
  const config: ImageRunConfig = {
    User: `${uid}:${gid}`,
    Entrypoint: entrypoint,
    WorkingDir: spec.dataDir,
    ExposedPorts: Object.fromEntries(spec.exposedPorts.map((p) => [p, {}])),
    Labels: {
      "org.opencontainers.image.title": `esb-${spec.component}`,
      "org.opencontainers.image.description": spec.description,
      "org.opencontainers.image.version": version,
      "org.opencontainers.image.licenses": spec.licence,
    },
  };
  const image = await writer.writeImage({
    layers: [written],
    config,
    history: history.map((created_by) => ({ created_by })),
    tag: version,
    imageName: `${options.namePrefix ?? "docker.io/esb"}/${spec.component}:${version}`,
  });
  return {
    ...image,
    component: spec.component,
    version,
    entrypoint,
    storedBytes: written.size + image.config.size,
    layerHistory: history,
    packages: { workspaces: [], packages: [], links: [], absent: [] },
    programs: [],
    runtimeImages: [],
  };
}
