import type { Condition, LambdaFunctionStatus } from "@esb/common";
import { CONDITION_ROUTES_ACCEPTED } from "./route-status.js";

/** Condition types written to `status.conditions`. */
export const CONDITION_READY = "Ready";
export const CONDITION_IMAGE_PREPARED = "ImagePrepared";
export const CONDITION_WARM_POOL_READY = "WarmPoolReady";
/** Set while a deleted function waits for its workers to be destroyed on every agent. */
export const CONDITION_WORKERS_DESTROYED = "WorkersDestroyed";
/** Reason of {@link CONDITION_WORKERS_DESTROYED} (and Ready) while agents are unknown or unreachable. */
export const REASON_WAITING_FOR_AGENTS = "WaitingForAgents";

/** What one reconcile of a function found on the agents, for {@link preparedConditions}. */
export interface PrepareSummary {
  generation: number;
  revision: string;
  /** spec.provisionedConcurrency (0 when unset). */
  provisioned: number;
  /** Agents asked, and agents that prepared the revision. */
  nodes: number;
  prepared: number;
  /** Warm (idle or paused) workers over all agents. */
  warm: number;
  /** `node: error; …` of the agents that failed ("" when none did). */
  failureText: string;
  /** `node: errorType: message` of agents whose provisioned workers fail to initialise. */
  initErrors?: string[];
}

/**
 * Ready, ImagePrepared and WarmPoolReady after a prepare round: prepared on at least one agent
 * and, with provisioned concurrency, that many workers warm; the first unmet one is Ready's reason.
 */
export function preparedConditions(p: PrepareSummary): {
  conditions: Array<Omit<Condition, "lastTransitionTime">>;
  warmReady: boolean;
} {
  const { generation, revision, provisioned, warm, failureText, prepared, nodes } = p;
  const imagePrepared: Omit<Condition, "lastTransitionTime"> =
    prepared === 0
      ? {
          type: CONDITION_IMAGE_PREPARED,
          status: "False",
          reason: "PrepareFailed",
          message: failureText,
          observedGeneration: generation,
        }
      : {
          type: CONDITION_IMAGE_PREPARED,
          status: "True",
          reason: "Prepared",
          message: `revision ${revision} prepared on ${prepared} of ${nodes} nodes${prepared < nodes ? ` (failed: ${failureText})` : ""}`,
          observedGeneration: generation,
        };
  const warmReady = prepared > 0 && warm >= provisioned;
  const warmPool: Omit<Condition, "lastTransitionTime"> =
    provisioned === 0
      ? {
          type: CONDITION_WARM_POOL_READY,
          status: "True",
          reason: "NoProvisionedConcurrency",
          message: "no provisioned concurrency requested",
          observedGeneration: generation,
        }
      : warmReady
        ? {
            type: CONDITION_WARM_POOL_READY,
            status: "True",
            reason: "WarmPoolReady",
            message: `${warm} of ${provisioned} provisioned workers warm`,
            observedGeneration: generation,
          }
        : p.initErrors?.length
          ? {
              // The function's code or environment is broken: no warm pool will come.
              type: CONDITION_WARM_POOL_READY,
              status: "False",
              reason: "InitFailed",
              message: `${warm} of ${provisioned} provisioned workers warm; the function does not initialise: ${p.initErrors.join("; ")}`,
              observedGeneration: generation,
            }
          : {
              type: CONDITION_WARM_POOL_READY,
              status: "False",
              reason: "WarmingUp",
              message: `${warm} of ${provisioned} provisioned workers warm`,
              observedGeneration: generation,
            };
  const isReady = imagePrepared.status === "True" && warmPool.status === "True";
  const readyCond: Omit<Condition, "lastTransitionTime"> = isReady
    ? {
        type: CONDITION_READY,
        status: "True",
        reason: "Ready",
        message: `ready on ${prepared} nodes, ${warm} warm workers`,
        observedGeneration: generation,
      }
    : imagePrepared.status !== "True"
      ? {
          type: CONDITION_READY,
          status: "False",
          reason: imagePrepared.reason,
          message: imagePrepared.message,
          observedGeneration: generation,
        }
      : {
          type: CONDITION_READY,
          status: "False",
          reason: warmPool.reason,
          message: warmPool.message,
          observedGeneration: generation,
        };
  return { conditions: [readyCond, imagePrepared, warmPool], warmReady };
}

/** Ready (and ImagePrepared, unless no agent exists at all) False with `reason`. */
export function failedConditions(
  reason: string,
  message: string,
  generation: number,
): Array<Omit<Condition, "lastTransitionTime">> {
  return [
    { type: CONDITION_READY, status: "False", reason, message, observedGeneration: generation },
    ...(reason === "NoAgents"
      ? []
      : [
          {
            type: CONDITION_IMAGE_PREPARED,
            status: "False" as const,
            reason,
            message,
            observedGeneration: generation,
          },
        ]),
  ];
}

/** Merges new conditions into old ones, keeping lastTransitionTime when the status did not change. */
export function mergeConditions(
  old: Condition[] | undefined,
  next: Array<Omit<Condition, "lastTransitionTime">>,
): Condition[] {
  const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  const out: Condition[] = (old ?? []).filter((c) => !next.some((n) => n.type === c.type));
  for (const n of next) {
    const o = old?.find((c) => c.type === n.type);
    out.push({ ...n, lastTransitionTime: o && o.status === n.status ? o.lastTransitionTime : now });
  }
  const order = [
    CONDITION_READY,
    CONDITION_IMAGE_PREPARED,
    CONDITION_WARM_POOL_READY,
    CONDITION_WORKERS_DESTROYED,
    CONDITION_ROUTES_ACCEPTED,
  ];
  const rank = (t: string) => (order.includes(t) ? order.indexOf(t) : order.length);
  return out.sort((a, b) => rank(a.type) - rank(b.type));
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (typeof v === "object" && v !== null)
    return `{${Object.keys(v)
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  return JSON.stringify(v);
}

/** True when two statuses say the same (key order and undefined fields aside). */
export function sameStatus(a: LambdaFunctionStatus | undefined, b: LambdaFunctionStatus): boolean {
  return a !== undefined && canonical(a) === canonical(b);
}
