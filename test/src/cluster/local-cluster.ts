// The local Kubernetes cluster of hack/cluster.sh, driven the way a user drives
// it (the same scripts and commands as `make cluster-up images deploy`), for the
// cluster end-to-end suite; plus a snapshot of the host state that `down` must
// restore.
import { execFile } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { expectSuccess, helm, repoRoot, run, type CommandResult } from "../install/chart-tools.js";

/** A running local cluster, as `hack/cluster.sh up` reported it. */
export interface LocalCluster {
  dir: string;
  /** Admin kubeconfig (the `KUBECONFIG=` line). */
  kubeconfig: string;
  /** Base URL of the ingress controller (the `INGRESS=` line). */
  ingress: string;
  /** The cluster's own containerd socket. */
  containerdSocket: string;
  /** Chart values for this cluster (written by `up`). */
  valuesFile: string;
  /** How long `up` took, and when its node became Ready (from its own log lines). */
  upMs: number;
  nodeReadySeconds?: number;
  /** The host state just before `up` (after any other cluster of this machine had gone). */
  hostBefore: HostState;
}

/** Where hack/cluster.sh records the folder of the one cluster this machine may run. */
const CLUSTER_LOCK = "/run/esb-cluster.dir";

/**
 * Runs `hack/cluster.sh up --dir DIR --nodes N`; throws with its output when it fails.
 * One cluster runs per machine: while another test file's cluster runs, this waits
 * (up to `waitMs`) for it to go.
 */
export async function clusterUp(dir: string, nodes = 1, waitMs = 15 * 60_000): Promise<LocalCluster> {
  const deadline = Date.now() + waitMs;
  const otherRuns = async () => {
    const other = (await readFile(CLUSTER_LOCK, "utf8").catch(() => "")).trim();
    return (
      other !== "" &&
      other !== dir &&
      (await readdir(other).then(
        () => true,
        () => false,
      ))
    );
  };
  let hostBefore: HostState;
  let result: CommandResult;
  let started: number;
  for (;;) {
    while (await otherRuns()) {
      if (Date.now() > deadline) throw new Error("another ESB cluster still runs on this machine");
      await new Promise((r) => setTimeout(r, 2000));
    }
    hostBefore = await hostState(dir);
    started = Date.now();
    result = await run(join(repoRoot, "hack", "cluster.sh"), ["up", "--dir", dir, "--nodes", String(nodes)]);
    // Another test file's cluster claimed the machine first: wait for it to go.
    if (result.code === 0 || !/another ESB cluster runs/.test(result.stderr) || Date.now() > deadline) break;
  }
  const out = expectSuccess(result, "hack/cluster.sh up");
  const line = (key: string): string => {
    const m = new RegExp(`^${key}=(.+)$`, "m").exec(out);
    if (!m) throw new Error(`hack/cluster.sh up printed no ${key}= line:\n${out}\n${result.stderr}`);
    return m[1];
  };
  const ready = /node \S+ Ready after (\d+)s/.exec(result.stderr);
  return {
    dir,
    kubeconfig: line("KUBECONFIG"),
    ingress: line("INGRESS"),
    containerdSocket: join(dir, "run", "containerd.sock"),
    valuesFile: join(dir, "esb-values.yaml"),
    upMs: Date.now() - started,
    hostBefore,
    nodeReadySeconds: ready ? Number(ready[1]) : undefined,
  };
}

/** Runs `hack/cluster.sh down --dir DIR`. */
export function clusterDown(dir: string): Promise<CommandResult> {
  return run(join(repoRoot, "hack", "cluster.sh"), ["down", "--dir", dir]);
}

/** The containerd socket of every node: node 1's, then those of nodes/<name> (`--nodes 2`). */
export async function nodeSockets(cluster: LocalCluster): Promise<string[]> {
  const others = await readdir(join(cluster.dir, "nodes")).catch(() => [] as string[]);
  return [
    cluster.containerdSocket,
    ...others.sort().map((n) => join(cluster.dir, "nodes", n, "run", "containerd.sock")),
  ];
}

/** Task ids in containerd namespace `ns` (ESB's workers live in `esb`) of one node's containerd (default node 1's). */
export async function taskIds(
  cluster: LocalCluster,
  ns = "esb",
  socket = cluster.containerdSocket,
): Promise<string[]> {
  const out = await run("ctr", ["--address", socket, "-n", ns, "tasks", "ls", "-q"]);
  if (out.code !== 0) return []; // the namespace does not exist yet
  return out.stdout.split("\n").filter(Boolean).sort();
}

