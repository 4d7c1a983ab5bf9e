import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { lstat, readdir, readlink, realpath } from "node:fs/promises";
import { basename, dirname, join, relative, sep } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { createLogger } from "@esb/common";
import { LayerBuilder } from "./layer-builder.js";
import { findNodeBinary, sharedLibraries } from "./node-binary.js";
import { OciImageWriter, type LayerWriteOptions, type WrittenImage } from "./oci-image-writer.js";
import type { ImageRunConfig, LayerDescriptor } from "./oci-types.js";
import {
  planRuntimeImage,
  RUNTIMES,
  type RuntimeImage,
  type RuntimeImageOptions,
  type RuntimeName,
} from "./runtime-image-builder.js";
import { addRuntimeImageFolder, PREBUILT_RUNTIME_IMAGES_DIR } from "./runtime-image-folder.js";
import { RuntimeImageStore } from "./runtime-image-store.js";

const run = promisify(execFile);

/** ESB's deployable components, each shipped as one image. */
export const COMPONENTS = ["controller", "agent", "gateway"] as const;
/** A deployable ESB component. */
export type ComponentName = (typeof COMPONENTS)[number];

/** Where the Node binary lives in a component image (as in the official `node` images). */
export const COMPONENT_NODE_PATH = "/usr/local/bin/node";
/** Root of the application in a component image: one directory per workspace plus `node_modules`. */
export const COMPONENT_APP_DIR = "/app";
/** The unprivileged user of the controller and gateway images (the distroless `nonroot` convention). */
export const NONROOT_USER = { name: "nonroot", uid: 65532, gid: 65532 } as const;

/** What distinguishes one component image from another. */
export interface ComponentDefinition {
  /** Workspace directory (relative to the repository root) whose `dist/main.js` is the entrypoint. */
  workspace: string;
  /** `org.opencontainers.image.title`. */
  title: string;
  description: string;
  /** uid:gid the process runs as. */
  user: { uid: number; gid: number };
  /** Ports the component listens on (documentation only, like Dockerfile EXPOSE). */
  ports: number[];
  /** Copy the CNI plugins the chart's init container installs on nodes (agent only). */
  cniPlugins: boolean;
  /**
   * The external programs the component executes: the module of its workspace
   * (relative to it, built) and the name of its export, an array of names or of
   * `{ name }`. Each is put into the image (see {@link buildComponentImages}).
   */
  programs?: { module: string; exportName: string };
  /** Carry the managed-runtime images prebuilt, in {@link PREBUILT_RUNTIME_IMAGES_DIR} (agent only). */
  runtimeImages: boolean;
}

/** The three components. */
export const COMPONENT_DEFINITIONS: Record<ComponentName, ComponentDefinition> = {
  controller: {
    workspace: "controller",
    title: "esb-controller",
    description: "ESB controller: LambdaFunction reconciler",
    user: { uid: NONROOT_USER.uid, gid: NONROOT_USER.gid },
    ports: [8080, 8081],
    cniPlugins: false,
    runtimeImages: false,
  },
  agent: {
    workspace: "agent-daemonset",
    title: "esb-agent",
    description: "ESB agent: per-node worker runtime (containerd, CNI, freezer)",
    // Root on purpose: network namespaces, CNI, cgroups and the containerd socket need it.
    user: { uid: 0, gid: 0 },
    ports: [50051, 9090],
    cniPlugins: true,
    programs: { module: "dist/main.js", exportName: "AGENT_PROGRAMS" },
    runtimeImages: true,
  },
  gateway: {
    workspace: "gateway",
    title: "esb-gateway",
    description: "ESB gateway: Lambda Invoke API and HTTP routes",
    user: { uid: NONROOT_USER.uid, gid: NONROOT_USER.gid },
    ports: [9000],
    cniPlugins: false,
    runtimeImages: false,
  },
};

/** CNI plugins the agent image carries in /usr/lib/cni (those charts/esb's init container copies to nodes). */
export const AGENT_CNI_PLUGINS = ["bridge", "host-local", "loopback", "portmap"];

