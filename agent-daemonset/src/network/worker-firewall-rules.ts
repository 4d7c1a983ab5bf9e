/**
 * The packet-filter rules of a worker's network namespace, as text for
 * `iptables-restore` / `ip6tables-restore`, and the parsing of the operator's
 * destination lists. Pure functions: worker-firewall.ts installs the result.
 */

/** Whether workers may open connections to the public internet. */
export type WorkerEgress = "allow" | "deny";

/** An IPv4 destination a worker may reach (or must not): a CIDR, optionally one port (TCP and UDP). */
export interface Destination {
  /** Normalised IPv4 CIDR, e.g. `10.0.0.0/24` or `192.0.2.7/32`. */
  cidr: string;
  /** Destination port; undefined = every port and protocol. */
  port?: number;
}

/**
 * Addresses a worker never reaches unless an allowed destination names them:
 * private, shared and special-purpose IPv4 ranges. They hold other workers and
 * pods, the node, the cluster's services and API (in private clusters), and the
 * cloud metadata endpoint (169.254.169.254).
 */
export const BLOCKED_IPV4_RANGES: readonly string[] = [
  "0.0.0.0/8", // "this network"
  "10.0.0.0/8", // private
  "100.64.0.0/10", // carrier-grade NAT; some clouds put internal services here
  "127.0.0.0/8", // loopback reached other than through lo
  "169.254.0.0/16", // link-local: instance metadata, link-local services
  "172.16.0.0/12", // private
  "192.0.0.0/24", // IETF protocol assignments
  "192.168.0.0/16", // private
  "198.18.0.0/15", // benchmarking
  "224.0.0.0/4", // multicast
  "240.0.0.0/4", // reserved and the limited broadcast
];

/** What the rules of one worker are made of. */
export interface FirewallRuleInput {
  egress: WorkerEgress;
  /** Destinations always allowed (the operator's data services), before any block. */
  allowed: readonly Destination[];
  /** Nameservers the worker uses: allowed on port 53 (UDP and TCP). */
  nameservers: readonly string[];
  /** More CIDRs blocked (operator's list: pod and service CIDRs, the API server's public address). */
  denied: readonly string[];
  /** The node's own addresses (blocked: the agent and every other service of the node). */
  nodeAddresses: readonly string[];
  /** Subnets of the worker's own network (blocked: other workers, even when the range is public). */
  workerSubnets: readonly string[];
  /** The port the worker serves invocations on; the only port open to inbound connections. */
  workerPort: number;
}

/** Rule sets for both address families, in `iptables-restore` format. */
export interface FirewallRules {
  ipv4: string;
  ipv6: string;
}

/** How a blocked packet is answered: at once, so a function fails fast instead of hanging until its timeout. */
const REJECT4 = "REJECT --reject-with icmp-admin-prohibited";
const REJECT6 = "REJECT --reject-with icmp6-adm-prohibited";

/**
 * The rules of a worker's namespace. Each set replaces the whole `filter`
 * table when restored, so applying it again never duplicates a rule.
 *
 * IPv4: inbound, only loopback, replies, and new TCP connections to
 * `workerPort`. Outbound, in order: loopback; replies to accepted connections;
 * the allowed destinations and nameservers; then every blocked range, node
 * address, worker subnet and denied CIDR is rejected; then the rest is
 * accepted (`egress: "allow"`) or rejected. IPv6: loopback only.
 */
export function workerFirewallRules(input: FirewallRuleInput): FirewallRules {
  const v4: string[] = [
    "*filter",
    ":INPUT DROP [0:0]",
    ":FORWARD DROP [0:0]",
    ":OUTPUT DROP [0:0]",
    "-A INPUT -i lo -j ACCEPT",
    "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    `-A INPUT -p tcp --dport ${input.workerPort} -j ACCEPT`,
    "-A OUTPUT -o lo -j ACCEPT",
    "-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
  ];
  const allowed: Destination[] = [
    ...input.nameservers.map((ip) => ({ cidr: normalizeCidr(ip), port: 53 })),
    ...input.allowed,
  ];
  const seen = new Set<string>();
  for (const d of allowed) {
    const key = `${d.cidr}:${d.port ?? ""}`;
    if (seen.has(key)) continue;
    seen.add(key);
    if (d.port === undefined) {
      v4.push(`-A OUTPUT -d ${d.cidr} -j ACCEPT`);
    } else {
      v4.push(`-A OUTPUT -d ${d.cidr} -p tcp --dport ${d.port} -j ACCEPT`);
      v4.push(`-A OUTPUT -d ${d.cidr} -p udp --dport ${d.port} -j ACCEPT`);
    }
  }
  const blocked = coalesce([
    ...BLOCKED_IPV4_RANGES,
    ...input.nodeAddresses.map(normalizeCidr),
    ...input.workerSubnets.map(normalizeCidr),
    ...input.denied.map(normalizeCidr),
  ]);
  for (const cidr of blocked) v4.push(`-A OUTPUT -d ${cidr} -j ${REJECT4}`);
  v4.push(input.egress === "allow" ? "-A OUTPUT -j ACCEPT" : `-A OUTPUT -j ${REJECT4}`);
  v4.push("COMMIT", "");

  // Workers get no IPv6 egress (like Lambda outside a VPC); link-local IPv6 on the
  // bridge would otherwise reach the other workers and the node.
  const v6 = [
    "*filter",
    ":INPUT DROP [0:0]",
    ":FORWARD DROP [0:0]",
    ":OUTPUT DROP [0:0]",
    "-A INPUT -i lo -j ACCEPT",
    "-A OUTPUT -o lo -j ACCEPT",
    `-A OUTPUT -j ${REJECT6}`,
    "COMMIT",
    "",
  ];
  return { ipv4: v4.join("\n"), ipv6: v6.join("\n") };
}

