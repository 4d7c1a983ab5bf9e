import { constants as fsConstants } from "node:fs";
import { access, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createLogger, type Logger } from "@esb/common";
import { pickIpv4, resultIpv4Subnets } from "./cni-result.js";
import { exec, run } from "./exec.js";
import { removeMasqueradeRules } from "./masquerade-cleanup.js";
import { WorkerFirewall } from "./worker-firewall.js";
import type { WorkerNetwork } from "./worker-network.js";

/** How workers are networked: ESB's own bridge, or the node's cluster CNI configuration. */
export type CniMode = "bridge" | "cluster";

/** Options of {@link CniNetwork}. */
export interface CniNetworkOptions {
  /** "bridge": ESB's bridge + host-local conflist; "cluster": first conflist in `confDir`. */
  mode: CniMode;
  /** Bridge device name (bridge mode). Default `esb-cni0`. */
  bridgeName?: string;
  /** IPv4 subnet handed out by host-local (bridge mode). Default `10.88.0.0/16`. */
  subnet?: string;
  /** Where ADD results and host-local's allocations are persisted. */
  stateDir: string;
  /** Folder(s) of CNI plugin binaries. Default `/usr/lib/cni` (Debian), then `/opt/cni/bin`. */
  cniBinDir?: string | string[];
  /** CNI configuration folder read in cluster mode. Default `/etc/cni/net.d`. */
  confDir?: string;
  /** Folder where the workers' network namespaces are bind-mounted. Default `/run/netns`. */
  netnsDir?: string;
  /**
   * Isolation rules installed in every worker's namespace before attach returns.
   * Default: a {@link WorkerFirewall} with its defaults (egress allowed, the
   * node, other workers and private ranges blocked). `null` installs none: for
   * tests of the CNI plumbing only; workers are then not isolated.
   */
  firewall?: WorkerFirewall | null;
  logger?: Logger;
}

/** A CNI network configuration list (the `.conflist` format). */
export interface CniConfList {
  cniVersion: string;
  name: string;
  plugins: Record<string, unknown>[];
}

/** A CNI plugin failed; carries the spec's error code and message. */
export class CniError extends Error {
  override name = "CniError";
  constructor(
    message: string,
    /** CNI error code (spec: 1–99 well-known, 100+ plugin-specific), or -1 when the plugin gave none. */
    readonly code: number,
  ) {
    super(message);
  }
}

/** What is persisted per worker so that DEL replays exactly what ADD used. */
interface Allocation {
  workerId: string;
  containerId: string;
  netnsPath: string;
  ifName: string;
  confList: CniConfList;
  /** Result of the last plugin's ADD; null while ADD has not finished. */
  result: Record<string, unknown> | null;
}

const IFNAME = "eth0";

/**
 * {@link WorkerNetwork} built on CNI plugins, executed as the CNI spec says
 * (plugin binary, `CNI_*` variables, network configuration on stdin, result on
 * stdout). Each worker gets a persistent network namespace bind-mounted at
 * `<netnsDir>/esb-<workerId>` and an `eth0` with one IPv4 address. ADD results
 * are written under `stateDir` before and after ADD, so a DEL (also after an
 * agent restart) replays the same configuration with the cached result.
 * Unless `firewall` is null, attach installs the worker's isolation rules in
 * its namespace and fails (leaving nothing behind) when it cannot.
 */
export class CniNetwork implements WorkerNetwork {
  readonly mode: CniMode;
  readonly bridgeName: string;
  readonly subnet: string;
  private readonly stateDir: string;
  private readonly binDirs: string[];
  private readonly confDir: string;
  private readonly netnsDir: string;
  private readonly log: Logger;
  private readonly firewall: WorkerFirewall | null;
  private confListCache?: CniConfList;

  constructor(opts: CniNetworkOptions) {
    this.mode = opts.mode;
    this.bridgeName = opts.bridgeName ?? "esb-cni0";
    this.subnet = opts.subnet ?? "10.88.0.0/16";
    this.stateDir = opts.stateDir;
    const bins = opts.cniBinDir ?? ["/usr/lib/cni", "/opt/cni/bin"];
    this.binDirs = Array.isArray(bins) ? bins : [bins, "/opt/cni/bin"];
    this.confDir = opts.confDir ?? "/etc/cni/net.d";
    this.netnsDir = opts.netnsDir ?? "/run/netns";
    this.log = opts.logger ?? createLogger("cni-network");
    this.firewall = opts.firewall === undefined ? new WorkerFirewall() : opts.firewall;
    if (this.bridgeName.length > 15) {
      throw new Error(
        `CNI bridge name "${this.bridgeName}" is longer than 15 characters (Linux interface name limit)`,
      );
    }
    if (!/^\d+\.\d+\.\d+\.\d+\/\d+$/.test(this.subnet)) {
      throw new Error(`CNI subnet "${this.subnet}" is not an IPv4 CIDR such as 10.88.0.0/16`);
    }
  }

  private get allocDir(): string {
    return join(this.stateDir, "allocations");
  }