/** Busybox applets linked in /bin of every component image when the busybox has them: a shell and tools for debugging, `sh -c cp` for the chart's init container. (What a component executes comes from its `programs`.) */
const APPLETS = [
  "[",
  "cat",
  "chmod",
  "cp",
  "cut",
  "date",
  "df",
  "du",
  "echo",
  "env",
  "false",
  "find",
  "grep",
  "head",
  "hostname",
  "id",
  "ip",
  "kill",
  "ln",
  "ls",
  "mkdir",
  "mv",
  "nsenter",
  "ps",
  "pwd",
  "readlink",
  "rm",
  "sed",
  "sh",
  "sleep",
  "stat",
  "tail",
  "test",
  "touch",
  "tr",
  "true",
  "wc",
];

/** The production packages one workspace needs at run time, as paths relative to the repository root. */
export interface ProductionPackages {
  /** Workspace directories whose `package.json` and `dist/` are needed (the component's own first). */
  workspaces: string[];
  /** Installed npm package directories (e.g. `node_modules/pino`, `gateway/node_modules/undici`). */
  packages: string[];
  /** Symbolic links npm made for workspaces (e.g. `node_modules/@esb/common` → `../../common`). */
  links: { path: string; target: string }[];
  /** Optional or peer dependencies that are not installed (and therefore not needed). */
  absent: string[];
}

interface PackageJson {
  name?: string;
  version?: string;
  workspaces?: string[];
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
}

function readPackageJson(dir: string): PackageJson {
  return JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as PackageJson;
}

function isInside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === "" || (!rel.startsWith("..") && !rel.startsWith(sep));
}

/**
 * Works out what `workspaceDir` (relative to `repoRoot`) needs at run time:
 * its `dependencies`, `optionalDependencies` and `peerDependencies` (never
 * `devDependencies`), followed recursively, each resolved the way Node
 * resolves a bare import from the depending package's real directory
 * (`node_modules` of that directory, then of each parent up to `repoRoot`).
 * Workspace packages (npm's symlinks) count as workspaces. A missing
 * `dependencies` entry is an error; missing optional or peer ones are listed
 * in `absent`. Everything must live under `repoRoot`.
 */
export async function collectProductionPackages(
  repoRoot: string,
  workspaceDir: string,
): Promise<ProductionPackages> {
  const root = await realpath(repoRoot);
  const workspaceDirs = new Set<string>();
  for (const w of readPackageJson(root).workspaces ?? []) {
    if (existsSync(join(root, w, "package.json"))) workspaceDirs.add(await realpath(join(root, w)));
  }
  const start = await realpath(join(root, workspaceDir));
  if (!workspaceDirs.has(start))
    throw new Error(`${workspaceDir} is not a workspace of ${join(root, "package.json")}`);

  const result: ProductionPackages = { workspaces: [], packages: [], links: [], absent: [] };
  const visited = new Set<string>();
  const linked = new Set<string>();
  const queue: string[] = [start];
  visited.add(start);
  result.workspaces.push(relative(root, start));

  while (queue.length > 0) {
    const dir = queue.shift()!;
    const pkg = readPackageJson(dir);
    const wanted: { name: string; required: boolean }[] = [
      ...Object.keys(pkg.dependencies ?? {}).map((name) => ({ name, required: true })),
      ...Object.keys(pkg.optionalDependencies ?? {}).map((name) => ({ name, required: false })),
      // npm ≥7 installs peers; a package that declares one imports it.
      ...Object.keys(pkg.peerDependencies ?? {}).map((name) => ({ name, required: false })),
    ];
    for (const { name, required } of wanted) {
      const found = resolvePackage(root, dir, name);
      if (!found) {
        if (required)
          throw new Error(
            `${relative(root, dir) || "."}: dependency ${name} is not installed under ${root} (run npm ci)`,
          );
        const label = `${name} (of ${pkg.name ?? relative(root, dir)})`;
        if (!result.absent.includes(label)) result.absent.push(label);
        continue;
      }
      const st = await lstat(found);
      if (st.isSymbolicLink() && !linked.has(found)) {
        linked.add(found);
        result.links.push({ path: relative(root, found), target: await readlink(found) });
      }
      const real = await realpath(found);
      if (!isInside(root, real))
        throw new Error(`${name} resolves to ${real}, outside ${root}: cannot put it into an image`);
      if (visited.has(real)) continue;
      visited.add(real);
      if (workspaceDirs.has(real)) result.workspaces.push(relative(root, real));
      else result.packages.push(relative(root, real));
      queue.push(real);
    }
  }
  result.packages.sort();
  result.links.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return result;
}

