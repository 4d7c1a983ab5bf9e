import { existsSync, readFileSync } from "node:fs";
import { networkInterfaces } from "node:os";
import { exec } from "./exec.js";
import {
  parseIpv4,
  workerFirewallRules,
  type Destination,
  type FirewallRules,
  type WorkerEgress,
} from "./worker-firewall-rules.js";

export {
  BLOCKED_IPV4_RANGES,
  parseDestinations,
  workerFirewallRules,
  type Destination,
  type FirewallRules,
  type WorkerEgress,
} from "./worker-firewall-rules.js";

/** Options of {@link WorkerFirewall}; every field has a default. */
export interface WorkerFirewallOptions {
  /** Public-internet egress. Default `"allow"` (like Lambda outside a VPC). */
  egress?: WorkerEgress;
  /** Destinations workers may always reach (data services), even inside blocked ranges. */
  allowedDestinations?: readonly Destination[];
  /** More CIDRs workers must not reach (cluster pod/service CIDRs, a public API server address). */
  deniedDestinations?: readonly string[];
  /**
   * Nameservers workers may query on port 53. Default: the IPv4 nameservers of
   * the agent's /etc/resolv.conf other than loopback ones (a worker cannot reach
   * the node's loopback).
   */
  nameservers?: readonly string[];
  /** The node's own IPv4 addresses, read at every attach. Default: every address of the agent's network namespace. */
  nodeAddresses?: () => string[];
  /** The port workers serve invocations on (the only inbound port). Default 8080. */
  workerPort?: number;
  /** Install the IPv6 rules. Default: when the kernel has IPv6 (`/proc/net/if_inet6` exists). */
  ipv6?: boolean;
}

/** The rules of a worker's namespace could not be installed; the worker must not start. */
export class WorkerFirewallError extends Error {
  override name = "WorkerFirewallError";
}

/** Context of one worker's rules that only its network attachment knows. */
export interface WorkerFirewallTarget {
  /** Worker id (for messages). */
  workerId: string;
  /** Its network namespace (a bind-mounted nsfs file). */
  netnsPath: string;
  /** Subnets of its network (blocked, so that other workers stay unreachable even in a public range). */
  workerSubnets: readonly string[];
}

/**
 * Enforces worker network isolation with packet-filter rules inside each
 * worker's own network namespace (see {@link workerFirewallRules}), installed
 * by `nsenter --net=<netns> iptables-restore` (and `ip6tables-restore`). The
 * worker has no CAP_NET_ADMIN, so it cannot change them; they go away with the
 * namespace, so nothing is left on the host. The rules are the same in both
 * CNI modes and need no br_netfilter. {@link apply} replaces the namespace's
 * whole filter table: applying again (an agent restart, a changed policy)
 * never duplicates rules.
 */
export class WorkerFirewall {
  readonly egress: WorkerEgress;
  readonly allowedDestinations: readonly Destination[];
  readonly deniedDestinations: readonly string[];
  readonly nameservers: readonly string[];
  readonly workerPort: number;
  readonly ipv6: boolean;
  private readonly nodeAddresses: () => string[];

  constructor(opts: WorkerFirewallOptions = {}) {
    this.egress = opts.egress ?? "allow";
    this.allowedDestinations = opts.allowedDestinations ?? [];
    this.deniedDestinations = opts.deniedDestinations ?? [];
    this.nameservers = opts.nameservers ?? resolvConfNameservers();
    this.workerPort = opts.workerPort ?? 8080;
    this.ipv6 = opts.ipv6 ?? existsSync("/proc/net/if_inet6");
    this.nodeAddresses = opts.nodeAddresses ?? localIpv4Addresses;
  }

  /** The rules {@link apply} installs for a worker whose network has `workerSubnets`. */
  rules(workerSubnets: readonly string[]): FirewallRules {
    const kubernetesApi = process.env.KUBERNETES_SERVICE_HOST;
    return workerFirewallRules({
      egress: this.egress,
      allowed: this.allowedDestinations,
      nameservers: this.nameservers,
      // The in-cluster API address the agent sees (a service IP, usually private anyway).
      denied: [
        ...this.deniedDestinations,
        ...(kubernetesApi && parseIpv4(kubernetesApi) !== undefined ? [kubernetesApi] : []),
      ],
      nodeAddresses: this.nodeAddresses(),
      workerSubnets,
      workerPort: this.workerPort,
    });
  }

  /**
   * Installs the rules in the target's namespace (IPv4, and IPv6 when the
   * kernel has it), replacing whatever filter rules it had. Throws
   * {@link WorkerFirewallError} when either set cannot be installed; a
   * restore is atomic, so the namespace then keeps its previous rules.
   */
  async apply(target: WorkerFirewallTarget): Promise<void> {
    const rules = this.rules(target.workerSubnets);
    await Promise.all([
      restore("iptables-restore", target, rules.ipv4),
      this.ipv6 ? restore("ip6tables-restore", target, rules.ipv6) : undefined,
    ]);
  }
}

async function restore(program: string, target: WorkerFirewallTarget, rules: string): Promise<void> {
  // `-w`: wait for the xtables lock that the legacy backend shares with the node's own iptables users.
  const args = [`--net=${target.netnsPath}`, program, "-w", "5"];
  let result: { code: number; stderr: string };
  try {
    result = await exec("nsenter", args, process.env, rules);
  } catch (err) {
    throw new WorkerFirewallError(
      `cannot install the network rules of worker ${target.workerId}: nsenter ${program}: ${(err as Error).message}; the worker is not started without them`,
      { cause: err },
    );
  }
  if (result.code !== 0) {
    throw new WorkerFirewallError(
      `cannot install the network rules of worker ${target.workerId}: ${program} in ${target.netnsPath} failed (exit ${result.code}): ${result.stderr.trim() || "no message"}; the worker is not started without them`,
    );
  }
}

/** IPv4 nameservers of a resolv.conf (default /etc/resolv.conf) except loopback ones; none when it is unreadable. */
export function resolvConfNameservers(path = "/etc/resolv.conf"): string[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!m || parseIpv4(m[1]) === undefined || m[1].startsWith("127.")) continue;
    if (!out.includes(m[1])) out.push(m[1]);
  }
  return out;
}

/** Every IPv4 address of the agent's network namespace (the node's, as the agent uses the host network). */
export function localIpv4Addresses(): string[] {
  const out: string[] = [];
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === "IPv4" && !a.internal) out.push(a.address);
  }
  return out;
}
