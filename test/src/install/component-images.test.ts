// The component images (controller, agent, gateway) built daemonlessly by
// runtime/src/image/component-image-builder.ts: the OCI layouts are checked
// independently of the writer (every digest recomputed), then each image is
// imported into the test containerd from its OCI archive and its entrypoint is
// run with --help and --version. The agent image is also checked for what the
// agent needs at run time: every program of AGENT_PROGRAMS runs inside it (in
// a privileged container), its own CNI code makes and removes a worker network
// there, and its prebuilt runtime images verify and are imported into
// containerd by the agent's resolver from a read-only root file system. The
// containers get containerd's default network namespace of their own (only
// loopback; the CNI probe makes a bridge inside it): nothing here touches the
// host's network or sends traffic.
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, existsSync, readFileSync, readlinkSync } from "node:fs";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { AGENT_PROGRAMS } from "@esb/agent/main";

const run = promisify(execFile);
const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
const builderMain = join(repoRoot, "runtime", "dist", "image", "build-component-images-main.js");
const id = randomBytes(3).toString("hex");
const namespace = `esb-images-test-${id}`;

/** What each image must be. */
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
    component: Component | "nats" | "victoria-logs";
    version: string;
    imageName: string;
    tag: string;
    layoutDir: string;
    manifestDigest: string;
    configDigest: string;
    entrypoint: string[];
    storedBytes: number;
    layers: { digest: string; mediaType: string; size: number; createdBy: string }[];
    programs: { name: string; path: string; source: "busybox" | "host"; hostBinary?: string }[];
    runtimeImages: {
      runtime: string;
      tag: string;
      imageName: string;
      manifestDigest: string;
      storedBytes: number;
    }[];
    archive: string;
  }[];
}

/** Where the agent image carries its runtime images (PREBUILT_RUNTIME_IMAGES_DIR). */
const RUNTIME_IMAGES_DIR = "/usr/share/esb/runtime-images";
/** The runtime images the agent image carries, and the Node major each one's /var/lang/bin/node has (the emulator's, in Python images). */
const RUNTIME_NODE_MAJOR = {
  "nodejs24.x": "24",
  "nodejs22.x": "22",
  "python3.13": "24",
  "python3.11": "24",
  provided: "24",
} as const;

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

/** How {@link ctrRun} runs a container. */
interface RunOptions {
  /** All capabilities and devices (what the agent's DaemonSet grants); the network namespace stays the container's own. */
  privileged?: boolean;
  /** Read-only root file system. */
  readOnly?: boolean;
  env?: Record<string, string>;
  /** Bind mounts `host path → container path`. */
  mounts?: Record<string, string>;
}