  /** Path of the network namespace of a worker. */
  netnsPath(workerId: string): string {
    return join(this.netnsDir, `esb-${workerId}`);
  }

  /** The network configuration list that ADD uses (bridge mode: generated; cluster mode: read from `confDir`). */
  async confList(): Promise<CniConfList> {
    if (this.confListCache) return this.confListCache;
    const list = this.mode === "bridge" ? this.bridgeConfList() : await this.readClusterConfList();
    this.confListCache = list;
    return list;
  }

  private bridgeConfList(): CniConfList {
    return {
      cniVersion: "1.0.0",
      name: `esb-${this.bridgeName}`,
      plugins: [
        {
          type: "bridge",
          bridge: this.bridgeName,
          isGateway: true,
          ipMasq: true,
          hairpinMode: true,
          ipam: {
            type: "host-local",
            ranges: [[{ subnet: this.subnet }]],
            routes: [{ dst: "0.0.0.0/0" }],
            dataDir: join(this.stateDir, "ipam"),
          },
        },
      ],
    };
  }

  private async readClusterConfList(): Promise<CniConfList> {
    let names: string[];
    try {
      names = (await readdir(this.confDir)).filter((n) => /\.(conflist|conf|json)$/.test(n)).sort();
    } catch (err) {
      throw new Error(`cannot read CNI configuration folder ${this.confDir}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (names.length === 0) throw new Error(`no CNI configuration (*.conflist, *.conf) in ${this.confDir}`);
    const file = join(this.confDir, names[0]);
    const parsed = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
    if (Array.isArray(parsed.plugins)) {
      return {
        cniVersion: String(parsed.cniVersion ?? "0.4.0"),
        name: String(parsed.name ?? "cluster"),
        plugins: parsed.plugins as Record<string, unknown>[],
      };
    }
    // A single-plugin .conf: wrap it into a list.
    if (typeof parsed.type !== "string")
      throw new Error(`${file} is neither a CNI conflist nor a plugin configuration`);
    const { cniVersion, name, ...plugin } = parsed;
    return { cniVersion: String(cniVersion ?? "0.4.0"), name: String(name ?? "cluster"), plugins: [plugin] };
  }

  /**
   * Creates the worker's netns, runs CNI ADD, installs the firewall rules;
   * returns its IP and the netns path. On any failure (a rule that cannot be
   * installed included) everything is undone and the error thrown.
   */
  async attach(workerId: string): Promise<{ ip: string; netnsPath: string }> {
    validateId(workerId);
    const confList = await this.confList();
    const netnsPath = this.netnsPath(workerId);
    await mkdir(this.allocDir, { recursive: true });
    const alloc: Allocation = {
      workerId,
      containerId: workerId,
      netnsPath,
      ifName: IFNAME,
      confList,
      result: null,
    };
    // Recorded before anything is created so that a crash mid-ADD still leaves a trace for cleanup.
    await this.writeAlloc(alloc);
    try {
      await this.createNetns(netnsPath);
      let prev: Record<string, unknown> | undefined;
      for (const plugin of confList.plugins) {
        prev = await this.execPlugin("ADD", plugin, confList, alloc, prev);
      }
      alloc.result = prev ?? {};
      await this.writeAlloc(alloc);
      const ip = pickIpv4(alloc.result, netnsPath);
      if (!ip) throw new CniError(`CNI ADD for worker ${workerId} returned no IPv4 address`, -1);
      // Before the worker exists: it never runs a moment without its rules.
      if (this.firewall) {
        await this.firewall.apply({ workerId, netnsPath, workerSubnets: this.workerSubnets(alloc.result) });
      }
      this.log.debug({ workerId, ip }, "worker network attached");
      return { ip, netnsPath };
    } catch (err) {
      await this.detach(workerId).catch((e: unknown) =>
        this.log.warn({ workerId, err: (e as Error).message }, "cleanup after failed CNI ADD failed"),
      );
      throw err;
    }
  }

  /** CNI DEL + removes the netns; idempotent. */
  async detach(workerId: string): Promise<void> {
    validateId(workerId);
    const alloc = await this.readAlloc(workerId);
    const netnsPath = alloc?.netnsPath ?? this.netnsPath(workerId);
    const netnsExists = await exists(netnsPath);
    if (alloc) {
      const plugins = [...alloc.confList.plugins].reverse();
      const delAlloc: Allocation = { ...alloc, netnsPath: netnsExists ? netnsPath : "" };
      for (const plugin of plugins) {
        // The spec wants DEL to succeed when things are already gone; a plugin
        // error here must not keep the netns or the record alive forever.
        await this.execPlugin("DEL", plugin, alloc.confList, delAlloc, alloc.result ?? undefined).catch(
          (e: unknown) =>
            this.log.warn({ workerId, plugin: plugin.type, err: (e as Error).message }, "CNI DEL failed"),
        );
      }
    }
    if (alloc && !netnsExists) await removeMasqueradeRules(alloc.confList, alloc.containerId);
    if (netnsExists) await this.removeNetns(netnsPath);
    await rm(join(this.allocDir, `${workerId}.json`), { force: true });
  }

  /**
   * Installs the current firewall rules again in every attached worker's
   * namespace (at agent start: workers kept from the previous agent get the
   * current policy). Replaces rather than adds, so it is idempotent. A worker
   * whose rules cannot be replaced keeps its previous ones (a restore is
   * atomic); its id is returned and logged.
   */
  async reapplyFirewall(): Promise<{ applied: number; failed: string[] }> {
    const failed: string[] = [];
    let applied = 0;
    if (!this.firewall) return { applied, failed };
    for (const workerId of await this.list()) {
      const alloc = await this.readAlloc(workerId);
      if (!alloc?.result || !(await exists(alloc.netnsPath))) continue; // half-made: orphan cleanup removes it
      try {
        await this.firewall.apply({
          workerId,
          netnsPath: alloc.netnsPath,
          workerSubnets: this.workerSubnets(alloc.result),
        });
        applied++;
      } catch (err) {
        failed.push(workerId);
        this.log.error({ workerId, err: (err as Error).message }, "worker firewall not renewed");
      }
    }
    return { applied, failed };
  }

  /** The subnets the firewall blocks for a worker: its CNI result's, and ESB's own subnet in bridge mode. */
  private workerSubnets(result: Record<string, unknown>): string[] {
    const subnets = resultIpv4Subnets(result);
    return this.mode === "bridge" ? [this.subnet, ...subnets] : subnets;
  }

  /** Worker ids that have network allocations (for orphan cleanup). */
  async list(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.allocDir);
    } catch {
      return [];
    }
    return names.filter((n) => n.endsWith(".json")).map((n) => n.slice(0, -".json".length));
  }

  private async createNetns(path: string): Promise<void> {
    await mkdir(this.netnsDir, { recursive: true });
    if (await exists(path)) await this.removeNetns(path);
    await writeFile(path, "");
    // `unshare --net=FILE` bind-mounts a new network namespace on FILE, which keeps it alive without a process.
    // The command it runs inside brings loopback up (workers reach their own Runtime API on 127.0.0.1:9001):
    // one process instead of two on the cold-start path.
    await run("unshare", [`--net=${path}`, "ip", "link", "set", "lo", "up"]);
  }

  private async removeNetns(path: string): Promise<void> {
    await run("umount", [path]).catch(() => undefined);
    await rm(path, { force: true });
  }

  private async execPlugin(
    command: "ADD" | "DEL",
    plugin: Record<string, unknown>,
    confList: CniConfList,
    alloc: Allocation,
    prevResult: Record<string, unknown> | undefined,
  ): Promise<Record<string, unknown> | undefined> {
    const type = String(plugin.type);
    const binary = await this.findPlugin(type);
    const conf: Record<string, unknown> = { ...plugin, cniVersion: confList.cniVersion, name: confList.name };
    if (prevResult) conf.prevResult = prevResult;
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin",
      CNI_COMMAND: command,
      CNI_CONTAINERID: alloc.containerId,
      CNI_NETNS: alloc.netnsPath,
      CNI_IFNAME: alloc.ifName,
      CNI_PATH: this.binDirs.join(":"),
    };
    const { code, stdout, stderr } = await exec(binary, [], env, JSON.stringify(conf));
    if (code !== 0) {
      let message = stderr.trim() || stdout.trim();
      let errCode = -1;
      try {
        const e = JSON.parse(stdout) as { code?: number; msg?: string; details?: string };
        errCode = e.code ?? -1;
        message = [e.msg, e.details].filter(Boolean).join(": ") || message;
      } catch {
        // Not a JSON error; keep the raw output.
      }
      throw new CniError(
        `CNI ${command} of plugin ${type} failed for worker ${alloc.workerId}: ${message}`,
        errCode,
      );
    }
    if (command === "DEL" || stdout.trim() === "") return prevResult;
    return JSON.parse(stdout) as Record<string, unknown>;
  }

  private async findPlugin(type: string): Promise<string> {
    if (!/^[A-Za-z0-9_.-]+$/.test(type)) throw new CniError(`invalid CNI plugin type "${type}"`, -1);
    for (const dir of this.binDirs) {
      const p = join(dir, type);
      try {
        await access(p, fsConstants.X_OK);
        return p;
      } catch {
        // try the next folder
      }
    }
    throw new CniError(`CNI plugin "${type}" not found in ${this.binDirs.join(", ")}`, -1);
  }

  private async writeAlloc(alloc: Allocation): Promise<void> {
    const file = join(this.allocDir, `${alloc.workerId}.json`);
    // Write-then-rename so a crash never leaves a half-written record.
    await writeFile(`${file}.tmp`, JSON.stringify(alloc));
    await rename(`${file}.tmp`, file);
  }

  private async readAlloc(workerId: string): Promise<Allocation | undefined> {
    try {
      return JSON.parse(await readFile(join(this.allocDir, `${workerId}.json`), "utf8")) as Allocation;
    } catch {
      return undefined;
    }
  }
}

function validateId(workerId: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(workerId)) {
    throw new Error(`invalid worker id "${workerId}" (letters, digits, '_', '.', '-'; at most 128)`);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