/**
 * Parses a comma-separated list of `ipv4[/prefix][:port]` entries (spaces
 * allowed, empty entries ignored). `setting` names the list in errors, e.g.
 * `WORKER_ALLOWED_DESTINATIONS`. `allowPort: false` rejects ports (lists of
 * blocked ranges). Throws an Error that names the setting and the bad entry.
 */
export function parseDestinations(raw: string, setting: string, allowPort = true): Destination[] {
  const out: Destination[] = [];
  for (const entry of raw
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)) {
    const bad = (why: string) => new Error(`${setting} entry "${entry}" ${why}`);
    if ((entry.match(/:/g) ?? []).length > 1)
      throw bad("is IPv6: workers have no IPv6 network, only IPv4 destinations can be listed");
    const m = /^([^:/]+)(?:\/(\d{1,2}))?(?::(\d{1,5}))?$/.exec(entry);
    if (!m || parseIpv4(m[1]) === undefined)
      throw bad(
        `is not ${allowPort ? "ipv4[/prefix][:port]" : "ipv4[/prefix]"}, e.g. ${allowPort ? "10.0.0.5:5432 or 192.0.2.0/24" : "10.96.0.0/12"} (names are not resolved)`,
      );
    const prefix = m[2] === undefined ? 32 : Number(m[2]);
    if (prefix > 32) throw bad("has a prefix above 32");
    let port: number | undefined;
    if (m[3] !== undefined) {
      if (!allowPort) throw bad("has a port; this list takes addresses and ranges only");
      port = Number(m[3]);
      if (port < 1 || port > 65535) throw bad("has a port outside 1-65535");
    }
    out.push({ cidr: normalizeCidr(`${m[1]}/${prefix}`), port });
  }
  return out;
}

/** `a.b.c.d` as an unsigned 32-bit number, or undefined when it is not a dotted IPv4 address. */
export function parseIpv4(text: string): number | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return undefined;
    n = n * 256 + Number(p);
  }
  return n;
}

function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

/** `ip` or `ip/prefix` as the CIDR of its network (`10.1.2.3/8` → `10.0.0.0/8`, `10.1.2.3` → `10.1.2.3/32`). */
export function normalizeCidr(text: string): string {
  const [ip, p] = text.split("/");
  const n = parseIpv4(ip);
  const prefix = p === undefined ? 32 : Number(p);
  if (n === undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > 32)
    throw new Error(`"${text}" is not an IPv4 address or CIDR`);
  return `${formatIpv4(maskOf(n, prefix))}/${prefix}`;
}

function maskOf(n: number, prefix: number): number {
  return prefix === 0 ? 0 : (n & (~0 << (32 - prefix))) >>> 0;
}

/** Drops CIDRs that an earlier or wider one already covers (fewer rules, cheaper restore); keeps the order. */
function coalesce(cidrs: string[]): string[] {
  const parsed = [...new Set(cidrs)].map((c) => {
    const [ip, p] = c.split("/");
    return { cidr: c, base: parseIpv4(ip)!, prefix: Number(p) };
  });
  return parsed
    .filter(
      (a) =>
        !parsed.some(
          (b) =>
            b !== a &&
            b.prefix <= a.prefix &&
            maskOf(a.base, b.prefix) === b.base &&
            (b.prefix < a.prefix || parsed.indexOf(b) < parsed.indexOf(a)),
        ),
    )
    .map((a) => a.cidr);
}
