import type { LambdaFunction, LambdaFunctionStatus } from "@esb/common";

/** The state fields of AWS's FunctionConfiguration (GetFunction, GetFunctionConfiguration). */
export interface FunctionStateFields {
  State: "Pending" | "Active" | "Failed";
  StateReason?: string;
  StateReasonCode?: string;
  LastUpdateStatus: "InProgress" | "Successful" | "Failed";
  LastUpdateStatusReason?: string;
  LastUpdateStatusReasonCode?: string;
}

// Ready=False reasons that mean "not there yet" rather than "broken": the reconciler is still
// warming the pool, waiting for an agent, or has none yet (it retries on its own).
const IN_PROGRESS_REASONS = new Set(["WarmingUp", "WaitingForAgents", "NoAgents"]);

// ESB's failure reasons (Ready condition) in AWS's StateReasonCode vocabulary, so callers that
// switch on the code (SDK waiters, IaC tools) see the nearest thing Lambda would say.
const CODE_REASONS = new Set(["ConfigMapNotFound", "ConfigMapEmpty", "InvalidCode", "CodePathNotFound"]);

function reasonCode(reason: string | undefined, fn: LambdaFunction): string {
  if (reason === "InvalidSpec") return "InvalidConfiguration";
  if (reason && CODE_REASONS.has(reason)) return "InvalidZipFileException";
  if (reason === "PrepareFailed") return fn.spec.image ? "InvalidImage" : "InvalidConfiguration";
  // Provisioned workers whose code fails to initialise (AWS: provisioned concurrency FAILED).
  if (reason === "InitFailed") return "FunctionError";
  return "InternalError";
}

/**
 * State and LastUpdateStatus of `fn` as AWS's GetFunction reports them, from its Ready
 * condition:
 * Ready=True for the current generation → Active/Successful; not yet decided (no condition, an
 * older generation, or warming up / waiting for agents) → Pending/InProgress before the first
 * successful preparation, Active/InProgress after it; any other Ready=False → Failed with the
 * condition's reason and message as StateReason and a StateReasonCode.
 */
export function functionStateOf(fn: LambdaFunction): FunctionStateFields {
  const s: LambdaFunctionStatus = fn.status ?? {};
  const ready = s.conditions?.find((c) => c.type === "Ready");
  const generation = fn.metadata.generation ?? 1;
  const current =
    ready !== undefined && (ready.observedGeneration ?? s.observedGeneration ?? generation) >= generation;
  // A revision is recorded only once agents were prepared: the function has run before.
  const wasActive = s.revision !== undefined;
  if (current && ready.status === "True") return { State: "Active", LastUpdateStatus: "Successful" };
  if (current && ready.status === "False" && !IN_PROGRESS_REASONS.has(ready.reason ?? "")) {
    const reason = ready.message ? `${ready.reason}: ${ready.message}` : (ready.reason ?? "failed");
    const code = reasonCode(ready.reason, fn);
    return {
      State: "Failed",
      StateReason: reason,
      StateReasonCode: code,
      LastUpdateStatus: "Failed",
      LastUpdateStatusReason: reason,
      LastUpdateStatusReasonCode: code,
    };
  }
  const why = current && ready.message ? ready.message : undefined;
  if (wasActive)
    return {
      State: "Active",
      LastUpdateStatus: "InProgress",
      LastUpdateStatusReason: why ?? "The function is being updated.",
      LastUpdateStatusReasonCode: "Updating",
    };
  return {
    State: "Pending",
    StateReason: why ?? "The function is being created.",
    StateReasonCode: "Creating",
    LastUpdateStatus: "InProgress",
    LastUpdateStatusReason: why ?? "The function is being created.",
    LastUpdateStatusReasonCode: "Creating",
  };
}

/**
 * Where the gateway reads a function's status when its registry does not carry it (standalone:
 * the folder registry reads manifests, the controller's source keeps status and generation):
 * `namespace`, `name` → the function as the controller sees it, or undefined when it does not know it.
 */
export type FunctionStatusLookup = (namespace: string, name: string) => LambdaFunction | undefined;
