import { existsSync, readFileSync } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { LayerBuilder } from "./layer-builder.js";

/**
 * The AWS SDK for JavaScript v3 packages the nodejs runtime images carry (with
 * every package they depend on), as AWS's nodejs18.x+ runtimes carry the SDK.
 * AWS ships every `@aws-sdk/client-*`; ESB ships the clients of the services it
 * runs locally (S3, DynamoDB, Lambda) and those functions call most, plus their
 * helper libraries: docs/data-services.md gives the measured cost of the full
 * set and why. Each is a dependency of @esb/runtime, so the lock file pins it.
 */
export const AWS_SDK_PACKAGES: readonly string[] = [
  "@aws-sdk/client-dynamodb",
  "@aws-sdk/lib-dynamodb",
  "@aws-sdk/util-dynamodb",
  "@aws-sdk/client-s3",
  "@aws-sdk/lib-storage",
  "@aws-sdk/s3-request-presigner",
  "@aws-sdk/client-lambda",
  "@aws-sdk/client-sqs",
  "@aws-sdk/client-sns",
  "@aws-sdk/client-eventbridge",
  "@aws-sdk/client-secrets-manager",
  "@aws-sdk/client-ssm",
  "@aws-sdk/client-sts",
  "@aws-sdk/client-kms",
  "@aws-sdk/credential-providers",
];

/** Where the SDK lives in the image: AWS's place, on the runtime's NODE_PATH. */
export const AWS_SDK_IMAGE_DIR = "/var/runtime/node_modules";

/**
 * Found first by Node's ESM resolver walking up from /var/task (ESM ignores
 * NODE_PATH): /var/task/node_modules, then this link to {@link AWS_SDK_IMAGE_DIR}.
 * A function's own node_modules therefore always wins, in ESM and CommonJS.
 */
export const AWS_SDK_ESM_LINK = "/var/node_modules";

/** A package copied into the layer: where it is on the host and where it goes under node_modules. */
export interface SdkPackage {
  name: string;
  version: string;
  hostDir: string;
  /** Path below node_modules in the image (`@aws-sdk/client-s3`, or nested `a/node_modules/b`). */
  imagePath: string;
}

/**
 * The packages `roots` need, found as Node finds them from `fromDir` (each
 * package's dependencies from its own folder upwards), with their place in an
 * image node_modules tree that keeps the host's nesting, so every package
 * resolves the same versions inside the image as on the host. Throws naming
 * the package that is not installed.
 */
export function sdkPackageClosure(roots: readonly string[], fromDir: string): SdkPackage[] {
  const found = new Map<string, SdkPackage>();
  const visit = (name: string, from: string, requiredBy: string): void => {
    const hostDir = locatePackage(name, from);
    if (!hostDir)
      throw new Error(
        `${name} (needed by ${requiredBy}) is not installed: run npm install (it is a dependency of @esb/runtime)`,
      );
    if (found.has(hostDir)) return;
    const pkg = JSON.parse(readFileSync(join(hostDir, "package.json"), "utf8")) as {
      version: string;
      dependencies?: Record<string, string>;
      optionalDependencies?: Record<string, string>;
    };
    found.set(hostDir, { name, version: pkg.version, hostDir, imagePath: imagePathOf(hostDir, name) });
    for (const dep of Object.keys(pkg.dependencies ?? {})) visit(dep, hostDir, name);
    for (const dep of Object.keys(pkg.optionalDependencies ?? {}))
      if (locatePackage(dep, hostDir)) visit(dep, hostDir, name);
  };
  for (const r of roots) visit(r, fromDir, "the runtime image");
  const byImagePath = new Map<string, SdkPackage>();
  for (const p of found.values()) {
    const other = byImagePath.get(p.imagePath);
    // Two host folders (e.g. the repository's and a workspace's node_modules) would land on one image path.
    if (other)
      throw new Error(
        `${p.name} ${p.version} (${p.hostDir}) and ${other.version} (${other.hostDir}) would both be node_modules/${p.imagePath} in the image: dedupe them (npm dedupe)`,
      );
    byImagePath.set(p.imagePath, p);
  }
  return [...byImagePath.values()].sort((a, b) => (a.imagePath < b.imagePath ? -1 : 1));
}

/**
 * The image layer with the SDK: {@link AWS_SDK_IMAGE_DIR}/<package> for every
 * package of the closure (without TypeScript declarations, source maps and
 * nested node_modules, which have their own entries), and {@link AWS_SDK_ESM_LINK}.
 * `fromDir` defaults to the @esb/runtime package folder.
 */
export async function awsSdkLayer(
  roots: readonly string[] = AWS_SDK_PACKAGES,
  fromDir: string = fileURLToPath(new URL("../../", import.meta.url)),
): Promise<{ builder: LayerBuilder; packages: SdkPackage[] }> {
  const packages = sdkPackageClosure(roots, fromDir);
  const builder = new LayerBuilder().addDirectory(AWS_SDK_IMAGE_DIR);
  for (const p of packages) await addPackage(builder, p.hostDir, `${AWS_SDK_IMAGE_DIR}/${p.imagePath}`);
  builder.addSymlink(AWS_SDK_ESM_LINK, "runtime/node_modules");
  return { builder, packages };
}

/** Folders and files a package needs only at build or edit time. */
function skipped(name: string, isDir: boolean): boolean {
  if (isDir) return name === "node_modules" || name === "dist-types" || name === ".github";
  return (
    name.endsWith(".d.ts") || name.endsWith(".d.mts") || name.endsWith(".d.cts") || name.endsWith(".map")
  );
}

async function addPackage(builder: LayerBuilder, hostDir: string, imageDir: string): Promise<void> {
  builder.addDirectory(imageDir);
  for (const name of (await readdir(hostDir)).sort()) {
    const host = join(hostDir, name);
    const st = await lstat(host);
    if (skipped(name, st.isDirectory())) continue;
    if (st.isDirectory()) await addPackage(builder, host, `${imageDir}/${name}`);
    else if (st.isFile()) builder.addHostFile(`${imageDir}/${name}`, host, { mode: 0o644 });
  }
}

/** Node's lookup: `<dir>/node_modules/<name>` from `from` up to the root; the folder (symlinks kept), or undefined. */
function locatePackage(name: string, from: string): string | undefined {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, "node_modules", name);
    if (existsSync(join(candidate, "package.json"))) return candidate;
    if (dirname(dir) === dir) return undefined;
  }
}

/** The part of `hostDir` below its outermost node_modules (`…/node_modules/a/node_modules/b` → `a/node_modules/b`). */
function imagePathOf(hostDir: string, name: string): string {
  const parts = hostDir.split(sep);
  const first = parts.indexOf("node_modules");
  if (first < 0) return name;
  return relative(parts.slice(0, first + 1).join(sep) || sep, hostDir)
    .split(sep)
    .join("/");
}
