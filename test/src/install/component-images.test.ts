// The component images (controller, agent, gateway) built daemonlessly by
// runtime/src/image/component-image-builder.ts: the OCI layouts are checked
// independently of the writer (every digest recomputed), then each image is
// imported into the test containerd and its entrypoint is run with --help and
// --version. The containers get containerd's default, empty network namespace:
// nothing here sends network traffic.
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, existsSync, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
const builderMain = join(repoRoot, "runtime", "dist", "image", "build-component-images-main.js");
const id = randomBytes(3).toString("hex");
const namespace = `esb-images-test-${id}`;

/** What each image must be, mirroring docker/<component>.Dockerfile. */
const expected = {
  controller: { workspace: "controller", user: "65532:65532", uid: 65532 },
  agent: { workspace: "agent-daemonset", user: "0:0", uid: 0 },
  gateway: { workspace: "gateway", user: "65532:65532", uid: 65532 },
} as const;
type Component = keyof typeof expected;
const components = Object.keys(expected) as Component[];

interface BuildReport {
  buildMs: number;
  images: {
    component: Component;
    version: string;
    imageName: string;
    tag: string;
    layoutDir: string;
    manifestDigest: string;
    configDigest: string;
    entrypoint: string[];
    storedBytes: number;
    archive: string;
  }[];
}

let socket: string;
let dir: string;
let report: BuildReport;
const imported: string[] = [];

async function ctr(...args: string[]): Promise<string> {
  const { stdout } = await run("ctr", ["--address", socket, "-n", namespace, ...args], {
    maxBuffer: 16 << 20,
  });
  return stdout;
}

