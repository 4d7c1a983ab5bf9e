import { buildServerImage, type ServerImage, type ServerImageOptions } from "./server-image-builder.js";

/** Where the victoria-logs binary lives in the image. */
export const VICTORIA_LOGS_PATH = "/usr/local/bin/victoria-logs";
/** Its storage in the image: the chart mounts a volume here. */
export const VICTORIA_LOGS_DATA_DIR = "/data";

/**
 * Builds the image of the VictoriaLogs the chart deploys for function logs
 * (see {@link buildServerImage}): the unmodified victoria-logs built by
 * `hack/build-victorialogs.sh`, entrypoint `victoria-logs`, user 65532, data in
 * {@link VICTORIA_LOGS_DATA_DIR}. Throws when the binary is missing.
 */
export function buildVictoriaLogsImage(options: ServerImageOptions): Promise<ServerImage> {
  return buildServerImage(
    {
      component: "victoria-logs",
      binaryName: "victoria-logs",
      makeTarget: "victorialogs",
      binaryPath: VICTORIA_LOGS_PATH,
      dataDir: VICTORIA_LOGS_DATA_DIR,
      exposedPorts: ["9428/tcp"],
      module: "github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs",
      description: "VictoriaLogs: ESB's store of function logs",
      licence: "Apache-2.0",
    },
    options,
  );
}
