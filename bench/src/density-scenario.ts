import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { waitForRuntimePaused } from "./agent-measurements.js";
import { summarize } from "./bench-results.js";
import type { BenchScenario } from "./bench-scenario.js";

const CGROUP_ROOT = "/sys/fs/cgroup";

/** Reads `key value` lines of a cgroup v1 stat file. */
async function statFile(path: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const line of (await readFile(path, "utf8")).split("\n")) {
    const [k, v] = line.split(" ");
    if (k && v) out[k] = Number(v);
  }
  return out;
}

/** CPU time (ns) used by a worker's cgroup so far (cgroup v1 cpuacct). */
async function cpuNs(cgroup: string): Promise<number> {
  for (const h of ["cpuacct", "cpu,cpuacct"]) {
    try {
      return Number((await readFile(join(CGROUP_ROOT, h, cgroup, "cpuacct.usage"), "utf8")).trim());
    } catch {
      // try the next mount name
    }
  }
  throw new Error(`no cpuacct.usage for cgroup ${cgroup} (cgroup v1 expected)`);
}

/**
 * Density: N provisioned Node workers, all paused by the pool. Per worker,
 * from its memory cgroup: `total_rss` (anonymous memory: what each extra
 * worker really costs; the Node binary's pages are shared page cache) and
 * `usage_in_bytes` (everything charged, page cache included). Then the CPU
 * time the N paused workers use over a quiet interval (cpuacct), per worker
 * and in total.
 */
export const densityScenario: BenchScenario = {
  id: "density",
  rows: ["density-rss", "density-memory", "density-idle-cpu", "density-idle-cpu-total"],
  async run({ env, results, sizes }) {
    const n = sizes.densityWorkers;
    const name = "bench-density";
    const agent = env.agent!;
    const t0 = Date.now();
    await env.prepareFunction({ name, runtime: "nodejs24.x", pauseAfterMs: 50, provisioned: n });
    const ref = { namespace: "default", name };
    for (;;) {
      const pool = agent.pools().find((p) => p.ref.name === name);
      if (pool && pool.counts.paused >= n) break;
      if (Date.now() - t0 > 300_000)
        throw new Error(`density: ${n} workers not paused within 300 s: ${JSON.stringify(pool?.counts)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const ids = agent.listWorkers(ref).map((w) => w.workerId);
    for (const id of ids) await waitForRuntimePaused(agent, id, 30_000);
    process.stderr.write(
      `  density: ${ids.length} workers started and paused in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`,
    );
    await new Promise((r) => setTimeout(r, 1000));
    const cgroup = (id: string) => `${env.namespace}/${id}`;
    const rss: number[] = [];
    const usage: number[] = [];
    for (const id of ids) {
      const st = await statFile(join(CGROUP_ROOT, "memory", cgroup(id), "memory.stat"));
      rss.push(st.total_rss / 2 ** 20);
      usage.push(
        Number(
          (await readFile(join(CGROUP_ROOT, "memory", cgroup(id), "memory.usage_in_bytes"), "utf8")).trim(),
        ) /
          2 ** 20,
      );
    }
    const before = await Promise.all(ids.map((id) => cpuNs(cgroup(id))));
    await new Promise((r) => setTimeout(r, sizes.idleCpuS * 1000));
    const after = await Promise.all(ids.map((id) => cpuNs(cgroup(id))));
    const cpuMs = after.map((a, i) => (a - before[i]) / 1e6);
    results.add(
      summarize("density-rss", "MB", rss, {
        note: `per paused Node worker (memory.stat total_rss), N=${ids.length}`,
      }),
    );
    results.add(
      summarize("density-memory", "MB", usage, {
        note: "per paused worker, memory.usage_in_bytes (incl. page cache)",
      }),
    );
    results.add(
      summarize("density-idle-cpu", `ms/${sizes.idleCpuS}s`, cpuMs, {
        note: "CPU per paused worker (cpuacct.usage)",
      }),
    );
    const total = cpuMs.reduce((a, b) => a + b, 0);
    results.add(
      summarize("density-idle-cpu-total", `ms/${sizes.idleCpuS}s`, [total], {
        note: `CPU of all ${ids.length} paused workers together`,
      }),
    );
    const t1 = Date.now();
    await env.destroyFunction(name);
    process.stderr.write(
      `  density: ${ids.length} workers removed in ${((Date.now() - t1) / 1000).toFixed(1)} s\n`,
    );
  },
};
