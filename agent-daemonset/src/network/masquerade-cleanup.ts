import { exec, run } from "./exec.js";

/**
 * Removes the NAT rules of a worker's IP masquerade. The bridge plugin skips its IP-masquerade teardown when the netns is already
 * gone (it learns the addresses from the deleted link), leaving a NAT chain
 * behind; remove the rules tagged with this network and container instead.
 */
export async function removeMasqueradeRules(
  confList: { name: string; plugins: Record<string, unknown>[] },
  containerId: string,
): Promise<void> {
  if (!confList.plugins.some((p) => p.type === "bridge" && p.ipMasq === true)) return;
  const comment = `name: "${confList.name}" id: "${containerId}"`;
  let rules: string;
  try {
    rules = (await exec("iptables", ["-t", "nat", "-S", "POSTROUTING"], process.env, "")).stdout;
  } catch {
    return; // no iptables: the plugin could not have added rules either
  }
  const quoted = JSON.stringify(comment);
  for (const line of rules.split("\n").filter((l) => l.includes(quoted))) {
    const src = /-s (\S+)/.exec(line)?.[1];
    const chain = /-j (CNI-[0-9a-f]+)/.exec(line)?.[1];
    if (!src || !chain) continue;
    await run("iptables", [
      "-t",
      "nat",
      "-D",
      "POSTROUTING",
      "-s",
      src,
      "-m",
      "comment",
      "--comment",
      comment,
      "-j",
      chain,
    ]).catch(() => undefined);
    await run("iptables", ["-t", "nat", "-F", chain]).catch(() => undefined);
    await run("iptables", ["-t", "nat", "-X", chain]).catch(() => undefined);
  }
}
