import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { lstat, readdir, readlink, realpath } from "node:fs/promises";
import { basename, dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { LayerBuilder } from "./layer-builder.js";
import { findNodeBinary, sharedLibraries } from "./node-binary.js";
import { OciImageWriter, type LayerWriteOptions, type WrittenImage } from "./oci-image-writer.js";
import type { ImageRunConfig, LayerDescriptor } from "./oci-types.js";

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
}

/** The three components, mirroring docker/<component>.Dockerfile. */
export const COMPONENT_DEFINITIONS: Record<ComponentName, ComponentDefinition> = {
  controller: {
    workspace: "controller",
    title: "esb-controller",
    description: "ESB controller: LambdaFunction reconciler",
    user: { uid: NONROOT_USER.uid, gid: NONROOT_USER.gid },
    ports: [8080, 8081],
    cniPlugins: false,
  },
  agent: {
    workspace: "agent-daemonset",
    title: "esb-agent",
    description: "ESB agent: per-node worker runtime (containerd, CNI, freezer)",
    // Root on purpose: network namespaces, CNI, cgroups and the containerd socket need it.
    user: { uid: 0, gid: 0 },
    ports: [50051, 9090],
    cniPlugins: true,
  },
  gateway: {
    workspace: "gateway",
    title: "esb-gateway",
    description: "ESB gateway: Lambda Invoke API and HTTP routes",
    user: { uid: NONROOT_USER.uid, gid: NONROOT_USER.gid },
    ports: [9000],
    cniPlugins: false,
  },
};

/** CNI plugins the agent image carries in /usr/lib/cni (those charts/esb's init container copies to nodes). */
export const AGENT_CNI_PLUGINS = ["bridge", "host-local", "loopback", "portmap"];

/** Busybox applets linked in /bin when the busybox has them: a shell for debugging, `sh -c cp` for the chart's init container, mkfifo for the agent's task logs. */
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
  "mkfifo",
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
  /** What went into the app layer. */
  packages: ProductionPackages;
}

/**
 * Builds the images of `components` (default all three), each as an OCI
 * layout in `<outDir>/<component>` tagged with the component's version and
 * named `<namePrefix>/<component>:<version>`, without a container engine.
 * Layers, bottom-up: a base filesystem (/etc/passwd with root, `nonroot`
 * 65532 and nobody, /tmp and /var/tmp 1777, CA certificates, static busybox
 * with common applets), Node 24 at /usr/local/bin/node with its shared
 * libraries, for the agent the CNI plugins in /usr/lib/cni, and the app:
 * `/app/<workspace>/{package.json,dist}` of the component and every workspace
 * it depends on, plus its production npm dependencies under `/app/…/node_modules`
 * (see {@link collectProductionPackages}); type declarations and compiled tests
 * are left out. Entrypoint `["/usr/local/bin/node", "/app/<workspace>/dist/main.js"]`,
 * WorkingDir /app, NODE_ENV=production, user 65532 (controller, gateway) or
 * root (agent). The base and Node layers are written once and hard-linked
 * into the other layouts. Throws when a workspace is not built.
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
  }[] = [];
  for (const component of components) {
    const def = COMPONENT_DEFINITIONS[component];
    const main = join(repoRoot, def.workspace, "dist", "main.js");
    if (!existsSync(main))
      throw new Error(`${main} is missing: build the component first (npx tsc -b ${def.workspace})`);
    const packages = await collectProductionPackages(repoRoot, def.workspace);
    const app = await appLayer(repoRoot, packages);
    const version = readPackageJson(join(repoRoot, def.workspace)).version ?? "0.0.0";
    plans.push({ component, version, app, packages });
  }
  const nodeBinary = options.nodeBinary ?? findNodeBinary(24);
  const nodeLibs = await sharedLibraries(nodeBinary);
  const base = await baseLayer(
    options.busybox ?? "/bin/busybox",
    options.caBundle ?? "/etc/ssl/certs/ca-certificates.crt",
  );
  const node = new LayerBuilder().addHostFile(COMPONENT_NODE_PATH, nodeBinary, { mode: 0o755 });
  for (const lib of nodeLibs) node.addHostFile(lib, lib, { mode: 0o755 });
  const cni = components.some((c) => COMPONENT_DEFINITIONS[c].cniPlugins)
    ? await cniLayer(options.cniPluginsDir ?? "/usr/lib/cni", new Set(nodeLibs))
    : undefined;

  let shared:
    { layoutDir: string; base: LayerDescriptor; node: LayerDescriptor; cni?: LayerDescriptor } | undefined;
  const images: ComponentImage[] = [];
  for (const plan of plans) {
    const def = COMPONENT_DEFINITIONS[plan.component];
    const writer = new OciImageWriter(join(options.outDir, plan.component));
    if (!shared) {
      shared = {
        layoutDir: writer.layoutDir,
        base: await writer.writeLayer(base, layerOptions),
        node: await writer.writeLayer(node, layerOptions),
      };
    }
    const layers: LayerDescriptor[] = [
      await writer.importLayer(shared.layoutDir, shared.base),
      await writer.importLayer(shared.layoutDir, shared.node),
    ];
    const history = [
      { created_by: "esb: base filesystem (users, /tmp, CA certificates, busybox)" },
      { created_by: "esb: Node.js 24 and its shared libraries" },
    ];
    if (def.cniPlugins && cni) {
      if (!shared.cni) {
        shared.cni = await writer.writeLayer(cni, layerOptions);
        layers.push(shared.cni);
      } else layers.push(await writer.importLayer(shared.layoutDir, shared.cni));
      history.push({ created_by: `esb: CNI plugins ${AGENT_CNI_PLUGINS.join(", ")} in /usr/lib/cni` });
    }
    layers.push(await writer.writeLayer(plan.app, layerOptions));
    history.push({ created_by: `esb: ${def.workspace} and its production dependencies in /app` });

    const entrypoint = [COMPONENT_NODE_PATH, `${COMPONENT_APP_DIR}/${def.workspace}/dist/main.js`];
    const config: ImageRunConfig = {
      User: `${def.user.uid}:${def.user.gid}`,
      Env: ["PATH=/usr/local/bin:/usr/bin:/bin", "NODE_ENV=production"],
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
      history,
      tag: plan.version,
      imageName: `${namePrefix}/${plan.component}:${plan.version}`,
    });
    images.push({
      ...image,
      component: plan.component,
      version: plan.version,
      entrypoint,
      storedBytes: layers.reduce((n, l) => n + l.size, image.config.size),
      packages: plan.packages,
    });
  }
  return images;
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
      (name) => isTypeDeclaration(name) || isTestOrBuildFile(name),
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

async function baseLayer(busybox: string, caBundle: string): Promise<LayerBuilder> {
  if (!existsSync(busybox))
    throw new Error(
      `${busybox} is missing: install a static busybox (Debian: apt-get install busybox-static)`,
    );
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
  const { stdout } = await run(busybox, ["--list"]);
  const available = new Set(stdout.split("\n").map((s) => s.trim()));
  if (!available.has("sh")) throw new Error(`${busybox} has no sh applet`);
  for (const applet of APPLETS) if (available.has(applet)) b.addSymlink(`/bin/${applet}`, "busybox");
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
