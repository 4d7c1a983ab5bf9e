import cluster, { type Worker } from "node:cluster";
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import type { Logger } from "@esb/common";
import { AggregatorRegistry } from "prom-client";
import type { GatewayMetrics } from "./gateway-metrics.js";

/** Environment variable naming a gateway process's slot (0…processes-1) in a cluster. */
export const GATEWAY_PROCESS_INDEX_ENV = "GATEWAY_PROCESS_INDEX";

const METRICS_REQUEST = "esb:gateway-metrics-request";
const METRICS_RESPONSE = "esb:gateway-metrics-response";
/** A process that dies within this long of its start is not restarted: something is wrong with all of them. */
const MIN_UPTIME_MS = 5000;

/**
 * CPUs this process may use: the affinity mask (`availableParallelism`), bounded by
 * the cgroup CPU quota when one is set (v2 `cpu.max`, v1 `cpu.cfs_quota_us`), rounded
 * up; at least 1. What `GATEWAY_PROCESSES=auto` starts.
 */
export function cpusGiven(): number {
  let cpus = availableParallelism();
  const quota = cgroupCpuQuota();
  if (quota !== undefined) cpus = Math.min(cpus, Math.ceil(quota));
  return Math.max(1, cpus);
}

function cgroupCpuQuota(): number | undefined {
  const read = (path: string): string | undefined => {
    try {
      return readFileSync(path, "utf8").trim();
    } catch {
      return undefined;
    }
  };
  const v2 = read("/sys/fs/cgroup/cpu.max")?.split(/\s+/);
  if (v2 && v2[0] !== "max" && Number(v2[0]) > 0 && Number(v2[1]) > 0) return Number(v2[0]) / Number(v2[1]);
  const quota = Number(read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"));
  const period = Number(read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"));
  if (quota > 0 && period > 0) return quota / period;
  return undefined;
}

/**
 * The primary of a multi-process gateway (`GATEWAY_PROCESSES` > 1): forks
 * `processes` gateway processes that share the listening port (node:cluster,
 * connections handed out round-robin) and are otherwise independent, like
 * replicas: each has its own agent connections and holder id, warm hold, leases
 * and Event queue. It serves them the aggregated `/metrics` (prom-client's
 * AggregatorRegistry: counters and histograms summed over the processes),
 * restarts a process that dies, and on SIGTERM/SIGINT stops them all and exits
 * when they have (exit code 1 when one failed). A process that dies within 5 s
 * of its start stops the whole gateway with exit code 1 (a start-up failure such
 * as a port in use would otherwise loop).
 */
export function runGatewayPrimary(processes: number, logger: Logger): void {
  const aggregator = new AggregatorRegistry();
  const started = new Map<Worker, { index: number; at: number }>();
  let stopping = false;
  let failed = false;
  const fork = (index: number) => {
    const worker = cluster.fork({ [GATEWAY_PROCESS_INDEX_ENV]: String(index) });
    started.set(worker, { index, at: Date.now() });
  };
  const stopAll = (reason: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ reason, processes: started.size }, "stopping gateway processes");
    for (const w of started.keys()) w.process.kill("SIGTERM");
    if (started.size === 0) process.exit(failed ? 1 : 0);
  };
  cluster.on("message", (worker, message: { type?: string; id?: number }) => {
    if (message?.type !== METRICS_REQUEST) return;
    aggregator.clusterMetrics().then(
      (body) => worker.send({ type: METRICS_RESPONSE, id: message.id, body }),
      (err: unknown) => worker.send({ type: METRICS_RESPONSE, id: message.id, error: String(err) }),
    );
  });
  cluster.on("exit", (worker, code, signal) => {
    const slot = started.get(worker);
    started.delete(worker);
    if (stopping) {
      // Killed by the SIGTERM sent (before it set its handler): not a failure.
      if (code !== null && code !== 0) failed = true;
      if (started.size === 0) process.exit(failed ? 1 : 0);
      return;
    }
    if (!slot || Date.now() - slot.at < MIN_UPTIME_MS) {
      logger.error({ code, signal }, "a gateway process failed at start; stopping the gateway");
      failed = true;
      stopAll("start-up failure");
      return;
    }
    logger.error({ index: slot.index, code, signal }, "gateway process died; starting another");
    fork(slot.index);
  });
  process.once("SIGTERM", () => stopAll("SIGTERM"));
  process.once("SIGINT", () => stopAll("SIGINT"));
  // Connections are handed out by the primary in turn, not left to the kernel (uneven on Linux).
  cluster.schedulingPolicy = cluster.SCHED_RR;
  for (let i = 0; i < processes; i++) fork(i);
  logger.info({ processes }, "gateway processes started");
}

/**
 * Makes this gateway process a member of the primary's cluster: its metrics are
 * reported to the primary, and `/metrics` (through `metrics.registry.metrics()`)
 * answers with the aggregate of every process, so a scrape sees the whole
 * gateway whichever process it reaches. `onPrimaryGone` runs when the primary's
 * channel closes (the primary died): the process must stop, nothing would
 * restart or aggregate it.
 */
export function joinGatewayCluster(metrics: GatewayMetrics, onPrimaryGone: () => void): void {
  // Constructing one installs prom-client's worker-side responder to the primary's requests.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([metrics.registry]);
  const pending = new Map<number, { resolve: (body: string) => void; reject: (err: Error) => void }>();
  let next = 0;
  process.on("message", (message: { type?: string; id?: number; body?: string; error?: string }) => {
    if (message?.type !== METRICS_RESPONSE || message.id === undefined) return;
    const p = pending.get(message.id);
    pending.delete(message.id);
    if (message.error !== undefined) p?.reject(new Error(`aggregating metrics: ${message.error}`));
    else p?.resolve(message.body ?? "");
  });
  process.once("disconnect", () => {
    for (const p of pending.values()) p.reject(new Error("the gateway's primary process is gone"));
    pending.clear();
    onPrimaryGone();
  });
  // An own property shadows Registry.metrics() for /metrics only; the JSON the primary gathers is unchanged.
  metrics.registry.metrics = () =>
    new Promise<string>((resolve, reject) => {
      const id = next++;
      pending.set(id, { resolve, reject });
      process.send!({ type: METRICS_REQUEST, id });
    });
}