/** Node's lookup of a bare specifier `name` from a module in `fromDir`, limited to `root`. */
function resolvePackage(root: string, fromDir: string, name: string): string | undefined {
  for (let dir = fromDir; isInside(root, dir); dir = dirname(dir)) {
    if (basename(dir) !== "node_modules") {
      const candidate = join(dir, "node_modules", name);
      if (existsSync(join(candidate, "package.json"))) return candidate;
    }
    if (dir === root) break;
  }
  return undefined;
}

/** Type declarations and their source maps: never loaded at run time. */
function isTypeDeclaration(name: string): boolean {
  return /\.d\.[mc]?ts(\.map)?$/.test(name);
}

/** Compiled tests and build metadata of a workspace's dist: not part of the product. */
function isTestOrBuildFile(name: string): boolean {
  return /\.test\.[mc]?js(\.map)?$/.test(name) || name.endsWith(".tsbuildinfo");
}

/** A workspace's `testing/` folders hold test support (fixtures, stand-ins): never shipped. */
function isTestSupportDirectory(name: string, isDirectory: boolean): boolean {
  return isDirectory && name === "testing";
}

/**
 * Adds host tree `hostDir` at `imageDir` with normalised modes (directories
 * 0755, files 0755 when executable else 0644, root-owned), symlinks kept,
 * skipping entries for which `skip(name, isDirectory, depth)` is true.
 */
async function addFilteredTree(
  layer: LayerBuilder,
  imageDir: string,
  hostDir: string,
  skip: (name: string, isDirectory: boolean, depth: number) => boolean,
): Promise<number> {
  let files = 0;
  layer.addDirectory(imageDir);
  const walk = async (hostSub: string, imageSub: string, depth: number): Promise<void> => {
    for (const name of (await readdir(hostSub)).sort()) {
      const h = join(hostSub, name);
      const i = `${imageSub}/${name}`;
      const st = await lstat(h);
      if (skip(name, st.isDirectory(), depth)) continue;
      if (st.isDirectory()) {
        layer.addDirectory(i);
        await walk(h, i, depth + 1);
      } else if (st.isSymbolicLink()) {
        layer.addSymlink(i, await readlink(h));
      } else if (st.isFile()) {
        layer.addHostFile(i, h, { mode: st.mode & 0o111 ? 0o755 : 0o644 });
        files++;
      }
    }
  };
  await walk(hostDir, imageDir, 0);
  return files;
}

/** Inputs of component images; all have defaults. */
export interface ComponentImageOptions extends LayerWriteOptions {
  /** Repository root holding the workspaces (built) and node_modules (default: this checkout). */
  repoRoot?: string;
  /** Linux x64 Node 24 binary put at {@link COMPONENT_NODE_PATH} (default: `findNodeBinary(24)`). */
  nodeBinary?: string;
  /** Static busybox (default /bin/busybox, Debian busybox-static). */
  busybox?: string;
  /** CA bundle copied to /etc/ssl/certs/ca-certificates.crt when it exists (default the host's). */
  caBundle?: string;
  /** Directory holding the CNI plugins for the agent image (default /usr/lib/cni, Debian containernetworking-plugins). */
  cniPluginsDir?: string;
  /** Image name prefix; images are named `<prefix>/<component>:<version>` (default `docker.io/esb`, what `esb/<component>` normalises to). */
  namePrefix?: string;
  /** Cache of the runtime images the agent image carries (a RuntimeImageStore folder; default the store's default). */
  runtimeImageCacheDir?: string;
  /** Receives one line per slow step (runtime images built or taken from the cache). */
  onProgress?: (line: string) => void;
}

