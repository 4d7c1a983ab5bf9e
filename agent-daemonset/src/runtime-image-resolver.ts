import { existsSync } from "node:fs";
import { join } from "node:path";
import { createLogger, type Logger } from "@esb/common";
import { readOciImage } from "@esb/runtime/image/oci-image-writer";
import {
  imageRuntimeOf,
  RUNTIMES,
  runtimeImageName,
  type RuntimeName,
} from "@esb/runtime/image/runtime-image-builder";
import { readRuntimeImageFolder } from "@esb/runtime/image/runtime-image-folder";
import { InvalidFunctionSpecError } from "./pool/pool-errors.js";
import type { PreparedImage, Runtime } from "./runtime/runtime.js";

/**
 * Makes the base image of a managed runtime (`nodejs22.x`, `provided`, …) ready
 * in the node's runtime. Runtime images are built by @esb/runtime's image
 * builder; how they reach the node (pulled from a registry, imported from an
 * OCI layout) is the resolver's business.
 */
export interface FunctionImageResolver {
  /** The prepared base image for `runtime`; throws {@link InvalidFunctionSpecError} when the runtime is unknown. */
  prepareRuntimeImage(runtime: string, rt: Runtime): Promise<PreparedImage>;
}

/**
 * A {@link FunctionImageResolver} that pulls runtime images by a reference
 * template, e.g. `registry.local:5000/esb/runtime:{runtime}`.
 */
export class TemplateImageResolver implements FunctionImageResolver {
  constructor(private readonly template: string) {}
  /** Pulls the template with `{runtime}` substituted. */
  async prepareRuntimeImage(runtime: string, rt: Runtime): Promise<PreparedImage> {
    if (!/^[a-z0-9.]+$/.test(runtime)) throw new InvalidFunctionSpecError(`unsupported runtime "${runtime}"`);
    return rt.prepareImage(this.template.replaceAll("{runtime}", runtime));
  }
}

/** A runtime image as an OCI layout on this machine. */
interface RuntimeImageLayout {
  layoutDir: string;
  /** Its tag (12 hex digits of its fingerprint). */
  tag: string;
}

/**
 * A {@link FunctionImageResolver} for runtime images that exist as OCI layouts
 * on this machine: imports the layout of the runtime (`provided.al2023` uses
 * `provided`'s) into a runtime that can import layouts (containerd) under
 * `runtimeImageName(runtime, tag)`, once per runtime and container engine for
 * the life of the agent (a failed preparation is not kept): finding a locally
 * built image fingerprints the ~100 MB Node binary, and an import reads every
 * blob, which each function of that runtime would otherwise repeat.
 */
abstract class LayoutImageResolver implements FunctionImageResolver {
  private readonly prepared = new Map<string, Promise<PreparedImage>>();

  /** Prepares the runtime image of `runtime` (see the class). */
  prepareRuntimeImage(runtime: string, rt: Runtime): Promise<PreparedImage> {
    const key = `${rt.name}/${runtime}`;
    let image = this.prepared.get(key);
    if (!image) {
      image = this.importLayout(runtime, rt);
      this.prepared.set(key, image);
      image.catch(() => this.prepared.delete(key));
    }
    return image;
  }

  /** The layout of `runtime`'s image; throws {@link InvalidFunctionSpecError} when there is none. */
  protected abstract layout(runtime: RuntimeName, requested: string): Promise<RuntimeImageLayout>;

  private async importLayout(requested: string, rt: Runtime): Promise<PreparedImage> {
    const runtime = imageRuntimeOf(requested);
    if (!runtime) {
      throw new InvalidFunctionSpecError(
        `unsupported runtime "${requested}": expected one of ${RUNTIMES.join(", ")}`,
      );
    }
    const importer = rt as Runtime & {
      importImage?: (layoutDir: string, ref: string) => Promise<PreparedImage>;
    };
    if (typeof importer.importImage !== "function") {
      throw new InvalidFunctionSpecError(
        `runtime ${rt.name} cannot import runtime images from OCI layouts; configure RUNTIME_IMAGE`,
      );
    }
    const { layoutDir, tag } = await this.layout(runtime, requested);
    return importer.importImage(layoutDir, runtimeImageName(runtime, tag));
  }
}

