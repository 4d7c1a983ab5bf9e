import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { CniNetwork } from "./cni-network.js";

// Real CNI plugins, real network namespaces, and a bridge + subnet unique to this run.
const rand = Math.floor(Math.random() * 0xffff);
const bridge = `esbt${rand.toString(16)}`;
const subnet = `10.${200 + (rand % 50)}.${rand % 250}.0/24`;
const stateDir = mkdtempSync(join(tmpdir(), "esb-cni-test-"));
const netnsDir = join(stateDir, "netns");

function tcpRoundTrip(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host, port });
    let data = "";
    sock.setTimeout(10_000, () => sock.destroy(new Error(`timeout connecting to ${host}:${port}`)));
    sock.on("data", (d) => (data += d.toString()));
    sock.on("end", () => resolve(data));
    sock.on("error", reject);
  });
}

/** Starts a tiny TCP server inside the netns that answers "hello <name>" and closes. */
function serveInNetns(netnsPath: string, name: string, port: number): Promise<ChildProcess> {
  const script = `require("net").createServer(s=>s.end("hello ${name}")).listen(${port},"0.0.0.0",()=>console.log("ready"))`;
  const child = spawn("nsenter", [`--net=${netnsPath}`, process.execPath, "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => {
      if (d.toString().includes("ready")) resolve(child);
    });
    child.on("error", reject);
    child.on("exit", (code) => reject(new Error(`server in netns exited with ${code}`)));
  });
}

