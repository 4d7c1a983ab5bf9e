import { buildServerImage, type ServerImage, type ServerImageOptions } from "./server-image-builder.js";

/** Where the nats-server binary lives in the image. */
export const NATS_SERVER_PATH = "/usr/local/bin/nats-server";
/** JetStream's store in the image: the chart mounts a volume here. */
export const NATS_DATA_DIR = "/data";

/** Inputs of the nats-server image; all but outDir have defaults. */
export interface NatsImageOptions extends Omit<ServerImageOptions, "binary"> {
  /** Static nats-server binary (default: what hack/build-nats.sh built into ~/.cache/esb/bin). */
  natsServer?: string;
}

/** The nats-server image written to its layout. */
export interface NatsImage extends ServerImage {
  component: "nats";
}

/**
 * Builds the image of the NATS server the chart deploys for durable Event
 * invocations (see {@link buildServerImage}): the unmodified nats-server built
 * by `hack/build-nats.sh`, entrypoint `nats-server`, user 65532, store in
 * {@link NATS_DATA_DIR}. Throws when the binary is missing.
 */
export async function buildNatsImage(options: NatsImageOptions): Promise<NatsImage> {
  const image = await buildServerImage(
    {
      component: "nats",
      binaryName: "nats-server",
      makeTarget: "nats",
      binaryPath: NATS_SERVER_PATH,
      dataDir: NATS_DATA_DIR,
      exposedPorts: ["4222/tcp", "8222/tcp"],
      module: "github.com/nats-io/nats-server/v2",
      description: "NATS server with JetStream: ESB's durable Event invocations",
      licence: "Apache-2.0",
    },
    { ...options, binary: options.natsServer },
  );
  return { ...image, component: "nats" };
}
