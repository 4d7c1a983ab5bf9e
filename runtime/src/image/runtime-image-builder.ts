import { createHash } from "node:crypto";
import { execFile } from "node:child_process";
import { createReadStream, existsSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { promisify } from "node:util";
import { awsSdkLayer } from "./aws-sdk-layer.js";
import { LayerBuilder } from "./layer-builder.js";
import { findNodeBinary, sharedLibraries } from "./node-binary.js";
import {
  isPythonRuntime,
  PYTHON_BOOTSTRAP_MODULE,
  PYTHON_RUNTIMES,
  pythonBootstrapModule,
  pythonBootstrapScript,
  pythonRootfsLayer,
  pythonRuntimeEnv,
} from "./python-runtime.js";
import {
  OciImageWriter,
  readOciImage,
  type LayerWriteOptions,
  type WrittenImage,
} from "./oci-image-writer.js";
import type { ImageRunConfig, LayerDescriptor } from "./oci-types.js";
import { emulatorLauncherScript } from "../runtime-only-env.js";
import {
  EMULATOR_COMMAND,
  EMULATOR_LAUNCHER_PATH,
  EMULATOR_NODE_COMMAND,
  NODE_BOOTSTRAP_SCRIPT,
  WORKER_FILES,
  WORKER_PACKAGE_JSON,
} from "../worker-files.js";

const run = promisify(execFile);

/** Runtimes ESB builds images for. `provided` is the custom runtime (a `bootstrap` executable); Python's are in python-runtime.ts. */
export const RUNTIMES = ["nodejs24.x", "nodejs22.x", "provided", ...PYTHON_RUNTIMES] as const;
/** A runtime ESB builds an image for. */
export type RuntimeName = (typeof RUNTIMES)[number];

/** Lambda runtimes served by another runtime's image: `provided.al2023` is the same custom runtime (a `bootstrap` on a minimal OS). */
export const RUNTIME_ALIASES: Readonly<Record<string, RuntimeName>> = { "provided.al2023": "provided" };

/** The runtime whose image serves Lambda runtime `runtime` (itself or its alias target), or undefined when ESB has no image for it. */
export function imageRuntimeOf(runtime: string): RuntimeName | undefined {
  if ((RUNTIMES as readonly string[]).includes(runtime)) return runtime as RuntimeName;
  return RUNTIME_ALIASES[runtime];
}

/** The name of a runtime image, in its layout (`io.containerd.image.name`) and in containerd: `esb.local/runtime/<runtime>:<tag>`. */
export function runtimeImageName(runtime: RuntimeName, tag: string): string {
  return `esb.local/runtime/${runtime}:${tag}`;
}

/** Bumped whenever the image layout this file produces changes, so cached images are rebuilt. */
const BUILDER_VERSION = "1";

/** Non-root user the function runs as (the user AWS Lambda uses), and its group. */
export const SANDBOX_USER = { name: "sbx_user1051", uid: 993, gid: 990 } as const;

/** Where the worker files (emulator, Node runtime client) live in the image. */
export const RUNTIME_FILES_DIR = "/var/runtime/esb";

/** The entrypoint of every runtime image: the Runtime Interface Emulator (its arguments, if any, are an explicit bootstrap command). */
export const EMULATOR_ENTRYPOINT: string[] = EMULATOR_COMMAND;

/** Busybox applets linked in /bin (those this machine's busybox has). */
const APPLETS = [
  "sh",
  "ash",
  "awk",
  "base64",
  "basename",
  "cat",
  "chmod",
  "cp",
  "cut",
  "date",
  "dirname",
  "echo",
  "env",
  "expr",
  "false",
  "find",
  "grep",
  "gunzip",
  "gzip",
  "head",
  "hostname",
  "id",
  "kill",
  "ln",
  "ls",
  "md5sum",
  "mkdir",
  "mktemp",
  "mv",
  "nc",
  "printf",
  "ps",
  "pwd",
  "readlink",
  "realpath",
  "rm",
  "rmdir",
  "sed",
  "seq",
  "sha256sum",
  "sleep",
  "sort",
  "stat",
  "tail",
  "tar",
  "tee",
  "test",
  "[",
  "timeout",
  "touch",
  "tr",
  "true",
  "uname",
  "uniq",
  "wc",
  "wget",
  "which",
  "whoami",
  "xargs",
];

/** Inputs of a runtime image; everything but `runtime` has a default. */
export interface RuntimeImageOptions extends LayerWriteOptions {
  runtime: RuntimeName;
  /** Compiled runtime package (default: this package's dist/); must hold the worker files. */
  runtimeDistDir?: string;
  /** Worker files to copy, relative to `runtimeDistDir` (default: `WORKER_FILES` of worker-files.ts). */
  workerFiles?: string[];
  /** Node binary to put at /var/lang/bin/node (default: see {@link findNodeBinary}; `provided` uses Node 24 for the emulator). */
  nodeBinary?: string;
  /** Root file system of a Python runtime (default: see pythonRootfsLayer in python-runtime.ts). */
  pythonRootfs?: string;
  /** Static busybox (default /bin/busybox, Debian busybox-static). */
  busybox?: string;
  /** CA bundle copied to /etc/ssl/certs/ca-certificates.crt when it exists (default the host's). */
  caBundle?: string;
  /** The AWS SDK layer of nodejs runtimes (see aws-sdk-layer.ts); default true, ignored for `provided`. */
  awsSdk?: boolean;
}

/** A runtime or function image in an OCI layout. */
export interface RuntimeImage extends WrittenImage {
  runtime: RuntimeName;
  /** sha256 (hex) of every input of the image; equal fingerprints mean byte-identical images. */
  fingerprint: string;
}

/** The planned layers of a runtime image and their fingerprint, before anything is written. */
export interface RuntimeImagePlan {
  runtime: RuntimeName;
  layers: { builder: LayerBuilder; createdBy: string }[];
  config: ImageRunConfig;
  fingerprint: string;
}

/**
 * Works out the layers (base filesystem + busybox, Node + its shared
 * libraries, worker files) and config of a runtime image and fingerprints
 * every input, without writing anything.
 */
export async function planRuntimeImage(options: RuntimeImageOptions): Promise<RuntimeImagePlan> {
  const { runtime } = options;
  if (!RUNTIMES.includes(runtime)) {
    throw new Error(`unsupported runtime "${runtime}": expected one of ${RUNTIMES.join(", ")}`);
  }
  const distDir = options.runtimeDistDir ?? fileURLToPath(new URL("../", import.meta.url));
  const workerFiles = options.workerFiles ?? WORKER_FILES;
  const major = runtime === "nodejs22.x" ? 22 : 24;
  const nodeBinary = options.nodeBinary ?? findNodeBinary(major);
  const busybox = options.busybox ?? "/bin/busybox";
  const caBundle = options.caBundle ?? "/etc/ssl/certs/ca-certificates.crt";

  const base = await baseLayer(busybox, caBundle);
  // Python images: the emulator's Node loads the Python root file system's glibc and libstdc++.
  const python = isPythonRuntime(runtime)
    ? await pythonRootfsLayer(runtime, options.pythonRootfs)
    : undefined;
  const node = new LayerBuilder().addHostFile("/var/lang/bin/node", nodeBinary, { mode: 0o755 });
  if (!python)
    for (const lib of await sharedLibraries(nodeBinary)) node.addHostFile(lib, lib, { mode: 0o755 });

  const worker = new LayerBuilder().addDirectory(RUNTIME_FILES_DIR);
  for (const f of workerFiles) {
    const host = join(distDir, f);
    if (!existsSync(host))
      throw new Error(`worker file ${host} is missing: build the runtime package first (npx tsc -b runtime)`);
    worker.addHostFile(`${RUNTIME_FILES_DIR}/${f}`, host, { mode: 0o644 });
  }
  // The compiled files are ES modules; without this Node would have to guess per file.
  if (!workerFiles.includes("package.json"))
    worker.addFile(`${RUNTIME_FILES_DIR}/package.json`, WORKER_PACKAGE_JSON);
  worker.addFile(EMULATOR_LAUNCHER_PATH, emulatorLauncherScript(...EMULATOR_NODE_COMMAND), { mode: 0o755 });
  if (isPythonRuntime(runtime)) {
    worker.addFile("/var/runtime/bootstrap", pythonBootstrapScript(runtime), { mode: 0o755 });
    worker.addFile(PYTHON_BOOTSTRAP_MODULE, pythonBootstrapModule(runtime));
  } else if (runtime !== "provided")
    worker.addFile("/var/runtime/bootstrap", NODE_BOOTSTRAP_SCRIPT, { mode: 0o755 });

  const env = [
    "PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
    "LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib",
    "LANG=en_US.UTF-8",
    "TZ=:UTC",
    "LAMBDA_TASK_ROOT=/var/task",
    "LAMBDA_RUNTIME_DIR=/var/runtime",
  ];
  if (isPythonRuntime(runtime)) env.push(...pythonRuntimeEnv(runtime));
  else if (runtime !== "provided") {
    env.push(
      `AWS_EXECUTION_ENV=AWS_Lambda_${runtime}`,
      `NODE_PATH=/opt/nodejs/node${major}/node_modules:/opt/nodejs/node_modules:/var/runtime/node_modules:/var/runtime:/var/task`,
    );
  }
  const config: ImageRunConfig = {
    User: `${SANDBOX_USER.uid}:${SANDBOX_USER.gid}`,
    Env: env,
    Entrypoint: EMULATOR_ENTRYPOINT,
    WorkingDir: "/var/task",
    ExposedPorts: { "8080/tcp": {} },
    Labels: { "dev.esb.runtime": runtime },
  };
  const layers = [
    { builder: base, createdBy: "esb: Lambda filesystem layout, busybox" },
    ...(python ? [{ builder: python, createdBy: `esb: ${runtime} (Debian), awslambdaric, boto3` }] : []),
    {
      builder: node,
      createdBy: python
        ? "esb: Node.js 24 for the emulator"
        : `esb: Node.js ${major} and its shared libraries`,
    },
  ];
  // The JavaScript SDK is for Node functions; Python images carry boto3 in their own layer.
  if (runtime !== "provided" && !python && options.awsSdk !== false) {
    const sdk = await awsSdkLayer();
    const s3 = sdk.packages.find((p) => p.name === "@aws-sdk/client-s3");
    layers.push({ builder: sdk.builder, createdBy: `esb: AWS SDK for JavaScript ${s3?.version ?? "v3"}` });
  }
  layers.push({ builder: worker, createdBy: "esb: Runtime Interface Emulator and runtime client" });
  const fingerprint = await fingerprintOf(
    {
      version: BUILDER_VERSION,
      runtime,
      config,
      compression: options.compression ?? "gzip",
      gzipLevel: options.gzipLevel ?? 1,
      mtime: options.mtime ?? 0,
    },
    layers.map((l) => l.builder),
  );
  return { runtime, layers, config, fingerprint };
}

/**
 * Builds the runtime image `options.runtime` as an OCI layout in `outDir`
 * (tag: the first 12 hex digits of the fingerprint; name
 * {@link runtimeImageName}). Layers: the Lambda filesystem
 * (/var/task, /var/runtime, /opt, /tmp 1777, /etc/passwd with sbx_user1051
 * 993:990, busybox as /bin/sh and common applets), Node at /var/lang/bin/node
 * with its shared libraries, for nodejs runtimes the AWS SDK for JavaScript v3
 * in /var/runtime/node_modules (aws-sdk-layer.ts), and the worker files in /var/runtime/esb (plus
 * /var/runtime/bootstrap for nodejs runtimes). Entrypoint: the emulator; user
 * 993:990; working directory /var/task.
 */
export async function buildRuntimeImage(
  options: RuntimeImageOptions & { outDir: string },
): Promise<RuntimeImage> {
  const plan = await planRuntimeImage(options);
  return writeRuntimeImage(plan, options.outDir, options);
}

/** Writes a planned runtime image to the layout at `outDir`. */
export async function writeRuntimeImage(
  plan: RuntimeImagePlan,
  outDir: string,
  options: LayerWriteOptions = {},
): Promise<RuntimeImage> {
  const writer = new OciImageWriter(outDir);
  const layers: LayerDescriptor[] = [];
  for (const l of plan.layers) layers.push(await writer.writeLayer(l.builder, options));
  const tag = plan.fingerprint.slice(0, 12);
  const image = await writer.writeImage({
    layers,
    config: plan.config,
    history: plan.layers.map((l) => ({ created_by: l.createdBy })),
    tag,
    imageName: runtimeImageName(plan.runtime, tag),
  });
  return { ...image, runtime: plan.runtime, fingerprint: plan.fingerprint };
}

/** Options of {@link buildFunctionImage}. */
export interface FunctionImageOptions extends LayerWriteOptions {
  /** OCI layout of the runtime image to build on (e.g. `RuntimeImage.layoutDir`). */
  baseLayout: string;
  /** Tag of the base image in `baseLayout` (default: its only image). */
  baseTag?: string;
  /** Layout to write (created; may not be `baseLayout`). */
  outDir: string;
  /** Host directory whose contents become /var/task … */
  codeDir?: string;
  /** … or files by path relative to /var/task (e.g. `{"index.mjs": "export const handler = …"}`). */
  files?: Record<string, string | Buffer>;
  /** Extra environment (`KEY=value`), replacing base entries with the same key (e.g. `_HANDLER=index.handler`). */
  env?: string[];
  /** Image Cmd. ESB's emulator takes its arguments as an explicit bootstrap command, so leave it unset for runtime images; name the handler with `env: ["_HANDLER=index.handler"]`. */
  cmd?: string[];
  /** Tag in the new layout (default: 12 hex digits of the fingerprint). */
  tag?: string;
  /** Full image name for containerd (default `esb.local/function/<runtime>:<tag>`). */
  imageName?: string;
}

/**
 * Builds a function image: the layers of the runtime image in `baseLayout`
 * (hard-linked, not copied, when on the same file system) plus one layer
 * with the function's code at /var/task (root-owned, files 0644 or 0755 when
 * executable, directories 0755), and the base config with `env`/`cmd` applied.
 */
export async function buildFunctionImage(options: FunctionImageOptions): Promise<RuntimeImage> {
  if ((options.codeDir === undefined) === (options.files === undefined)) {
    throw new Error("buildFunctionImage: give exactly one of codeDir or files");
  }
  const base = await readOciImage(options.baseLayout, options.baseTag);
  const code = new LayerBuilder().addDirectory("/var/task");
  if (options.codeDir !== undefined) await code.addHostTree("/var/task", options.codeDir);
  else {
    for (const [name, content] of Object.entries(options.files!)) {
      const mode =
        name === "bootstrap" || name.endsWith("/bootstrap") || name.endsWith(".sh") ? 0o755 : 0o644;
      code.addFile(`/var/task/${name}`, content, { mode });
    }
  }
  const config: ImageRunConfig = { ...base.imageConfig.config };
  if (options.env) {
    const keys = new Set(options.env.map((e) => e.split("=")[0]));
    config.Env = [...(config.Env ?? []).filter((e) => !keys.has(e.split("=")[0])), ...options.env];
  }
  if (options.cmd) config.Cmd = options.cmd;
  const runtime = (config.Labels?.["dev.esb.runtime"] ?? "provided") as RuntimeName;
  const fingerprint = await fingerprintOf(
    {
      version: BUILDER_VERSION,
      base: base.manifest.digest,
      config,
      compression: options.compression ?? "gzip",
      mtime: options.mtime ?? 0,
    },
    [code],
  );
  const writer = new OciImageWriter(options.outDir);
  const layers: LayerDescriptor[] = [];
  for (const l of base.layers) layers.push(await writer.importLayer(options.baseLayout, l));
  layers.push(await writer.writeLayer(code, options));
  const tag = options.tag ?? fingerprint.slice(0, 12);
  const image = await writer.writeImage({
    layers,
    config,
    history: [...(base.imageConfig.history ?? []), { created_by: "esb: function code in /var/task" }],
    tag,
    imageName: options.imageName ?? `esb.local/function/${runtime}:${tag}`,
  });
  return { ...image, runtime, fingerprint };
}

async function baseLayer(busybox: string, caBundle: string): Promise<LayerBuilder> {
  if (!existsSync(busybox))
    throw new Error(
      `${busybox} is missing: install a static busybox (Debian: apt-get install busybox-static)`,
    );
  const b = new LayerBuilder();
  for (const d of [
    "/bin",
    "/dev",
    "/etc",
    "/home",
    "/opt",
    "/proc",
    "/sys",
    "/usr/bin",
    "/usr/local/bin",
    "/var/lang/bin",
    "/var/runtime",
    "/var/task",
  ]) {
    b.addDirectory(d);
  }
  b.addDirectory("/root", { mode: 0o700 });
  b.addDirectory("/tmp", { mode: 0o1777 });
  b.addDirectory("/var/tmp", { mode: 0o1777 });
  b.addDirectory(`/home/${SANDBOX_USER.name}`, { uid: SANDBOX_USER.uid, gid: SANDBOX_USER.gid });
  const { name, uid, gid } = SANDBOX_USER;
  b.addFile(
    "/etc/passwd",
    `root:x:0:0:root:/root:/bin/sh\n${name}:x:${uid}:${gid}::/home/${name}:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n`,
  );
  b.addFile("/etc/group", `root:x:0:\n${name}:x:${gid}:\nnobody:x:65534:\n`);
  b.addFile("/etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n");
  if (existsSync(caBundle)) b.addHostFile("/etc/ssl/certs/ca-certificates.crt", caBundle, { mode: 0o644 });

  b.addHostFile("/bin/busybox", busybox, { mode: 0o755 });
  const { stdout } = await run(busybox, ["--list"]);
  const available = new Set(stdout.split("\n").map((s) => s.trim()));
  for (const applet of APPLETS) if (available.has(applet)) b.addSymlink(`/bin/${applet}`, "busybox");
  if (!available.has("sh")) throw new Error(`${busybox} has no sh applet`);
  // Shebangs commonly name /usr/bin/env.
  b.addSymlink("/usr/bin/env", "/bin/busybox");
  return b;
}

/** sha256 over `meta` and every entry of `layers`, file contents included. */
async function fingerprintOf(meta: object, layers: LayerBuilder[]): Promise<string> {
  const h = createHash("sha256");
  h.update(JSON.stringify(meta));
  for (const layer of layers) {
    h.update("\0layer\0");
    for (const e of layer.entries()) {
      const { content, sourcePath, ...rest } = e as { content?: Buffer; sourcePath?: string };
      h.update(JSON.stringify(rest));
      if (content) h.update(content);
      if (sourcePath) h.update(await hostFileDigest(sourcePath));
    }
  }
  return h.digest("hex");
}

// Hashing the ~120 MB Node binary takes a noticeable moment: remember digests
// per file identity (device, inode, size, mtime) for the life of the process.
const fileDigests = new Map<string, string>();

async function hostFileDigest(path: string): Promise<string> {
  const st = await stat(path);
  const key = `${path}\0${st.dev}\0${st.ino}\0${st.size}\0${st.mtimeMs}`;
  const known = fileDigests.get(key);
  if (known) return known;
  const h = createHash("sha256");
  // Small files (a Python runtime has ~10k) in one read: a stream per file costs more than the hash.
  if (st.size < 1 << 20) h.update(await readFile(path));
  else for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  const digest = h.digest("hex");
  fileDigests.set(key, digest);
  return digest;
}
