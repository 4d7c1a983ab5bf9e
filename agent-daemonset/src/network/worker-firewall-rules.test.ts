// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, expect } from "@jest/globals";
import { resultIpv4Subnets } from "./cni-result.js";
import { normalizeCidr, parseDestinations, workerFirewallRules } from "./worker-firewall-rules.js";
import { resolvConfNameservers, WorkerFirewall } from "./worker-firewall.js";

const base = {
  egress: "allow" as const,
  allowed: [],
  nameservers: [],
  denied: [],
  nodeAddresses: [],
  workerSubnets: [],
  workerPort: 8080,
};

/** The OUTPUT rules of a rule set, without the `-A OUTPUT ` prefix. */
const output = (rules: string) =>
  rules
    .split("\n")
    .filter((l) => l.startsWith("-A OUTPUT "))
    .map((l) => l.slice("-A OUTPUT ".length));

describe("workerFirewallRules", () => {
  it("lets in only the invocation port and replies, and lets out loopback and replies first", () => {
    const { ipv4 } = workerFirewallRules(base);
    expect(ipv4.split("\n").slice(0, 9)).toEqual([
      "*filter",
      ":INPUT DROP [0:0]",
      ":FORWARD DROP [0:0]",
      ":OUTPUT DROP [0:0]",
      "-A INPUT -i lo -j ACCEPT",
      "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
      "-A INPUT -p tcp --dport 8080 -j ACCEPT",
      "-A OUTPUT -o lo -j ACCEPT",
      "-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    ]);
    expect(ipv4.trimEnd().endsWith("COMMIT")).toBe(true);
  });

  it("blocks private, link-local (metadata), multicast and reserved ranges, then accepts the rest when egress is allowed", () => {
    const out = output(workerFirewallRules(base).ipv4);
    for (const cidr of ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"]) {
      expect(out).toContain(`-d ${cidr} -j REJECT --reject-with icmp-admin-prohibited`);
    }
    expect(out.at(-1)).toBe("-j ACCEPT");
  });

  it("rejects everything not allowed when egress is denied", () => {
    const out = output(workerFirewallRules({ ...base, egress: "deny" }).ipv4);
    expect(out.at(-1)).toBe("-j REJECT --reject-with icmp-admin-prohibited");
    expect(out.filter((l) => l === "-j ACCEPT")).toEqual([]);
  });

  it("accepts allowed destinations and nameservers (port 53, UDP and TCP) before any block", () => {
    const out = output(
      workerFirewallRules({
        ...base,
        egress: "deny",
        nameservers: ["10.96.0.10"],
        allowed: [{ cidr: "10.0.5.0/24", port: 5432 }, { cidr: "192.168.1.9/32" }],
      }).ipv4,
    );
    const firstBlock = out.findIndex((l) => l.includes("REJECT"));
    expect(out.slice(2, firstBlock)).toEqual([
      "-d 10.96.0.10/32 -p tcp --dport 53 -j ACCEPT",
      "-d 10.96.0.10/32 -p udp --dport 53 -j ACCEPT",
      "-d 10.0.5.0/24 -p tcp --dport 5432 -j ACCEPT",
      "-d 10.0.5.0/24 -p udp --dport 5432 -j ACCEPT",
      "-d 192.168.1.9/32 -j ACCEPT",
    ]);
  });

  it("blocks the node's addresses, the worker subnets and the denied CIDRs, leaving out those a range already covers", () => {
    const out = output(
      workerFirewallRules({
        ...base,
        nodeAddresses: ["10.1.2.3", "203.0.113.10", "203.0.113.10"],
        workerSubnets: ["198.51.100.0/24", "198.51.100.1/32"],
        denied: ["192.0.2.0/24"],
      }).ipv4,
    );
    const blocked = out.filter((l) => l.includes("REJECT")).map((l) => l.split(" ")[1]);
    expect(blocked).toContain("203.0.113.10/32");
    expect(blocked).toContain("198.51.100.0/24");
    expect(blocked).toContain("192.0.2.0/24");
    expect(blocked).not.toContain("10.1.2.3/32"); // inside 10.0.0.0/8
    expect(blocked).not.toContain("198.51.100.1/32"); // inside the worker subnet
    expect(blocked.filter((c) => c === "203.0.113.10/32")).toHaveLength(1);
  });

  it("gives IPv6 loopback only", () => {
    expect(workerFirewallRules(base).ipv6.split("\n")).toEqual([
      "*filter",
      ":INPUT DROP [0:0]",
      ":FORWARD DROP [0:0]",
      ":OUTPUT DROP [0:0]",
      "-A INPUT -i lo -j ACCEPT",
      "-A OUTPUT -o lo -j ACCEPT",
      "-A OUTPUT -j REJECT --reject-with icmp6-adm-prohibited",
      "COMMIT",
      "",
    ]);
  });
});

describe("parseDestinations", () => {
  it("reads addresses, CIDRs and ports, normalised", () => {
    expect(parseDestinations(" 10.0.0.5:5432, 192.0.2.7/24 ,,203.0.113.9", "X")).toEqual([
      { cidr: "10.0.0.5/32", port: 5432 },
      { cidr: "192.0.2.0/24", port: undefined },
      { cidr: "203.0.113.9/32", port: undefined },
    ]);
    expect(parseDestinations("10.0.0.0/16:443", "X")).toEqual([{ cidr: "10.0.0.0/16", port: 443 }]);
    expect(parseDestinations("", "X")).toEqual([]);
  });

  it("names the setting and the bad entry", () => {
    expect(() => parseDestinations("db.local:5432", "WORKER_ALLOWED_DESTINATIONS")).toThrow(
      'WORKER_ALLOWED_DESTINATIONS entry "db.local:5432" is not ipv4[/prefix][:port]',
    );
    expect(() => parseDestinations("10.0.0.256", "X")).toThrow(/"10.0.0.256" is not/);
    expect(() => parseDestinations("10.0.0.0/33", "X")).toThrow(/prefix above 32/);
    expect(() => parseDestinations("10.0.0.1:0", "X")).toThrow(/port outside 1-65535/);
    expect(() => parseDestinations("10.0.0.1:70000", "X")).toThrow(/port outside 1-65535/);
    expect(() => parseDestinations("fd00::1", "X")).toThrow(/is IPv6/);
    expect(() => parseDestinations("10.96.0.0/12:443", "WORKER_DENIED_DESTINATIONS", false)).toThrow(
      'WORKER_DENIED_DESTINATIONS entry "10.96.0.0/12:443" has a port',
    );
  });

  it("normalizes CIDRs to their network", () => {
    expect(normalizeCidr("10.1.2.3/8")).toBe("10.0.0.0/8");
    expect(normalizeCidr("0.0.0.0/0")).toBe("0.0.0.0/0");
    expect(normalizeCidr("255.255.255.255")).toBe("255.255.255.255/32");
  });
});

describe("cluster mode: the worker subnets come from the CNI result", () => {
  it("reads the address's subnet and the gateway (CNI 1.0, routed /32, and 0.2.0 results)", () => {
    expect(
      resultIpv4Subnets({
        cniVersion: "1.0.0",
        ips: [
          { address: "10.244.1.7/24", gateway: "10.244.1.1", interface: 1 },
          { address: "fd00::7/64", gateway: "fd00::1" },
        ],
      }),
    ).toEqual(["10.244.1.0/24", "10.244.1.1/32"]);
    expect(resultIpv4Subnets({ ips: [{ address: "192.168.33.4/32" }] })).toEqual(["192.168.33.4/32"]);
    expect(resultIpv4Subnets({ ip4: { ip: "198.51.100.9/25", gateway: "198.51.100.1" } })).toEqual([
      "198.51.100.0/25",
      "198.51.100.1/32",
    ]);
    expect(resultIpv4Subnets({})).toEqual([]);
  });

  it("a cluster's public pod range is blocked like a private one", () => {
    const fw = new WorkerFirewall({ nameservers: [], nodeAddresses: () => [], ipv6: false });
    const rules = fw.rules(
      resultIpv4Subnets({ ips: [{ address: "203.0.113.7/24", gateway: "203.0.113.1" }] }),
    );
    expect(output(rules.ipv4)).toContain("-d 203.0.113.0/24 -j REJECT --reject-with icmp-admin-prohibited");
  });
});

describe("WorkerFirewall defaults", () => {
  it("takes the nameservers from resolv.conf, leaving out loopback and IPv6 ones", () => {
    const dir = mkdtempSync(join(tmpdir(), "esb-resolv-"));
    try {
      const file = join(dir, "resolv.conf");
      writeFileSync(
        file,
        "# comment\nnameserver 127.0.0.53\nnameserver 10.96.0.10\nnameserver fd00::10\nsearch x\nnameserver 10.96.0.10\n",
      );
      expect(resolvConfNameservers(file)).toEqual(["10.96.0.10"]);
      expect(resolvConfNameservers(join(dir, "missing"))).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("blocks the in-cluster API address the agent sees, and the node's addresses read at each call", () => {
    const saved = process.env.KUBERNETES_SERVICE_HOST;
    process.env.KUBERNETES_SERVICE_HOST = "198.51.100.50";
    let node = ["203.0.113.5"];
    try {
      const fw = new WorkerFirewall({ nameservers: [], nodeAddresses: () => node, ipv6: false });
      expect(fw.egress).toBe("allow");
      let out = output(fw.rules([]).ipv4);
      expect(out).toContain("-d 198.51.100.50/32 -j REJECT --reject-with icmp-admin-prohibited");
      expect(out).toContain("-d 203.0.113.5/32 -j REJECT --reject-with icmp-admin-prohibited");
      node = ["203.0.113.6"];
      out = output(fw.rules([]).ipv4);
      expect(out).toContain("-d 203.0.113.6/32 -j REJECT --reject-with icmp-admin-prohibited");
    } finally {
      if (saved === undefined) delete process.env.KUBERNETES_SERVICE_HOST;
      else process.env.KUBERNETES_SERVICE_HOST = saved;
    }
  });
});
