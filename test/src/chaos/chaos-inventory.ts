import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import type { DatabaseSync } from "node:sqlite";
import { WorkerState } from "@esb/common/gen/esb/agent/v1/agent_pb";
import { CHAOS_FUNCTION, type ChaosStack } from "./chaos-stack.js";

/**
 * What is left on the node compared with what the agent says it has: every
 * list is empty and `poolSize` equals the provisioned size on a healthy node.
 */
export interface Leftovers {
  /** Workers of the chaos function the agent lists. */
  poolSize: number;
  /** Of those, workers in a state other than IDLE or PAUSED. */
  notIdle: string[];
  /** Workers leased to a caller (BUSY) with no call in flight. */
  leases: string[];
  /** containerd containers no listed worker owns. */
  orphanContainers: string[];
  /** containerd tasks no listed worker owns. */
  orphanTasks: string[];
  /** Listed workers whose task is missing or not running/paused in containerd. */
  lostWorkers: string[];
  /** Mounted network namespaces no listed worker owns. */
  orphanNetns: string[];
  /** host-local IP allocations no listed worker holds. */
  orphanIps: string[];
}

/** Takes the inventory of the stack's node (agent ListWorkers, containerd, netns folder, host-local folder). */
export async function takeInventory(stack: ChaosStack): Promise<Leftovers> {
  const workers = await stack.workers();
  const [containers, tasks] = [await stack.containers(), await stack.tasks()];
  const byContainer = new Set(workers.map((w) => w.containerId));
  const netns = new Set(workers.map((w) => `esb-${w.workerId}`));
  const ips = new Set(workers.map((w) => w.address.replace(/:\d+$/, "")));
  const mine = workers.filter((w) => w.function?.name === CHAOS_FUNCTION);
  return {
    poolSize: mine.length,
    notIdle: mine
      .filter(
        (w) => w.state !== WorkerState.IDLE && w.state !== WorkerState.PAUSED && w.state !== WorkerState.BUSY,
      )
      .map((w) => `${w.workerId} ${WorkerState[w.state]}`),
    leases: workers.filter((w) => w.state === WorkerState.BUSY).map((w) => w.workerId),
    orphanContainers: containers.filter((c) => !byContainer.has(c)),
    orphanTasks: [...tasks.keys()].filter((t) => !byContainer.has(t)),
    lostWorkers: workers
      .filter((w) => !["RUNNING", "PAUSED"].includes(tasks.get(w.containerId)?.status ?? "missing"))
      .map((w) => `${w.workerId} task ${tasks.get(w.containerId)?.status ?? "missing"}`),
    orphanNetns: stack.netnsFiles().filter((f) => !netns.has(f)),
    orphanIps: stack.ipAllocations().filter((ip) => !ips.has(ip)),
  };
}

/** True when nothing is left over and the pool is at `provisioned`. */
export function isClean(l: Leftovers, provisioned: number): boolean {
  return (
    l.poolSize === provisioned &&
    [l.notIdle, l.leases, l.orphanContainers, l.orphanTasks, l.lostWorkers, l.orphanNetns, l.orphanIps].every(
      (x) => x.length === 0,
    )
  );
}

/** The gateway's durable Event store, read-only: what is still waiting and what went to the dead letters. */
export interface StoreState {
  waiting: number;
  deadLetters: { reason: string; error: string; count: number }[];
  /** Request ids are not tokens: the dead letters' payload tokens, to tell which accepted Events they were. */
  deadTokens: string[];
}

/** Reads `file` (the SQLite store the gateway writes); an absent file reads as empty. */
export function readEventStore(file: string): StoreState {
  if (!existsSync(file)) return { waiting: 0, deadLetters: [], deadTokens: [] };
  const { DatabaseSync } = createRequire(import.meta.url)("node:sqlite") as {
    DatabaseSync: new (path: string, options?: { readOnly?: boolean }) => DatabaseSync;
  };
  const db = new DatabaseSync(file, { readOnly: true });
  try {
    const waiting = (db.prepare("SELECT count(*) AS n FROM events").get() as { n: number }).n;
    const deadLetters = db
      .prepare(
        "SELECT reason, coalesce(error, '') AS error, count(*) AS count FROM dead_letters GROUP BY reason, error",
      )
      .all() as { reason: string; error: string; count: number }[];
    const deadTokens = (
      db.prepare("SELECT CAST(payload AS TEXT) AS p FROM dead_letters").all() as { p: string }[]
    )
      .map((r) => {
        try {
          return String((JSON.parse(r.p) as { token?: unknown }).token ?? "");
        } catch {
          return "";
        }
      })
      .filter(Boolean);
    return { waiting, deadLetters, deadTokens };
  } finally {
    db.close();
  }
}