/** How one program a component executes gets into its image. */
export interface ProgramInImage {
  name: string;
  /** Its path in the image (a directory of the image's PATH). */
  path: string;
  /**
   * `busybox`: an applet of the image's static busybox (a symlink to it);
   * `host`: this machine's binary with its shared libraries (for iptables also
   * its xtables extension modules, which it loads at run time).
   */
  source: "busybox" | "host";
  /** The host binary copied (source `host`), symlinks resolved. */
  hostBinary?: string;
}

/** A component image written to its own OCI layout. */
export interface ComponentImage extends WrittenImage {
  component: ComponentName;
  /** Version of the component's package.json; also the tag. */
  version: string;
  /** The image's Entrypoint. */
  entrypoint: string[];
  /** Stored (compressed) size of config and layers, in bytes. */
  storedBytes: number;
  /** What each layer holds (same order as `layers`). */
  layerHistory: string[];
  /** What went into the app layer. */
  packages: ProductionPackages;
  /** The programs the component executes and how each got into the image (empty when it declares none). */
  programs: ProgramInImage[];
  /** The managed-runtime images carried in {@link PREBUILT_RUNTIME_IMAGES_DIR} (their layouts on this machine), or none. */
  runtimeImages: RuntimeImage[];
}

/** PATH of every component image (Docker's default), so programs in /usr/sbin and /sbin are found. */
const IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Host programs preferred over the plain name: iptables with the nf_tables backend, as current distributions and kube-proxy use. */
const HOST_PROGRAM_CANDIDATES: Record<string, string[]> = {
  iptables: ["iptables-nft", "iptables"],
  "iptables-restore": ["iptables-nft-restore", "iptables-restore"],
  "ip6tables-restore": ["ip6tables-nft-restore", "ip6tables-restore"],
};

/** Where host programs are looked for. */
const HOST_PROGRAM_DIRS = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/**
 * Builds the images of `components` (default all three), each as an OCI
 * layout in `<outDir>/<component>` tagged with the component's version and
 * named `<namePrefix>/<component>:<version>`, without a container engine.
 * Layers, bottom-up: a base filesystem (/etc/passwd with root, `nonroot`
 * 65532 and nobody, /tmp and /var/tmp 1777, CA certificates, static busybox
 * with common applets), Node 24 at /usr/local/bin/node with its shared
 * libraries; for the agent the CNI plugins in /usr/lib/cni, the programs it
 * executes (its `AGENT_PROGRAMS`: busybox applets where the busybox has one,
 * else the host's binary with its shared libraries, e.g. iptables with the
 * nf_tables backend and its extensions) and the managed-runtime images
 * (nodejs24.x, nodejs22.x, provided; built by the runtime image builder into
 * the RuntimeImageStore cache, Node 22 from hack/fetch-node-runtime.sh 22)
 * as a runtime image folder in {@link PREBUILT_RUNTIME_IMAGES_DIR} (this
 * layer is stored uncompressed: it holds gzip blobs already); and the app:
 * `/app/<workspace>/{package.json,dist}` of the component and every workspace
 * it depends on, plus its production npm dependencies under `/app/…/node_modules`
 * (see {@link collectProductionPackages}); type declarations and compiled tests
 * are left out. Entrypoint `["/usr/local/bin/node", "/app/<workspace>/dist/main.js"]`,
 * WorkingDir /app, NODE_ENV=production, user 65532 (controller, gateway) or
 * root (agent). Layers are written once and hard-linked into the other
 * layouts. Throws when a workspace is not built or an input is missing.
 */
