import { normalizeCidr, parseIpv4 } from "./worker-firewall-rules.js";

/** The parts of a CNI ADD result (any version from 0.2.0) that ESB reads. */
interface CniResultView {
  ips?: { address?: string; gateway?: string; interface?: number; version?: string }[];
  interfaces?: { sandbox?: string }[];
  ip4?: { ip?: string; gateway?: string };
}

/** Picks the first IPv4 address of a CNI result, preferring one on an interface inside `netnsPath`. */
export function pickIpv4(result: Record<string, unknown>, netnsPath: string): string | undefined {
  const r = result as CniResultView;
  const v4 = (r.ips ?? []).filter((i) => i.address && !i.address.includes(":"));
  const inSandbox = v4.find(
    (i) => i.interface !== undefined && r.interfaces?.[i.interface]?.sandbox === netnsPath,
  );
  const chosen = inSandbox ?? v4[0];
  if (chosen?.address) return chosen.address.split("/")[0];
  // CNI 0.2.0 results.
  return r.ip4?.ip?.split("/")[0];
}

/**
 * The IPv4 networks a CNI result puts the worker on: each address's subnet
 * (e.g. `10.244.1.7/24` → `10.244.1.0/24`, this node's pod range with
 * flannel-like plugins; a /32 with routed ones) and each gateway. The worker
 * firewall blocks them, so other workers and pods on the node stay unreachable
 * even when the range is public.
 */
export function resultIpv4Subnets(result: Record<string, unknown>): string[] {
  const r = result as CniResultView;
  const entries = [...(r.ips ?? []), ...(r.ip4 ? [{ address: r.ip4.ip, gateway: r.ip4.gateway }] : [])];
  const out = new Set<string>();
  for (const e of entries) {
    for (const text of [e.address, e.gateway]) {
      if (!text || parseIpv4(text.split("/")[0]) === undefined) continue;
      out.add(normalizeCidr(text));
    }
  }
  return [...out];
}
