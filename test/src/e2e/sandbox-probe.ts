/**
 * A Node.js handler (index.mjs) that probes its own sandbox from the inside:
 * its /proc/self/status, writes to /, /var/task and /tmp, its /etc/resolv.conf,
 * and a TCP connection to each `{ name, host, port }` of `event.targets` (the
 * error code, e.g. EHOSTUNREACH, or "connected"). Used by the standalone and
 * the cluster end-to-end suites.
 */
export const SANDBOX_PROBE_CODE = `
import { readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
const attempt = (host, port) => new Promise((resolve) => {
  const s = connect({ host, port, timeout: 3000 });
  s.once("connect", () => { s.destroy(); resolve("connected"); });
  s.once("timeout", () => { s.destroy(); resolve("timeout"); });
  s.once("error", (e) => resolve(e.code));
});
const tryWrite = (path) => { try { writeFileSync(path, "x"); return "written"; } catch (e) { return e.code; } };
export const handler = async (event) => {
  const status = Object.fromEntries(readFileSync("/proc/self/status", "utf8").split("\\n")
    .map((l) => l.split(":\\t")).filter((p) => p.length === 2));
  const connects = {};
  for (const t of event.targets) connects[t.name] = await attempt(t.host, t.port);
  let resolvConf;
  try { resolvConf = readFileSync("/etc/resolv.conf", "utf8"); } catch (e) { resolvConf = e.code; }
  return { status, writes: { root: tryWrite("/probe"), task: tryWrite("/var/task/probe"), tmp: tryWrite("/tmp/probe") }, connects, resolvConf };
};
`;
