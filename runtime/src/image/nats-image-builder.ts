import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { NONROOT_USER, type ComponentImage } from "./component-image-builder.js";
import { LayerBuilder } from "./layer-builder.js";
import { OciImageWriter, type LayerWriteOptions, type WrittenImage } from "./oci-image-writer.js";
import type { ImageRunConfig } from "./oci-types.js";

/** Where the nats-server binary lives in the image. */
export const NATS_SERVER_PATH = "/usr/local/bin/nats-server";
/** JetStream's store in the image: the chart mounts a volume here. */
export const NATS_DATA_DIR = "/data";

/** Inputs of the nats-server image; all but outDir have defaults. */
export interface NatsImageOptions extends LayerWriteOptions {
  /** The layout goes to `<outDir>/nats`. */
  outDir: string;
  /** Static nats-server binary (default: what hack/build-nats.sh built into ~/.cache/esb/bin). */
  natsServer?: string;
  /** Its version without the v, the image's tag (default: the build's version stamp). */
  version?: string;
  /** Image name prefix: the image is `<prefix>/nats:<version>` (default `docker.io/esb`). */
  namePrefix?: string;
}

/** The nats-server image written to its layout; described like a component image (no npm packages, programs or runtime images). */
export interface NatsImage extends WrittenImage, Omit<ComponentImage, "component" | keyof WrittenImage> {
  component: "nats";
}

/**
 * Builds the image of the NATS server the chart deploys for durable Event
 * invocations, without a container engine: one layer holding the unmodified
 * nats-server built from its Go module by `hack/build-nats.sh` (static,
 * CGO_ENABLED=0, so nothing else is needed), /etc/passwd with `nonroot`
 * (65532), a world-writable /tmp and {@link NATS_DATA_DIR} owned by 65532.
 * Entrypoint `nats-server`, user 65532. Throws when the binary is missing.
 */
export async function buildNatsImage(options: NatsImageOptions): Promise<NatsImage> {
  const cacheBin = join(process.env.ESB_CACHE_DIR ?? join(homedir(), ".cache", "esb"), "bin");
  const binary = options.natsServer ?? join(cacheBin, "nats-server");
  if (!existsSync(binary)) throw new Error(`${binary} is missing: run make nats (hack/build-nats.sh) first`);
  const stamp = join(cacheBin, ".nats-server.version");
  const version =
    options.version ?? (existsSync(stamp) ? readFileSync(stamp, "utf8").trim().replace(/^v/, "") : "latest");
  const { name, uid, gid } = NONROOT_USER;
  const layer = new LayerBuilder();
  for (const d of ["/etc", "/usr", "/usr/local", "/usr/local/bin"]) layer.addDirectory(d);
  layer.addDirectory("/tmp", { mode: 0o1777 });
  layer.addDirectory(NATS_DATA_DIR, { uid, gid, mode: 0o700 });
  layer.addFile(
    "/etc/passwd",
    `root:x:0:0:root:/root:/sbin/nologin\n${name}:x:${uid}:${gid}:nonroot:/:/sbin/nologin\n`,
  );
  layer.addFile("/etc/group", `root:x:0:\n${name}:x:${gid}:\n`);
  layer.addHostFile(NATS_SERVER_PATH, binary, { mode: 0o755 });
  const writer = new OciImageWriter(join(options.outDir, "nats"));
  const written = await writer.writeLayer(layer, options);
  const history = [
    `esb: nats-server ${version} (github.com/nats-io/nats-server/v2, built by hack/build-nats.sh)`,
  ];
  const entrypoint = [NATS_SERVER_PATH];
  const config: ImageRunConfig = {
    User: `${uid}:${gid}`,
    Entrypoint: entrypoint,
    WorkingDir: NATS_DATA_DIR,
    ExposedPorts: { "4222/tcp": {}, "8222/tcp": {} },
    Labels: {
      "org.opencontainers.image.title": "esb-nats",
      "org.opencontainers.image.description": "NATS server with JetStream: ESB's durable Event invocations",
      "org.opencontainers.image.version": version,
      "org.opencontainers.image.licenses": "Apache-2.0",
    },
  };
  const image = await writer.writeImage({
    layers: [written],
    config,
    history: history.map((created_by) => ({ created_by })),
    tag: version,
    imageName: `${options.namePrefix ?? "docker.io/esb"}/nats:${version}`,
  });
  return {
    ...image,
    component: "nats",
    version,
    entrypoint,
    storedBytes: written.size + image.config.size,
    layerHistory: history,
    packages: { workspaces: [], packages: [], links: [], absent: [] },
    programs: [],
    runtimeImages: [],
  };
}