export async function buildComponentImages(
  options: ComponentImageOptions & { outDir: string; components?: readonly ComponentName[] },
): Promise<ComponentImage[]> {
  const components = options.components ?? COMPONENTS;
  for (const c of components) {
    if (!(COMPONENTS as readonly string[]).includes(c))
      throw new Error(`unknown component "${c}": expected one of ${COMPONENTS.join(", ")}`);
  }
  const repoRoot = options.repoRoot ?? fileURLToPath(new URL("../../../", import.meta.url));
  const namePrefix = options.namePrefix ?? "docker.io/esb";
  const busybox = options.busybox ?? "/bin/busybox";
  const caBundle = options.caBundle ?? "/etc/ssl/certs/ca-certificates.crt";
  const progress = options.onProgress ?? (() => undefined);
  const layerOptions: LayerWriteOptions = {
    compression: options.compression,
    gzipLevel: options.gzipLevel,
    mtime: options.mtime,
  };

  // Check every input before the slow part (compressing Node).
  const plans: {
    component: ComponentName;
    version: string;
    app: LayerBuilder;
    packages: ProductionPackages;
    programs: string[];
  }[] = [];
  for (const component of components) {
    const def = COMPONENT_DEFINITIONS[component];
    const main = join(repoRoot, def.workspace, "dist", "main.js");
    if (!existsSync(main))
      throw new Error(`${main} is missing: build the component first (npx tsc -b ${def.workspace})`);
    const packages = await collectProductionPackages(repoRoot, def.workspace);
    const app = await appLayer(repoRoot, packages);
    const version = readPackageJson(join(repoRoot, def.workspace)).version ?? "0.0.0";
    const programs = def.programs ? await declaredPrograms(repoRoot, def.workspace, def.programs) : [];
    plans.push({ component, version, app, packages, programs });
  }
  const nodeBinary = options.nodeBinary ?? findNodeBinary(24);
  const nodeLibs = await sharedLibraries(nodeBinary);
  const applets = await busyboxApplets(busybox);
  const base = baseLayer(busybox, applets, caBundle);
  const node = new LayerBuilder().addHostFile(COMPONENT_NODE_PATH, nodeBinary, { mode: 0o755 });
  for (const lib of nodeLibs) node.addHostFile(lib, lib, { mode: 0o755 });
  const present = new Set(nodeLibs);
  const cni = components.some((c) => COMPONENT_DEFINITIONS[c].cniPlugins)
    ? await cniLayer(options.cniPluginsDir ?? "/usr/lib/cni", present)
    : undefined;
  // Every component that declares programs gets its own layer (only the agent does today).
  const programLayers = new Map<ComponentName, { layer: LayerBuilder; programs: ProgramInImage[] }>();
  for (const plan of plans) {
    if (plan.programs.length > 0)
      programLayers.set(plan.component, await programsLayer(plan.programs, applets, new Set(present)));
  }
  const runtimeImages: RuntimeImage[] = [];
  if (components.some((c) => COMPONENT_DEFINITIONS[c].runtimeImages)) {
    const store = new RuntimeImageStore(
      options.runtimeImageCacheDir,
      createLogger("runtime-image-store", { level: "silent" }),
    );
    const optionsOf = (runtime: RuntimeName): RuntimeImageOptions => ({
      runtime,
      runtimeDistDir: join(repoRoot, "runtime", "dist"),
      busybox,
      caBundle,
      ...layerOptions,
    });
    // Planning checks every input (e.g. Node 22) before anything is built.
    for (const runtime of RUNTIMES) {
      await planRuntimeImage(optionsOf(runtime)).catch((err: unknown) => {
        throw new Error(`the agent image needs the ${runtime} runtime image: ${(err as Error).message}`, {
          cause: err,
        });
      });
    }
    for (const runtime of RUNTIMES) {
      const started = Date.now();
      const image = await store.get(optionsOf(runtime));
      progress(
        `runtime image ${runtime}: ${image.cached ? "from the cache" : "built"} in ${Date.now() - started} ms (${image.layoutDir})`,
      );
      runtimeImages.push(image);
    }
  }

  // Each shared layer is written once, into the first layout that needs it, and linked into the others.
  const written = new Map<string, { layoutDir: string; layer: LayerDescriptor }>();
  const once = async (
    writer: OciImageWriter,
    key: string,
    builder: LayerBuilder,
    opts: LayerWriteOptions = layerOptions,
  ): Promise<LayerDescriptor> => {
    const known = written.get(key);
    if (known) return writer.importLayer(known.layoutDir, known.layer);
    const layer = await writer.writeLayer(builder, opts);
    written.set(key, { layoutDir: writer.layoutDir, layer });
    return layer;
  };

  const images: ComponentImage[] = [];
  for (const plan of plans) {
    const def = COMPONENT_DEFINITIONS[plan.component];
    const writer = new OciImageWriter(join(options.outDir, plan.component));
    const layers: LayerDescriptor[] = [await once(writer, "base", base), await once(writer, "node", node)];
    const history = [
      "esb: base filesystem (users, /tmp, CA certificates, busybox)",
      "esb: Node.js 24 and its shared libraries",
    ];
    if (def.cniPlugins && cni) {
      layers.push(await once(writer, "cni", cni));
      history.push(`esb: CNI plugins ${AGENT_CNI_PLUGINS.join(", ")} in /usr/lib/cni`);
    }
    const programs = programLayers.get(plan.component);
    if (programs) {
      layers.push(await writer.writeLayer(programs.layer, layerOptions));
      history.push(
        `esb: programs ${def.workspace} executes: ${programs.programs.map((p) => `${p.name} (${p.source})`).join(", ")}`,
      );
    }
    const carried = def.runtimeImages ? runtimeImages : [];
    if (carried.length > 0) {
      const folder = new LayerBuilder();
      addRuntimeImageFolder(folder, PREBUILT_RUNTIME_IMAGES_DIR, carried);
      // The folder holds gzip blobs already: compressing them again would cost time for nothing.
      layers.push(await once(writer, "runtime-images", folder, { ...layerOptions, compression: "none" }));
      history.push(
        `esb: managed-runtime images ${carried.map((i) => i.runtime).join(", ")} in ${PREBUILT_RUNTIME_IMAGES_DIR}`,
      );
    }
    layers.push(await writer.writeLayer(plan.app, layerOptions));
    history.push(`esb: ${def.workspace} and its production dependencies in /app`);

    const entrypoint = [COMPONENT_NODE_PATH, `${COMPONENT_APP_DIR}/${def.workspace}/dist/main.js`];
    const config: ImageRunConfig = {
      User: `${def.user.uid}:${def.user.gid}`,
      Env: [`PATH=${IMAGE_PATH}`, "NODE_ENV=production"],
      Entrypoint: entrypoint,
      WorkingDir: COMPONENT_APP_DIR,
      ExposedPorts: Object.fromEntries(def.ports.map((p) => [`${p}/tcp`, {}])),
      Labels: {
        "org.opencontainers.image.title": def.title,
        "org.opencontainers.image.description": def.description,
        "org.opencontainers.image.version": plan.version,
        "org.opencontainers.image.licenses": "Apache-2.0",
      },
    };
    const image = await writer.writeImage({
      layers,
      config,
      history: history.map((created_by) => ({ created_by })),
      tag: plan.version,
      imageName: `${namePrefix}/${plan.component}:${plan.version}`,
    });
    images.push({
      ...image,
      component: plan.component,
      version: plan.version,
      entrypoint,
      storedBytes: layers.reduce((n, l) => n + l.size, image.config.size),
      layerHistory: history,
      packages: plan.packages,
      programs: programs?.programs ?? [],
      runtimeImages: carried,
    });
  }
  return images;
}

