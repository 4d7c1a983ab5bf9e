// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { LayerBuilder } from "@esb/runtime/image/layer-builder";
import { OciImageWriter } from "@esb/runtime/image/oci-image-writer";
import { InvalidFunctionSpecError } from "./pool/pool-errors.js";
import {
  createRuntimeImageResolver,
  LocalBuildImageResolver,
  PrebuiltImageResolver,
  TemplateImageResolver,
} from "./runtime-image-resolver.js";
import type { PreparedImage, Runtime } from "./runtime/runtime.js";

let dir: string;
const tags: Record<string, string> = {};
const silent = pino({ level: "silent" });

/** A runtime that records imports (the containerd runtime's importImage, without containerd). */
function importingRuntime(fail = false): Runtime & { imports: { layoutDir: string; ref: string }[] } {
  const imports: { layoutDir: string; ref: string }[] = [];
  return {
    name: "fake",
    imports,
    importImage: async (layoutDir: string, ref: string): Promise<PreparedImage> => {
      imports.push({ layoutDir, ref });
      if (fail) throw new Error("import failed");
      return {
        ref,
        digest: `sha256:${"0".repeat(64)}`,
        config: { env: [], entrypoint: [], cmd: [], workingDir: "", user: "" },
      };
    },
  } as unknown as Runtime & { imports: { layoutDir: string; ref: string }[] };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "esb-runtime-images-"));
  // A folder with two of the three runtimes, each a tiny one-layer image labelled like the real ones.
  for (const runtime of ["nodejs24.x", "provided"]) {
    const writer = new OciImageWriter(join(dir, runtime));
    const layer = await writer.writeLayer(new LayerBuilder().addFile("/runtime", runtime));
    const tag = `${runtime === "provided" ? "bbbb" : "aaaa"}00000000`;
    await writer.writeImage({
      layers: [layer],
      config: { Labels: { "dev.esb.runtime": runtime } },
      tag,
      imageName: `esb.local/runtime/${runtime}:${tag}`,
    });
    tags[runtime] = tag;
  }
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("createRuntimeImageResolver", () => {
  it("uses the template when set, else the prebuilt folder, else builds locally", () => {
    expect(
      createRuntimeImageResolver({ runtimeImage: "r:5000/rt:{runtime}", runtimeImagesDir: dir }, silent),
    ).toBeInstanceOf(TemplateImageResolver);
    const prebuilt = createRuntimeImageResolver({ runtimeImagesDir: dir }, silent);
    expect(prebuilt).toBeInstanceOf(PrebuiltImageResolver);
    expect((prebuilt as PrebuiltImageResolver).dir).toBe(dir);
    expect(createRuntimeImageResolver({}, silent)).toBeInstanceOf(LocalBuildImageResolver);
  });
});

describe("PrebuiltImageResolver", () => {
  it("imports <dir>/<runtime> as esb.local/runtime/<runtime>:<tag>, once per runtime", async () => {
    const resolver = new PrebuiltImageResolver(dir);
    const rt = importingRuntime();
    const first = await resolver.prepareRuntimeImage("nodejs24.x", rt);
    await resolver.prepareRuntimeImage("nodejs24.x", rt);
    expect(first.ref).toBe(`esb.local/runtime/nodejs24.x:${tags["nodejs24.x"]}`);
    expect(rt.imports).toEqual([
      { layoutDir: join(dir, "nodejs24.x"), ref: `esb.local/runtime/nodejs24.x:${tags["nodejs24.x"]}` },
    ]);
  });

  it("serves provided.al2023 with the provided image", async () => {
    const rt = importingRuntime();
    const image = await new PrebuiltImageResolver(dir).prepareRuntimeImage("provided.al2023", rt);
    expect(image.ref).toBe(`esb.local/runtime/provided:${tags.provided}`);
    expect(rt.imports[0].layoutDir).toBe(join(dir, "provided"));
  });

  it("rejects runtimes without an image as invalid specs, naming what the folder has", async () => {
    const resolver = new PrebuiltImageResolver(dir);
    const rt = importingRuntime();
    await expect(resolver.prepareRuntimeImage("python3.12", rt)).rejects.toThrow(InvalidFunctionSpecError);
    await expect(resolver.prepareRuntimeImage("python3.12", rt)).rejects.toThrow(
      /unsupported runtime "python3.12": expected one of nodejs24.x, nodejs22.x, provided, python3.13, python3.11/,
    );
    await expect(resolver.prepareRuntimeImage("python3.13", rt)).rejects.toThrow(
      `runtime "python3.13" has no prebuilt image in ${dir} (it has: nodejs24.x, provided)`,
    );
    await expect(resolver.prepareRuntimeImage("nodejs22.x", rt)).rejects.toThrow(
      `runtime "nodejs22.x" has no prebuilt image in ${dir} (it has: nodejs24.x, provided)`,
    );
    expect(rt.imports).toEqual([]);
  });

  it("needs a runtime that imports OCI layouts", async () => {
    const docker = { name: "docker" } as unknown as Runtime;
    await expect(new PrebuiltImageResolver(dir).prepareRuntimeImage("nodejs24.x", docker)).rejects.toThrow(
      /runtime docker cannot import runtime images from OCI layouts; configure RUNTIME_IMAGE/,
    );
  });

  it("does not keep a failed import", async () => {
    const resolver = new PrebuiltImageResolver(dir);
    const broken = importingRuntime(true);
    await expect(resolver.prepareRuntimeImage("nodejs24.x", broken)).rejects.toThrow("import failed");
    await expect(resolver.prepareRuntimeImage("nodejs24.x", broken)).rejects.toThrow("import failed");
    expect(broken.imports).toHaveLength(2);
  });
});
