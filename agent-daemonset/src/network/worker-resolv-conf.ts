import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { resolvConfNameservers } from "./worker-firewall.js";

/**
 * Writes the resolv.conf that workers see at /etc/resolv.conf into `dir` and
 * returns its path, or undefined when the node has no nameserver a worker can
 * reach (a loopback resolver such as 127.0.0.53 is the node's own, behind the
 * worker firewall). It keeps the node's reachable IPv4 nameservers — the same
 * list the worker firewall allows on port 53 — and its `search` and `options`
 * lines, so functions resolve names as the agent does (in a cluster: the
 * cluster DNS the agent's pod uses).
 */
export async function writeWorkerResolvConf(
  dir: string,
  source = "/etc/resolv.conf",
): Promise<string | undefined> {
  const nameservers = resolvConfNameservers(source);
  if (nameservers.length === 0) return undefined;
  let text = "";
  try {
    text = await readFile(source, "utf8");
  } catch {
    // resolvConfNameservers read it a moment ago; without it, nameservers alone
  }
  const kept = text.split("\n").filter((l) => /^\s*(search|domain|options)\s/.test(l));
  const path = join(dir, "resolv.conf");
  const content = [
    "# Written by the ESB agent from the node's resolv.conf (reachable nameservers only).",
    ...nameservers.map((ns) => `nameserver ${ns}`),
    ...kept.map((l) => l.trim()),
    "",
  ].join("\n");
  await writeFile(path, content, { mode: 0o644 });
  return path;
}