/** The program names a workspace declares in `ref.exportName` of its built module `ref.module`. */
async function declaredPrograms(
  repoRoot: string,
  workspace: string,
  ref: { module: string; exportName: string },
): Promise<string[]> {
  const file = join(repoRoot, workspace, ref.module);
  if (!existsSync(file))
    throw new Error(`${file} is missing: build the component first (npx tsc -b ${workspace})`);
  const mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  const list = mod[ref.exportName];
  if (!Array.isArray(list))
    throw new Error(`${file} does not export ${ref.exportName} as an array of programs`);
  const names = list.map((p: unknown) =>
    typeof p === "string" ? p : (p as { name?: unknown } | null)?.name,
  );
  for (const n of names) {
    if (typeof n !== "string" || !/^[A-Za-z0-9_.+-]+$/.test(n))
      throw new Error(`${file}: ${ref.exportName} holds an invalid program name ${JSON.stringify(n)}`);
  }
  return [...new Set(names as string[])];
}

/** The applets `busybox --list` names. */
async function busyboxApplets(busybox: string): Promise<Set<string>> {
  if (!existsSync(busybox))
    throw new Error(
      `${busybox} is missing: install a static busybox (Debian: apt-get install busybox-static)`,
    );
  const { stdout } = await run(busybox, ["--list"]);
  const applets = new Set(stdout.split("\n").map((s) => s.trim()));
  if (!applets.has("sh")) throw new Error(`${busybox} has no sh applet`);
  return applets;
}

