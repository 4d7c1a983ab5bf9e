/** Errors of worker pools and the node agent; the AgentService maps each to one gRPC status code. */

/** The function is at its concurrency limit and no worker freed up in time. Maps to RESOURCE_EXHAUSTED (429). */
export class ConcurrencyLimitError extends Error {
  override name = "ConcurrencyLimitError";
}

/** The worker or function is not known here (never existed, removed, or destroyed). Maps to NOT_FOUND. */
export class WorkerNotFoundError extends Error {
  override name = "WorkerNotFoundError";
}

/** A release or heartbeat names a lease the agent no longer honours. Maps to FAILED_PRECONDITION. */
export class LeaseMismatchError extends Error {
  override name = "LeaseMismatchError";
}

/** The pool is being destroyed or closed and hands out no workers. Maps to NOT_FOUND. */
export class PoolClosedError extends Error {
  override name = "PoolClosedError";
}

/** The function was never prepared on this node (or was destroyed). Maps to NOT_FOUND. */
export class FunctionNotFoundError extends Error {
  override name = "FunctionNotFoundError";
}

/** A function spec the agent cannot run (missing fields, reserved variables, bad code paths). Maps to INVALID_ARGUMENT. */
export class InvalidFunctionSpecError extends Error {
  override name = "InvalidFunctionSpecError";
}

/** The acquirer cancelled (or its deadline passed) before a worker was handed to it; nothing was handed out. Maps to CANCELLED. */
export class AcquireCancelledError extends Error {
  override name = "AcquireCancelledError";
}