/**
 * A {@link FunctionImageResolver} that builds runtime images on this node with
 * @esb/runtime's RuntimeImageStore (cached OCI layouts; needs `ldd` and the
 * Node binaries of the runtimes) and imports them into a runtime that can
 * import layouts (containerd). What standalone `esb up` uses.
 */
export class LocalBuildImageResolver extends LayoutImageResolver {
  /** @param cacheDir image cache folder (default: the store's default). */
  constructor(private readonly cacheDir?: string) {
    super();
  }

  /** Builds (or finds in the cache) the runtime image. */
  protected async layout(runtime: RuntimeName): Promise<RuntimeImageLayout> {
    // Loaded on first use: the store is only needed when a managed-runtime function is prepared.
    const { RuntimeImageStore } = await import("@esb/runtime/image/runtime-image-store");
    const image = await new RuntimeImageStore(this.cacheDir).get({ runtime });
    return { layoutDir: image.layoutDir, tag: image.tag };
  }
}

/**
 * A {@link FunctionImageResolver} for runtime images built beforehand: a
 * runtime image folder (one OCI layout per runtime, `<dir>/<runtime>`, as the
 * agent image carries in `/usr/share/esb/runtime-images`) whose layouts are
 * imported into containerd as they are. Builds nothing, runs no program and
 * writes nothing to the file system.
 */
export class PrebuiltImageResolver extends LayoutImageResolver {
  /** @param dir the runtime image folder. */
  constructor(readonly dir: string) {
    super();
  }

  /** The layout `<dir>/<runtime>`; {@link InvalidFunctionSpecError} naming the runtimes the folder has when it is missing. */
  protected async layout(runtime: RuntimeName, requested: string): Promise<RuntimeImageLayout> {
    const layoutDir = join(this.dir, runtime);
    if (!existsSync(join(layoutDir, "index.json"))) {
      const available = await readRuntimeImageFolder(this.dir).then(
        (entries) => entries.map((e) => e.runtime).join(", ") || "none",
        (err: unknown) => `none (${(err as Error).message})`,
      );
      throw new InvalidFunctionSpecError(
        `runtime "${requested}" has no prebuilt image in ${this.dir} (it has: ${available})`,
      );
    }
    const image = await readOciImage(layoutDir);
    return { layoutDir, tag: image.tag };
  }
}

/** What chooses the agent's {@link FunctionImageResolver}: AgentConfig's `runtimeImage` and `runtimeImagesDir`. */
export interface RuntimeImageSource {
  /** Template of pulled runtime images (`…{runtime}…`); wins when set. */
  runtimeImage?: string;
  /** Runtime image folder of prebuilt layouts; used when set and no template is. */
  runtimeImagesDir?: string;
}

/**
 * The resolver for `source`: {@link TemplateImageResolver} when a template is
 * set, else {@link PrebuiltImageResolver} when a runtime image folder is set,
 * else {@link LocalBuildImageResolver}. Logs which one.
 */
export function createRuntimeImageResolver(
  source: RuntimeImageSource,
  logger: Logger = createLogger("agent"),
): FunctionImageResolver {
  if (source.runtimeImage) {
    logger.info({ runtimeImage: source.runtimeImage }, "runtime images: pulled by template");
    return new TemplateImageResolver(source.runtimeImage);
  }
  if (source.runtimeImagesDir) {
    logger.info({ runtimeImagesDir: source.runtimeImagesDir }, "runtime images: prebuilt OCI layouts");
    return new PrebuiltImageResolver(source.runtimeImagesDir);
  }
  logger.info("runtime images: built on this node");
  return new LocalBuildImageResolver();
}