/**
 * The layer holding `programs`: a busybox applet (symlink in /bin) for each
 * program the busybox has, else the host's binary (for iptables the nf_tables
 * variant) at its own path with its shared libraries not in `present`, linked
 * as /usr/sbin/<name> when its file has another name; for xtables binaries
 * also every extension module of the xtables folder and their libraries.
 */
async function programsLayer(
  programs: string[],
  applets: Set<string>,
  present: Set<string>,
): Promise<{ layer: LayerBuilder; programs: ProgramInImage[] }> {
  const layer = new LayerBuilder();
  const placed: ProgramInImage[] = [];
  const addLibraries = async (binary: string): Promise<string[]> => {
    const libs = await sharedLibraries(binary);
    for (const lib of libs) {
      if (present.has(lib)) continue;
      present.add(lib);
      layer.addHostFile(lib, lib, { mode: 0o755 });
    }
    return libs;
  };
  for (const name of programs) {
    if (applets.has(name)) {
      layer.addSymlink(`/bin/${name}`, "busybox");
      placed.push({ name, path: `/bin/${name}`, source: "busybox" });
      continue;
    }
    const host = findHostProgram(name);
    if (!host)
      throw new Error(
        `${name} is neither a busybox applet nor installed in ${HOST_PROGRAM_DIRS.join(", ")}: install it on this machine` +
          (name === "iptables" ? " (Debian: apt-get install iptables)" : ""),
      );
    const real = await realpath(host);
    layer.addHostFile(real, real, { mode: 0o755 });
    let path = real;
    if (basename(real) !== name) {
      path = `/usr/sbin/${name}`;
      layer.addSymlink(path, dirname(real) === "/usr/sbin" ? basename(real) : real);
    }
    const libs = await addLibraries(real);
    const xtables = libs.find((l) => basename(l).startsWith("libxtables.so"));
    if (xtables) {
      const dir = await xtablesExtensionsDir(xtables);
      await addFilteredTree(layer, dir, dir, () => false);
      for (const f of (await readdir(dir)).sort()) {
        const st = await lstat(join(dir, f));
        if (st.isFile() && f.endsWith(".so")) await addLibraries(join(dir, f));
      }
    }
    placed.push({ name, path, source: "host", hostBinary: real });
  }
  return { layer, programs: placed };
}

/** The host binary of program `name` (see {@link HOST_PROGRAM_CANDIDATES}), or undefined. */
function findHostProgram(name: string): string | undefined {
  for (const candidate of HOST_PROGRAM_CANDIDATES[name] ?? [name]) {
    for (const dir of HOST_PROGRAM_DIRS) {
      const p = join(dir, candidate);
      if (existsSync(p)) return p;
    }
  }
  return undefined;
}