/**
 * Builds the three component images with the project's builder (what `make images`
 * runs) into `outDir` and imports the archives into every node (what `make cluster-load` runs).
 */
export async function buildAndLoadImages(cluster: LocalCluster, outDir: string): Promise<string[]> {
  expectSuccess(
    await run(join(repoRoot, "hack", "fetch-node-runtime.sh"), ["22"]),
    "fetch-node-runtime.sh 22",
  );
  const report = JSON.parse(
    expectSuccess(
      await run("node", [
        join(repoRoot, "runtime", "dist", "image", "build-component-images-main.js"),
        "--out-dir",
        join(outDir, "layouts"),
        "--archive-dir",
        join(outDir, "archives"),
        "--json",
      ]),
      "build-component-images",
    ),
  ) as { images: { imageName: string; archive: string }[] };
  for (const socket of await nodeSockets(cluster)) {
    for (const image of report.images)
      expectSuccess(
        await run("ctr", ["--address", socket, "-n", "k8s.io", "images", "import", image.archive]),
        `ctr images import ${image.archive}`,
      );
  }
  return report.images.map((i) => i.imageName);
}

/**
 * What `hack/cluster.sh up` changes on the host and `down` must restore. Scoped to
 * what the cluster makes (its bridge, the kubelet's and kube-proxy's chains, its own
 * chain, the sysctls the kubelet rewrites, processes of its folder), because other
 * test files create and remove their own bridges and namespaces meanwhile.
 */
export interface HostState {
  sysctls: Record<string, string>;
  /** The cluster bridge, when present. */
  links: string[];
  /** `table/chain` of KUBE-*, ESB-LOCAL-* and CNI-HOSTPORT-* chains (IPv4 and IPv6). */
  chains: string[];
  /** Processes whose command line names `dir`. */
  processes: string[];
}

const exec = promisify(execFile);

const SYSCTLS = [
  "vm/overcommit_memory",
  "vm/panic_on_oom",
  "kernel/panic",
  "kernel/panic_on_oops",
  "kernel/keys/root_maxkeys",
  "kernel/keys/root_maxbytes",
  "net/ipv4/ip_forward",
];
const CLUSTER_CHAIN = /^(KUBE-|ESB-LOCAL-|CNI-HOSTPORT)/;

/** The host state the cluster in `dir` touches (see {@link HostState}). */
export async function hostState(dir: string): Promise<HostState> {
  const sysctls: Record<string, string> = {};
  for (const s of SYSCTLS) {
    sysctls[s] = (await readFile(`/proc/sys/${s}`, "utf8").catch(() => "absent")).trim();
  }
  const links = (await exec("ip", ["-o", "link", "show"])).stdout
    .split("\n")
    .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1])
    .filter((l): l is string => l === "esb-k8s0");
  const chains: string[] = [];
  for (const tool of ["iptables", "ip6tables"]) {
    for (const table of ["filter", "nat", "mangle"]) {
      const out = (await exec(tool, ["-t", table, "-S"]).catch(() => ({ stdout: "" }))).stdout;
      for (const m of out.matchAll(/^-N (\S+)$/gm))
        if (CLUSTER_CHAIN.test(m[1])) chains.push(`${tool}/${table}/${m[1]}`);
    }
  }
  const processes: string[] = [];
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (cmdline.includes(`${dir}/`)) processes.push(cmdline.replaceAll("\0", " ").trim());
  }
  return { sysctls, links, chains: chains.sort(), processes };
}

/** Mount points at or below `dir`. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const mounts = await readFile("/proc/mounts", "utf8");
  return mounts
    .split("\n")
    .map((l) => l.split(" ")[1])
    .filter((m): m is string => !!m && (m === dir || m.startsWith(`${dir}/`)));
}

/** `helm upgrade --install esb charts/esb --wait` with the cluster's values and `extra` arguments. */
export async function helmInstall(
  cluster: LocalCluster,
  namespace: string,
  extra: string[] = [],
): Promise<void> {
  expectSuccess(
    await helm([
      ...["--kubeconfig", cluster.kubeconfig, "upgrade", "--install", "esb", join(repoRoot, "charts", "esb")],
      ...[
        "--namespace",
        namespace,
        "--create-namespace",
        "-f",
        cluster.valuesFile,
        "--wait",
        "--timeout",
        "5m",
      ],
      ...extra,
    ]),
    "helm install",
  );
}
