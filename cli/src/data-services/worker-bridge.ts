import { execFileSync } from "node:child_process";
import { normalizeCidr, parseIpv4 } from "@esb/agent/network/worker-firewall-rules";

/**
 * The gateway address of a worker subnet: its first host (`10.88.0.0/16` →
 * `10.88.0.1`), the address the CNI bridge plugin (host-local, no explicit
 * gateway) gives the bridge.
 */
export function bridgeGatewayAddress(subnet: string): string {
  const [network, prefix] = normalizeCidr(subnet).split("/");
  if (Number(prefix) > 30) throw new Error(`worker subnet ${subnet} is too small for a bridge and workers`);
  const n = parseIpv4(network)! + 1;
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

/**
 * Makes sure the worker bridge exists, is up and holds its gateway address,
 * so that a service can listen there before the first worker starts (the CNI
 * bridge plugin adopts the bridge as it finds it). Returns the address and
 * whether the bridge was created here (then its owner removes it when no agent did).
 */
export function ensureWorkerBridge(bridge: string, subnet: string): { address: string; created: boolean } {
  const address = bridgeGatewayAddress(subnet);
  const prefix = normalizeCidr(subnet).split("/")[1];
  let created = false;
  if (!linkExists(bridge)) {
    execFileSync("ip", ["link", "add", "name", bridge, "type", "bridge"], { stdio: "pipe" });
    created = true;
  }
  const addrs = execFileSync("ip", ["-o", "-4", "addr", "show", "dev", bridge], { encoding: "utf8" });
  if (!addrs.includes(` ${address}/`))
    execFileSync("ip", ["addr", "add", `${address}/${prefix}`, "dev", bridge], { stdio: "pipe" });
  execFileSync("ip", ["link", "set", bridge, "up"], { stdio: "pipe" });
  return { address, created };
}

/** Removes a bridge if it exists. */
export function removeBridge(bridge: string): void {
  if (linkExists(bridge)) execFileSync("ip", ["link", "del", bridge], { stdio: "pipe" });
}

function linkExists(name: string): boolean {
  try {
    execFileSync("ip", ["link", "show", "dev", name], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