/** The folder of iptables' extension modules (libxt_*.so…), which libxtables loads from its compiled-in XTABLES_LIBDIR: `<libdir>/xtables`. */
async function xtablesExtensionsDir(libxtables: string): Promise<string> {
  const real = await realpath(libxtables);
  const candidates = [
    join(dirname(real), "xtables"),
    // Without merged /usr the library is in /lib/<triplet> and the modules in /usr/lib/<triplet>.
    join("/usr/lib", basename(dirname(real)), "xtables"),
  ];
  const found = candidates.find((d) => existsSync(d));
  if (!found)
    throw new Error(
      `the xtables extension modules of ${libxtables} are missing (looked in ${candidates.join(", ")})`,
    );
  return found;
}

async function appLayer(repoRoot: string, packages: ProductionPackages): Promise<LayerBuilder> {
  const app = new LayerBuilder().addDirectory(COMPONENT_APP_DIR);
  for (const ws of packages.workspaces) {
    const host = join(repoRoot, ws);
    if (!existsSync(join(host, "dist")))
      throw new Error(`${join(host, "dist")} is missing: build the workspace first (npx tsc -b ${ws})`);
    app.addHostFile(`${COMPONENT_APP_DIR}/${ws}/package.json`, join(host, "package.json"), { mode: 0o644 });
    await addFilteredTree(
      app,
      `${COMPONENT_APP_DIR}/${ws}/dist`,
      join(host, "dist"),
      (name, isDir) =>
        isTypeDeclaration(name) || isTestOrBuildFile(name) || isTestSupportDirectory(name, isDir),
    );
  }
  for (const pkg of packages.packages) {
    // The package's own node_modules holds other packages, added only if resolved.
    await addFilteredTree(
      app,
      `${COMPONENT_APP_DIR}/${pkg}`,
      join(repoRoot, pkg),
      (name, isDir, depth) =>
        (isDir && depth === 0 && name === "node_modules") || (!isDir && isTypeDeclaration(name)),
    );
  }
  for (const link of packages.links) app.addSymlink(`${COMPONENT_APP_DIR}/${link.path}`, link.target);
  return app;
}

function baseLayer(busybox: string, applets: Set<string>, caBundle: string): LayerBuilder {
  const b = new LayerBuilder();
  for (const d of ["/bin", "/dev", "/etc", "/proc", "/sys", "/usr/bin", "/usr/local/bin", COMPONENT_APP_DIR])
    b.addDirectory(d);
  b.addDirectory("/root", { mode: 0o700 });
  b.addDirectory("/tmp", { mode: 0o1777 });
  b.addDirectory("/var/tmp", { mode: 0o1777 });
  const { name, uid, gid } = NONROOT_USER;
  b.addDirectory(`/home/${name}`, { uid, gid, mode: 0o700 });
  b.addFile(
    "/etc/passwd",
    `root:x:0:0:root:/root:/bin/sh\n${name}:x:${uid}:${gid}:nonroot:/home/${name}:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n`,
  );
  b.addFile("/etc/group", `root:x:0:\n${name}:x:${gid}:\nnobody:x:65534:\n`);
  b.addFile("/etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n");
  if (existsSync(caBundle)) b.addHostFile("/etc/ssl/certs/ca-certificates.crt", caBundle, { mode: 0o644 });
  b.addHostFile("/bin/busybox", busybox, { mode: 0o755 });
  for (const applet of APPLETS) if (applets.has(applet)) b.addSymlink(`/bin/${applet}`, "busybox");
  b.addSymlink("/usr/bin/env", "/bin/busybox");
  return b;
}

async function cniLayer(pluginsDir: string, present: Set<string>): Promise<LayerBuilder> {
  const layer = new LayerBuilder().addDirectory("/usr/lib/cni");
  for (const plugin of AGENT_CNI_PLUGINS) {
    const host = join(pluginsDir, plugin);
    if (!existsSync(host))
      throw new Error(
        `CNI plugin ${host} is missing: install the CNI plugins (Debian: apt-get install containernetworking-plugins) or pass cniPluginsDir`,
      );
    layer.addHostFile(`/usr/lib/cni/${plugin}`, host, { mode: 0o755 });
    for (const lib of await sharedLibraries(host)) {
      if (!present.has(lib)) layer.addHostFile(lib, lib, { mode: 0o755 });
    }
  }
  return layer;
}