describe("CniNetwork (bridge mode, real CNI plugins)", () => {
  // No firewall: these tests are about the CNI plumbing (worker-firewall.test.ts covers isolation,
  // with this file's worker-to-worker connection as what the rules take away).
  const net = new CniNetwork({
    mode: "bridge",
    bridgeName: bridge,
    subnet,
    stateDir,
    netnsDir,
    firewall: null,
  });
  const servers: ChildProcess[] = [];

  beforeAll(() => {
    expect(existsSync("/usr/lib/cni/bridge") || existsSync("/opt/cni/bin/bridge")).toBe(true);
  });

  afterAll(async () => {
    for (const s of servers) s.kill("SIGKILL");
    for (const id of await net.list()) await net.detach(id);
    try {
      execFileSync("ip", ["link", "del", bridge], { stdio: "ignore" });
    } catch {
      // already gone
    }
    rmSync(stateDir, { recursive: true, force: true });
  });

  it("attaches two workers with distinct IPs reachable from the host and from each other", async () => {
    const a = await net.attach("w-a");
    const b = await net.attach("w-b");
    const prefix = subnet.split(".").slice(0, 3).join(".") + ".";
    expect(a.ip.startsWith(prefix)).toBe(true);
    expect(b.ip.startsWith(prefix)).toBe(true);
    expect(a.ip).not.toBe(b.ip);
    expect(a.netnsPath).toBe(join(netnsDir, "esb-w-a"));
    expect(existsSync(a.netnsPath)).toBe(true);
    expect((await net.list()).sort()).toEqual(["w-a", "w-b"]);

    servers.push(await serveInNetns(a.netnsPath, "a", 8080));
    servers.push(await serveInNetns(b.netnsPath, "b", 8080));
    // Host → worker over the bridge.
    expect(await tcpRoundTrip(a.ip, 8080)).toBe("hello a");
    expect(await tcpRoundTrip(b.ip, 8080)).toBe("hello b");
    // Worker a → worker b, from inside a's namespace.
    const fromA = execFileSync(
      "nsenter",
      [
        `--net=${a.netnsPath}`,
        process.execPath,
        "-e",
        `require("net").connect(8080,"${b.ip}").on("data",d=>process.stdout.write(d))`,
      ],
      { encoding: "utf8", timeout: 20_000 },
    );
    expect(fromA).toBe("hello b");
    // Loopback is up inside the namespace (workers use 127.0.0.1:9001).
    const lo = execFileSync("nsenter", [`--net=${a.netnsPath}`, "ip", "-o", "link", "show", "lo"], {
      encoding: "utf8",
    });
    expect(lo).toMatch(/UP/);
  });

  it("detach is idempotent and leaves no namespace or allocation behind", async () => {
    for (const s of servers.splice(0)) s.kill("SIGKILL");
    await net.detach("w-a");
    await net.detach("w-a");
    expect(await net.list()).toEqual(["w-b"]);
    expect(existsSync(join(netnsDir, "esb-w-a"))).toBe(false);
    await net.detach("w-b");
    await net.detach("w-b");
    expect(await net.list()).toEqual([]);
    expect(existsSync(join(netnsDir, "esb-w-b"))).toBe(false);
    // host-local released both addresses: only its bookkeeping files remain.
    const ipamDir = join(stateDir, "ipam", `esb-${bridge}`);
    const leftovers = existsSync(ipamDir)
      ? execFileSync("ls", [ipamDir], { encoding: "utf8" })
          .split("\n")
          .filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f))
      : [];
    expect(leftovers).toEqual([]);
  });

  it("detach of a worker that was never attached succeeds", async () => {
    await net.detach("never-attached");
    expect(await net.list()).toEqual([]);
  });

  it("detach still releases the address when the namespace is already gone", async () => {
    const c = await net.attach("w-c");
    execFileSync("umount", [c.netnsPath]);
    rmSync(c.netnsPath);
    await net.detach("w-c");
    expect(await net.list()).toEqual([]);
    // Its IP-masquerade rules are gone too.
    const nat = execFileSync("iptables", ["-t", "nat", "-S"], { encoding: "utf8" });
    expect(nat.split("\n").filter((l) => l.includes(`esb-${bridge}`))).toEqual([]);
    // The address is free again: a new attach can get it back eventually; at least it attaches.
    const d = await net.attach("w-d");
    expect(d.ip).toBeTruthy();
    await net.detach("w-d");
    const natAfter = execFileSync("iptables", ["-t", "nat", "-S"], { encoding: "utf8" });
    expect(natAfter.split("\n").filter((l) => l.includes(`esb-${bridge}`))).toEqual([]);
  });

  it("rejects bad worker ids and bad configuration with clear errors", async () => {
    await expect(net.attach("../etc")).rejects.toThrow(/invalid worker id/);
    expect(() => new CniNetwork({ mode: "bridge", bridgeName: "a-very-long-bridge-name", stateDir })).toThrow(
      /longer than 15/,
    );
    expect(() => new CniNetwork({ mode: "bridge", subnet: "10.0.0.0", stateDir })).toThrow(/IPv4 CIDR/);
  });

  it("cluster mode uses the first conflist of the configuration folder", async () => {
    const confDir = join(stateDir, "net.d");
    execFileSync("mkdir", ["-p", confDir]);
    const conf = {
      cniVersion: "0.4.0",
      name: "clusternet",
      plugins: [
        {
          type: "bridge",
          bridge,
          isGateway: true,
          ipam: { type: "host-local", subnet, dataDir: join(stateDir, "ipam2") },
        },
      ],
    };
    execFileSync("sh", ["-c", `cat > ${join(confDir, "10-cluster.conflist")}`], {
      input: JSON.stringify(conf),
    });
    execFileSync("sh", ["-c", `echo '{}' > ${join(confDir, "99-other.txt")}`]);
    const cluster = new CniNetwork({
      mode: "cluster",
      confDir,
      stateDir: join(stateDir, "cluster"),
      netnsDir,
      firewall: null,
    });
    expect((await cluster.confList()).name).toBe("clusternet");
    const w = await cluster.attach("w-cluster");
    expect(w.ip.startsWith(subnet.split(".").slice(0, 3).join("."))).toBe(true);
    servers.push(await serveInNetns(w.netnsPath, "cluster", 8081));
    expect(await tcpRoundTrip(w.ip, 8081)).toBe("hello cluster");
    for (const s of servers.splice(0)) s.kill("SIGKILL");
    await cluster.detach("w-cluster");
    expect(await cluster.list()).toEqual([]);
  });
});
