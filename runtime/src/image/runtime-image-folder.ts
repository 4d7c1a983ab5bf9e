import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import type { LayerBuilder } from "./layer-builder.js";
import { blobPath, readOciImage, type LayoutImage, type WrittenImage } from "./oci-image-writer.js";
import { MediaType, type ImageIndex } from "./oci-types.js";
import { RUNTIMES, type RuntimeName } from "./runtime-image-builder.js";

/**
 * Where the agent image carries its prebuilt managed-runtime images (a runtime
 * image folder, see {@link addRuntimeImageFolder}), and where the agent looks
 * for them by default.
 */
export const PREBUILT_RUNTIME_IMAGES_DIR = "/usr/share/esb/runtime-images";

/** One runtime image of a runtime image folder. */
export interface RuntimeImageFolderEntry {
  runtime: RuntimeName;
  /** The runtime's OCI layout (`<folder>/<runtime>`). */
  layoutDir: string;
  image: LayoutImage;
}

/** What {@link addRuntimeImageFolder} put into the layer. */
export interface RuntimeImageFolderContents {
  runtimes: RuntimeName[];
  /** Distinct blobs stored (shared layers count once). */
  blobs: number;
  /** Their bytes. */
  bytes: number;
}

/**
 * Adds `images` (runtime images, each in its own OCI layout on this machine)
 * to `layer` as a runtime image folder at image path `dir`: one OCI image
 * layout per runtime at `<dir>/<runtime>` (`oci-layout`, an `index.json` with
 * that one image, and `blobs` → `../blobs`), the blobs of all of them stored
 * once in `<dir>/blobs/sha256`, so that layers the runtimes share (the base
 * filesystem; Node 24 of nodejs24.x and provided) take space once. Each
 * layout is complete as it is: `ctr images import`, `readOciImage` and the
 * agent's containerd import read it unchanged.
 */
export function addRuntimeImageFolder(
  layer: LayerBuilder,
  dir: string,
  images: (WrittenImage & { runtime: RuntimeName })[],
): RuntimeImageFolderContents {
  const seen = new Set<string>();
  let bytes = 0;
  const addBlob = (layoutDir: string, d: { digest: string; size: number }): void => {
    if (seen.has(d.digest)) return;
    seen.add(d.digest);
    bytes += d.size;
    layer.addHostFile(
      `${dir}/blobs/sha256/${d.digest.replace(/^sha256:/, "")}`,
      blobPath(layoutDir, d.digest),
      { mode: 0o644 },
    );
  };
  layer.addDirectory(`${dir}/blobs/sha256`);
  const runtimes: RuntimeName[] = [];
  for (const image of images) {
    if (runtimes.includes(image.runtime))
      throw new Error(`runtime image folder: ${image.runtime} is given twice`);
    runtimes.push(image.runtime);
    addBlob(image.layoutDir, image.manifest);
    addBlob(image.layoutDir, image.config);
    for (const l of image.layers) addBlob(image.layoutDir, l);
    const index: ImageIndex = { schemaVersion: 2, mediaType: MediaType.index, manifests: [image.manifest] };
    layer.addFile(`${dir}/${image.runtime}/oci-layout`, JSON.stringify({ imageLayoutVersion: "1.0.0" }));
    layer.addFile(`${dir}/${image.runtime}/index.json`, JSON.stringify(index, null, 2));
    layer.addSymlink(`${dir}/${image.runtime}/blobs`, "../blobs");
  }
  return { runtimes, blobs: seen.size, bytes };
}

/**
 * Reads the runtime image folder at `dir`: every `<dir>/<runtime>` that holds
 * an OCI layout (`index.json`) of a runtime ESB builds, in {@link RUNTIMES}
 * order. Throws when a layout cannot be read, holds other than one image, or
 * its image is labelled with another runtime (`dev.esb.runtime`).
 */
export async function readRuntimeImageFolder(dir: string): Promise<RuntimeImageFolderEntry[]> {
  const names = new Set(await readdir(dir));
  const entries: RuntimeImageFolderEntry[] = [];
  for (const runtime of RUNTIMES) {
    const layoutDir = join(dir, runtime);
    if (!names.has(runtime) || !existsSync(join(layoutDir, "index.json"))) continue;
    const image = await readOciImage(layoutDir);
    const label = image.imageConfig.config.Labels?.["dev.esb.runtime"];
    if (label !== runtime)
      throw new Error(
        `${layoutDir}: the image is labelled dev.esb.runtime=${label ?? "(none)"}, not ${runtime}`,
      );
    entries.push({ runtime, layoutDir, image });
  }
  return entries;
}