/** `ctr run --rm` with stdin closed; resolves with the exit code and output. */
function ctrRun(
  image: string,
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const container = `esb-images-test-${id}-${randomBytes(3).toString("hex")}`;
  return new Promise((resolve, reject) => {
    const child = spawn(
      "ctr",
      ["--address", socket, "-n", namespace, "run", "--rm", image, container, ...args],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

async function sha256OfFile(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return `sha256:${h.digest("hex")}`;
}

function blob(layoutDir: string, digest: string): string {
  return join(layoutDir, "blobs", "sha256", digest.replace(/^sha256:/, ""));
}

/** Checks that a blob exists with the descriptor's size and digest. */
async function verifyBlob(layoutDir: string, d: { digest: string; size: number }): Promise<void> {
  const path = blob(layoutDir, d.digest);
  expect(existsSync(path)).toBe(true);
  expect({ digest: await sha256OfFile(path), size: (await stat(path)).size }).toEqual({
    digest: d.digest,
    size: d.size,
  });
}

beforeAll(async () => {
  const s = process.env.ESB_TEST_CONTAINERD_SOCKET;
  if (!s)
    throw new Error(
      "ESB_TEST_CONTAINERD_SOCKET is not set: the test containerd must be running (see test/src/env)",
    );
  socket = s;
  if (!existsSync(builderMain))
    throw new Error(`${builderMain} is missing: build the runtime package (npx tsc -b runtime)`);
  dir = await mkdtemp(join(tmpdir(), "esb-component-images-"));
  const { stdout } = await run(
    process.execPath,
    [builderMain, "--out-dir", join(dir, "layouts"), "--archive-dir", join(dir, "archives"), "--json"],
    { cwd: repoRoot, maxBuffer: 16 << 20 },
  ).catch((err: { stderr?: string; message: string }) => {
    throw new Error(`build-component-images-main failed: ${err.stderr || err.message}`);
  });
  report = JSON.parse(stdout) as BuildReport;
  process.stdout.write(
    `component images built in ${report.buildMs} ms: ${report.images
      .map((i) => `${i.component} ${(i.storedBytes / 1e6).toFixed(1)} MB`)
      .join(", ")}\n`,
  );
}, 900_000);

afterAll(async () => {
  if (socket) {
    // --sync waits for containerd's garbage collection, so the namespace is empty afterwards.
    for (const image of imported) await ctr("images", "rm", "--sync", image).catch(() => undefined);
    for (let i = 0; i < 50; i++) {
      const removed = await run("ctr", ["--address", socket, "namespaces", "rm", namespace]).then(
        () => true,
        () => false,
      );
      if (removed) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  if (dir) await rm(dir, { recursive: true, force: true });
}, 120_000);

describe("component images (daemonless OCI layouts)", () => {
  it("builds one image per component, tagged with the component's version", () => {
    expect(report.images.map((i) => i.component).sort()).toEqual([...components].sort());
    for (const image of report.images) {
      const pkg = JSON.parse(
        readFileSync(join(repoRoot, expected[image.component].workspace, "package.json"), "utf8"),
      ) as {
        version: string;
      };
      expect(image.version).toBe(pkg.version);
      expect(image.imageName).toBe(`docker.io/esb/${image.component}:${pkg.version}`);
    }
  });

  it.each(components)(
    "%s: the layout's digests verify and the config names the entrypoint",
    async (component) => {
      const image = report.images.find((i) => i.component === component)!;
      const layout = image.layoutDir;
      expect(JSON.parse(await readFile(join(layout, "oci-layout"), "utf8"))).toEqual({
        imageLayoutVersion: "1.0.0",
      });
      const index = JSON.parse(await readFile(join(layout, "index.json"), "utf8")) as {
        manifests: { digest: string; size: number; annotations?: Record<string, string> }[];
      };
      expect(index.manifests).toHaveLength(1);
      const entry = index.manifests[0];
      expect(entry.digest).toBe(image.manifestDigest);
      expect(entry.annotations?.["io.containerd.image.name"]).toBe(image.imageName);
      await verifyBlob(layout, entry);
      const manifest = JSON.parse(await readFile(blob(layout, entry.digest), "utf8")) as {
        config: { digest: string; size: number };
        layers: { digest: string; size: number; mediaType: string }[];
      };
      await verifyBlob(layout, manifest.config);
      for (const layer of manifest.layers) await verifyBlob(layout, layer);
      const config = JSON.parse(await readFile(blob(layout, manifest.config.digest), "utf8")) as {
        os: string;
        architecture: string;
        rootfs: { diff_ids: string[] };
        config: { Entrypoint: string[]; WorkingDir: string; User: string; Env: string[] };
      };
      expect({ os: config.os, architecture: config.architecture }).toEqual({
        os: "linux",
        architecture: "amd64",
      });
      expect(config.rootfs.diff_ids).toHaveLength(manifest.layers.length);
      expect(config.config.Entrypoint).toEqual([
        "/usr/local/bin/node",
        `/app/${expected[component].workspace}/dist/main.js`,
      ]);
      expect(config.config.WorkingDir).toBe("/app");
      expect(config.config.User).toBe(expected[component].user);
      expect(config.config.Env).toContain("NODE_ENV=production");
    },
  );

  it("imports the three images into the test containerd", async () => {
    for (const image of report.images) {
      await ctr("images", "import", image.archive);
      imported.push(image.imageName);
    }
    const names = (await ctr("images", "ls", "-q")).split("\n").filter(Boolean);
    for (const image of report.images) expect(names).toContain(image.imageName);
  }, 600_000);

  it.each(components)(
    "%s: the entrypoint prints its usage with --help and exits 0",
    async (component) => {
      const image = report.images.find((i) => i.component === component)!;
      expect(imported).toContain(image.imageName);
      const res = await ctrRun(image.imageName, [...image.entrypoint, "--help"]);
      expect({ code: res.code, stderr: res.stderr }).toEqual({ code: 0, stderr: "" });
      expect(res.stdout).toMatch(/usage:/i);
      expect(res.stdout).toContain(`esb-${component}`);
    },
    300_000,
  );

  it.each(components)(
    "%s: the entrypoint prints the package version with --version and exits 0",
    async (component) => {
      const image = report.images.find((i) => i.component === component)!;
      expect(imported).toContain(image.imageName);
      const res = await ctrRun(image.imageName, [...image.entrypoint, "--version"]);
      expect({ code: res.code, stdout: res.stdout.trim(), stderr: res.stderr }).toEqual({
        code: 0,
        stdout: image.version,
        stderr: "",
      });
    },
    300_000,
  );

  it.each(components)(
    "%s: runs as its user in /app with a writable /tmp and no dev dependencies",
    async (component) => {
      const image = report.images.find((i) => i.component === component)!;
      expect(imported).toContain(image.imageName);
      const probe = [
        "const fs = require('node:fs');",
        "fs.writeFileSync('/tmp/probe', 'x');",
        "const has = (p) => fs.existsSync(p);",
        "console.log(JSON.stringify({ uid: process.getuid(), cwd: process.cwd(), node: process.versions.node.split('.')[0],",
        "  tmpMode: (fs.statSync('/tmp').mode & 0o7777).toString(8),",
        "  dev: ['typescript', 'jest', '@aws-sdk/client-lambda', '@types/dockerode'].filter((p) => has('/app/node_modules/' + p)),",
        "  shell: has('/bin/sh'), cni: has('/usr/lib/cni/bridge') }));",
      ].join("\n");
      const res = await ctrRun(image.imageName, [image.entrypoint[0], "-e", probe]);
      expect({ code: res.code, stderr: res.stderr }).toEqual({ code: 0, stderr: "" });
      expect(JSON.parse(res.stdout)).toEqual({
        uid: expected[component].uid,
        cwd: "/app",
        node: "24",
        tmpMode: "1777",
        dev: [],
        shell: true,
        cni: component === "agent",
      });
    },
    300_000,
  );
});