/** `ctr run --rm` with stdin closed; resolves with the exit code and output. */
function ctrRun(
  image: string,
  args: string[],
  opts: RunOptions = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const container = `esb-images-test-${id}-${randomBytes(3).toString("hex")}`;
  const flags: string[] = [];
  if (opts.privileged) flags.push("--privileged");
  if (opts.readOnly) flags.push("--read-only");
  for (const [k, v] of Object.entries(opts.env ?? {})) flags.push("--env", `${k}=${v}`);
  for (const [src, dst] of Object.entries(opts.mounts ?? {}))
    flags.push("--mount", `type=bind,src=${src},dst=${dst},options=rbind:rw`);
  return new Promise((resolve, reject) => {
    const child = spawn(
      "ctr",
      ["--address", socket, "-n", namespace, "run", "--rm", ...flags, image, container, ...args],
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
    // Every image of the namespace (the components, the runtime images the agent imported, digest
    // names of kind's import); --sync waits for containerd's garbage collection, so the namespace
    // is empty afterwards.
    const names = await ctr("images", "ls", "-q").then(
      (out) => out.split("\n").filter(Boolean),
      () => imported,
    );
    for (const image of names) await ctr("images", "rm", "--sync", image).catch(() => undefined);
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
    expect(report.images.map((i) => i.component).sort()).toEqual(
      [...components, "nats", "victoria-logs"].sort(),
    );
    for (const image of report.images) {
      // Tagged with the server's version (below).
      if (image.component === "nats" || image.component === "victoria-logs") continue;
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

  it("imports the three OCI archives with ctr images import, each named <prefix>/<component>:<version>", async () => {
    for (const image of report.images) {
      await ctr("images", "import", image.archive);
      imported.push(image.imageName);
    }
    const names = (await ctr("images", "ls", "-q")).split("\n").filter(Boolean);
    expect(names.sort()).toEqual(report.images.map((i) => i.imageName).sort());
    for (const image of report.images) {
      const row = (await ctr("images", "ls", `name==${image.imageName}`)).split("\n")[1] ?? "";
      expect(row).toContain(image.manifestDigest);
    }
  }, 600_000);

  it("the archives also import the way kind load image-archive does (--all-platforms --digests)", async () => {
    for (const image of report.images) {
      await ctr("images", "import", "--all-platforms", "--digests", image.archive);
    }
    const names = (await ctr("images", "ls", "-q")).split("\n").filter(Boolean);
    for (const image of report.images) {
      expect(names).toContain(image.imageName);
      // --digests adds a name by digest: removed again, the named images stay.
      for (const n of names.filter((n) => n.endsWith(`@${image.manifestDigest}`)))
        await ctr("images", "rm", n);
    }
    expect((await ctr("images", "ls", "-q")).split("\n").filter(Boolean).sort()).toEqual(
      report.images.map((i) => i.imageName).sort(),
    );
  }, 600_000);

  it("nats: the unmodified nats-server built by make nats, tagged with its version", async () => {
    const image = report.images.find((i) => i.component === "nats")!;
    expect(image.imageName).toBe(`docker.io/esb/nats:${image.version}`);
    expect(imported).toContain(image.imageName);
    const res = await ctrRun(image.imageName, [...image.entrypoint, "--version"]);
    expect({ code: res.code, stdout: res.stdout.trim(), stderr: res.stderr }).toEqual({
      code: 0,
      stdout: `nats-server: v${image.version}`,
      stderr: "",
    });
  }, 300_000);

  it("victoria-logs: the unmodified VictoriaLogs built by make victorialogs, tagged with its version", async () => {
    const image = report.images.find((i) => i.component === "victoria-logs")!;
    expect(image.imageName).toBe(`docker.io/esb/victoria-logs:${image.version}`);
    expect(image.version).toMatch(/^\d+\.\d+\.\d+$/);
    expect(imported).toContain(image.imageName);
    const res = await ctrRun(image.imageName, [...image.entrypoint, "-help"]);
    // (Its stderr may hold an INFO line: no PSI metrics on a cgroup v1 host.)
    expect({ code: res.code, stderr: res.stderr.replace(/^.*INFO: metrics: .*\n/gm, "") }).toEqual({
      code: 0,
      stderr: "",
    });
    // The flags the chart relies on.
    for (const flag of ["-httpAuth.username", "-httpAuth.password", "-storageDataPath", "-retentionPeriod"])
      expect(res.stdout).toContain(flag);
  }, 300_000);

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

  it.each(components)(
    "%s: the app layer ships no tests and no test support (dist/**/testing)",
    async (component) => {
      const image = report.images.find((i) => i.component === component)!;
      const index = JSON.parse(await readFile(join(image.layoutDir, "index.json"), "utf8")) as {
        manifests: { digest: string }[];
      };
      const manifest = JSON.parse(
        await readFile(blob(image.layoutDir, index.manifests[0].digest), "utf8"),
      ) as {
        layers: { digest: string }[];
      };
      // GNU tar recognises a gzip-compressed layer by itself.
      const appLayer = blob(image.layoutDir, manifest.layers[manifest.layers.length - 1].digest);
      const { stdout } = await run("tar", ["-tf", appLayer], { maxBuffer: 64 * 1024 * 1024 });
      const files = stdout.split("\n").filter(Boolean);
      expect(files).toContain(`app/${expected[component].workspace}/dist/main.js`);
      // ESB's own workspaces (third-party packages under app/node_modules ship as published).
      const own = files.filter((f) => !f.startsWith("app/node_modules/"));
      expect(own.filter((f) => /\/testing\/|\.test\.js$|\.tsbuildinfo$/.test(f))).toEqual([]);
    },
  );

  it("agent: layers base, Node, CNI plugins, programs, runtime images, app; runtime image blobs stored once", () => {
    const agent = report.images.find((i) => i.component === "agent")!;
    expect(agent.layers.map((l) => l.createdBy.replace(/^esb: /, "").split(" ")[0])).toEqual([
      "base",
      "Node.js",
      "CNI",
      "programs",
      "managed-runtime",
      "agent-daemonset",
    ]);
    const runtimeLayer = agent.layers[4];
    // Uncompressed: it holds gzip blobs already.
    expect(runtimeLayer.mediaType).toBe("application/vnd.oci.image.layer.v1.tar");
    expect(agent.runtimeImages.map((r) => r.runtime).sort()).toEqual(Object.keys(RUNTIME_NODE_MAJOR).sort());
    // nodejs24.x and provided share their base and Node 24 layers: the folder is smaller than the images apart.
    const apart = agent.runtimeImages.reduce((n, r) => n + r.storedBytes, 0);
    expect(runtimeLayer.size).toBeLessThan(apart * 0.8);
    process.stdout.write(
      `agent image ${(agent.storedBytes / 1e6).toFixed(1)} MB: ${agent.layers
        .map((l) => `${(l.size / 1e6).toFixed(1)} MB ${l.createdBy.replace(/^esb: /, "").split(" ")[0]}`)
        .join(", ")}; runtime images ${(apart / 1e6).toFixed(1)} MB apart\n`,
    );
  });
});

/** A shell probe per program of AGENT_PROGRAMS: the agent's own use of it (or a real no-op) and what it must print. */
const PROGRAM_PROBES: Record<string, { script: string; expect: RegExp }> = {
  // What network/cni-network.ts runs; the namespace bind mount shows up in /proc/mounts.
  unshare: {
    script:
      "touch /run/esb-probe-ns && unshare --net=/run/esb-probe-ns ip link set lo up && grep -c ' /run/esb-probe-ns nsfs ' /proc/mounts",
    expect: /^1$/m,
  },
  ip: { script: "ip link set lo up && ip -o link show lo", expect: /lo: <LOOPBACK,UP/ },
  umount: {
    script:
      "touch /run/esb-probe-ns && unshare --net=/run/esb-probe-ns true && umount /run/esb-probe-ns && echo mounts=$(grep -c esb-probe-ns /proc/mounts)",
    expect: /^mounts=0$/m,
  },
  // The nf_tables backend, and the extensions the bridge plugin's ipMasq rules use (comment, MASQUERADE), in the container's own namespace.
  iptables: {
    script: [
      "iptables -V",
      "iptables -t nat -N ESB-PROBE",
      "iptables -t nat -A POSTROUTING -s 10.99.0.2/32 -m comment --comment esb-probe -j ESB-PROBE",
      "iptables -t nat -A ESB-PROBE ! -d 224.0.0.0/4 -j MASQUERADE",
      "iptables -t nat -S",
      "iptables -t nat -D POSTROUTING -s 10.99.0.2/32 -m comment --comment esb-probe -j ESB-PROBE",
      "iptables -t nat -F ESB-PROBE",
      "iptables -t nat -X ESB-PROBE",
      "echo rules=$(iptables -t nat -S | grep -c ESB-PROBE)",
    ].join(" && "),
    expect: /\(nf_tables\)[\s\S]*-A ESB-PROBE ! -d 224\.0\.0\.0\/4 -j MASQUERADE[\s\S]*^rules=0$/m,
  },
  mkfifo: { script: "mkfifo -m 600 /tmp/esb-probe && stat -c '%F %a' /tmp/esb-probe", expect: /^fifo 600$/m },
  // What network/worker-firewall.ts runs: rules restored inside a worker's namespace, read back there
  // (the image has no ip6tables; its iptables is the multi-call xtables binary, which answers to that name).
  nsenter: {
    script:
      "touch /run/esb-probe-ns && unshare --net=/run/esb-probe-ns true && nsenter --net=/run/esb-probe-ns ip -o link show lo && umount /run/esb-probe-ns",
    expect: /lo: <LOOPBACK>/,
  },
  "iptables-restore": {
    script:
      "touch /run/esb-probe-ns && unshare --net=/run/esb-probe-ns true && printf '*filter\\n:OUTPUT DROP [0:0]\\n-A OUTPUT -o lo -j ACCEPT\\n-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\\n-A OUTPUT -d 10.0.0.0/8 -j REJECT --reject-with icmp-admin-prohibited\\nCOMMIT\\n' | nsenter --net=/run/esb-probe-ns iptables-restore -w 5 && nsenter --net=/run/esb-probe-ns iptables -S OUTPUT",
    expect: /-A OUTPUT -d 10\.0\.0\.0\/8 -j REJECT --reject-with icmp-admin-prohibited/,
  },
  "ip6tables-restore": {
    script:
      "touch /run/esb-probe-ns && unshare --net=/run/esb-probe-ns true && printf '*filter\\n:OUTPUT DROP [0:0]\\n-A OUTPUT -o lo -j ACCEPT\\n-A OUTPUT -j REJECT --reject-with icmp6-adm-prohibited\\nCOMMIT\\n' | nsenter --net=/run/esb-probe-ns ip6tables-restore -w 5 && ln -s \"$(command -v iptables)\" /tmp/ip6tables && nsenter --net=/run/esb-probe-ns /tmp/ip6tables -S OUTPUT",
    expect: /-A OUTPUT -j REJECT --reject-with icmp6-adm-prohibited/,
  },
};

/**
 * Refuses to go on unless the container is in a network namespace other than
 * this test's (the host's): the probes change the container's network.
 */
const OWN_NETWORK = `[ "$(readlink /proc/self/ns/net)" != "${readlinkSync("/proc/self/ns/net")}" ] || { echo 'the container shares the host network namespace' >&2; exit 99; }`;

describe("agent image: what the agent runs", () => {
  const agent = () => {
    const image = report.images.find((i) => i.component === "agent")!;
    expect(imported).toContain(image.imageName);
    return image;
  };

  it("every program of AGENT_PROGRAMS has a probe here and is in the image's report", () => {
    expect(Object.keys(PROGRAM_PROBES).sort()).toEqual(AGENT_PROGRAMS.map((p) => p.name).sort());
    const image = report.images.find((i) => i.component === "agent")!;
    expect(image.programs.map((p) => p.name).sort()).toEqual(AGENT_PROGRAMS.map((p) => p.name).sort());
    // iptables is not a busybox applet: the host's, with the nf_tables backend.
    expect(image.programs.find((p) => p.name === "iptables")).toMatchObject({ source: "host" });
  });

  it.each(AGENT_PROGRAMS.map((p) => p.name))(
    "%s runs inside the agent image",
    async (name) => {
      const image = agent();
      const probe = PROGRAM_PROBES[name];
      const res = await ctrRun(image.imageName, ["/bin/sh", "-c", `${OWN_NETWORK} && ${probe.script}`], {
        privileged: true,
      });
      expect({ code: res.code, stderr: res.stderr }).toEqual({ code: 0, stderr: "" });
      expect(res.stdout).toMatch(probe.expect);
    },
    120_000,
  );

  it("the agent's CNI code makes a worker network (bridge, ipMasq through iptables) and removes it", async () => {
    const image = agent();
    const script = `
      import { execFileSync } from "node:child_process";
      import { CniNetwork } from "/app/agent-daemonset/dist/network/cni-network.js";
      const nat = () => execFileSync("iptables", ["-t", "nat", "-S"]).toString();
      const net = new CniNetwork({ mode: "bridge", bridgeName: "esb-probe0", subnet: "10.99.0.0/24",
        stateDir: "/tmp/cni", netnsDir: "/run/netns" });
      const { ip, netnsPath } = await net.attach("probe1");
      const addrs = execFileSync("nsenter", ["--net=" + netnsPath, "ip", "-o", "-4", "addr"]).toString();
      const masquerade = nat().split("\\n").filter((l) => l.includes("MASQUERADE")).length;
      await net.detach("probe1");
      console.log(JSON.stringify({ ip, addrs: addrs.match(/\\d+\\.\\d+\\.\\d+\\.\\d+\\/\\d+/g),
        masquerade, chainsAfter: nat().split("\\n").filter((l) => l.includes("CNI-")).length,
        netnsAfter: execFileSync("ls", ["/run/netns"]).toString().trim() }));`;
    const res = await ctrRun(
      image.imageName,
      ["/bin/sh", "-c", `${OWN_NETWORK} && exec node --input-type=module -e "$0"`, script],
      { privileged: true, env: { ESB_LOG_LEVEL: "warn" } },
    );
    expect({ code: res.code, stderr: res.stderr }).toEqual({ code: 0, stderr: "" });
    expect(JSON.parse(res.stdout.trim().split("\n").at(-1)!)).toEqual({
      ip: "10.99.0.2",
      addrs: ["127.0.0.1/8", "10.99.0.2/24"],
      masquerade: 1,
      chainsAfter: 0,
      netnsAfter: "",
    });
  }, 120_000);

  it("the runtime image layouts in the image verify (every digest recomputed inside the image)", async () => {
    const image = agent();
    const script = `
      import { createHash } from "node:crypto";
      import { readFileSync, readdirSync, statSync } from "node:fs";
      const dir = ${JSON.stringify(RUNTIME_IMAGES_DIR)};
      const sha = (p) => "sha256:" + createHash("sha256").update(readFileSync(p)).digest("hex");
      const blob = (rt, d) => dir + "/" + rt + "/blobs/sha256/" + d.slice(7);
      const out = { runtimes: {}, bad: [], referenced: new Set() };
      for (const rt of readdirSync(dir).filter((n) => n !== "blobs").sort()) {
        const layout = JSON.parse(readFileSync(dir + "/" + rt + "/oci-layout", "utf8"));
        const index = JSON.parse(readFileSync(dir + "/" + rt + "/index.json", "utf8"));
        const m = index.manifests[0];
        const check = (d) => { out.referenced.add(d.digest);
          if (sha(blob(rt, d.digest)) !== d.digest || statSync(blob(rt, d.digest)).size !== d.size) out.bad.push(rt + " " + d.digest); };
        check(m);
        const manifest = JSON.parse(readFileSync(blob(rt, m.digest), "utf8"));
        check(manifest.config);
        manifest.layers.forEach(check);
        const config = JSON.parse(readFileSync(blob(rt, manifest.config.digest), "utf8"));
        out.runtimes[rt] = { layoutVersion: layout.imageLayoutVersion, manifests: index.manifests.length,
          digest: m.digest, name: m.annotations["io.containerd.image.name"], label: config.config.Labels["dev.esb.runtime"],
          entrypoint: config.config.Entrypoint, layers: manifest.layers.length };
      }
      out.blobFiles = readdirSync(dir + "/blobs/sha256").length;
      out.referenced = out.referenced.size;
      console.log(JSON.stringify(out));`;
    const res = await ctrRun(image.imageName, ["node", "--input-type=module", "-e", script]);
    expect({ code: res.code, stderr: res.stderr }).toEqual({ code: 0, stderr: "" });
    const out = JSON.parse(res.stdout) as {
      runtimes: Record<string, { digest: string; name: string; label: string }>;
      bad: string[];
      blobFiles: number;
      referenced: number;
    };
    expect(out.bad).toEqual([]);
    // Each blob once, and none that no layout uses.
    expect(out.blobFiles).toBe(out.referenced);
    const expected = Object.fromEntries(
      image.runtimeImages.map((r) => [
        r.runtime,
        {
          layoutVersion: "1.0.0",
          manifests: 1,
          digest: r.manifestDigest,
          name: `esb.local/runtime/${r.runtime}:${r.tag}`,
          label: r.runtime,
          entrypoint: ["/var/runtime/esb/start-emulator"],
          // Base, Node, emulator files; plus the JavaScript SDK (nodejs*) or the Python root file system (python*).
          layers: r.runtime === "provided" ? 3 : 4,
        },
      ]),
    );
    expect(out.runtimes).toEqual(expected);
  }, 120_000);

  it("the agent imports its runtime images into containerd from a read-only root file system, and they run", async () => {
    const image = agent();
    const runtimes = [...Object.keys(RUNTIME_NODE_MAJOR), "provided.al2023"];
    // The agent's own configuration and resolver, as main.ts wires them: RUNTIME_IMAGES_DIR is unset,
    // so the folder in the image is the default.
    const script = `
      import { loadAgentConfig } from "/app/agent-daemonset/dist/agent-config.js";
      import { ContainerdRuntime } from "/app/agent-daemonset/dist/runtime/containerd-runtime.js";
      import { createRuntimeImageResolver } from "/app/agent-daemonset/dist/runtime-image-resolver.js";
      const config = loadAgentConfig({ NODE_NAME: "probe", AGENT_TOKENS_FILE: "/unused", CONTAINERD_NAMESPACE: ${JSON.stringify(namespace)} });
      const rt = new ContainerdRuntime({ socketPath: config.containerdSocket, namespace: config.containerdNamespace,
        network: undefined, stateDir: "/nonexistent" });
      await rt.start();
      const resolver = createRuntimeImageResolver(config);
      const images = {};
      for (const r of ${JSON.stringify(runtimes)}) images[r] = (await resolver.prepareRuntimeImage(r, rt)).ref;
      await rt.close();
      console.log(JSON.stringify({ runtimeImagesDir: config.runtimeImagesDir, resolver: resolver.constructor.name, images }));`;
    const res = await ctrRun(image.imageName, ["node", "--input-type=module", "-e", script], {
      readOnly: true,
      env: { ESB_LOG_LEVEL: "silent" },
      // The node's cgroup tree, as the chart mounts it: the runtime freezes workers through it.
      mounts: { [socket]: "/run/containerd/containerd.sock", "/sys/fs/cgroup": "/sys/fs/cgroup" },
    });
    expect({ code: res.code, stderr: res.stderr }).toEqual({ code: 0, stderr: "" });
    const names = Object.fromEntries(
      image.runtimeImages.map((r) => [r.runtime, `esb.local/runtime/${r.runtime}:${r.tag}`]),
    );
    expect(JSON.parse(res.stdout.trim().split("\n").at(-1)!)).toEqual({
      runtimeImagesDir: RUNTIME_IMAGES_DIR,
      resolver: "PrebuiltImageResolver",
      images: { ...names, "provided.al2023": names.provided },
    });
    const listed = (await ctr("images", "ls", "-q")).split("\n");
    for (const [runtime, major] of Object.entries(RUNTIME_NODE_MAJOR)) {
      expect(listed).toContain(names[runtime]);
      const run = await ctrRun(names[runtime], ["/var/lang/bin/node", "--version"]);
      expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: "" });
      expect(run.stdout.trim()).toMatch(new RegExp(`^v${major}\\.`));
    }
  }, 300_000);
});
