// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect } from "@jest/globals";
import { createLogger } from "@esb/common";
import { GatewayMetrics } from "./gateway-metrics.js";
import {
  FUNCTION_ERROR_LABEL,
  InvocationRecorder,
  UNRESOLVED_FUNCTION_LABEL,
  type InvocationRecord,
} from "./invocation-recorder.js";

// Metric series stay bounded whatever callers and functions send: names that
// resolve to no function share one label value, error types a function chose
// share one, and the platform's own error types are kept.
describe("InvocationRecorder metric labels", () => {
  const base: InvocationRecord = {
    requestId: "r",
    function: "default/echo",
    type: "RequestResponse",
    status: "ok",
    startKind: "warm",
    durationMs: 1,
  };

  it("keeps resolved functions and platform error types, folds the rest", async () => {
    const metrics = new GatewayMetrics();
    const recorder = new InvocationRecorder(metrics, createLogger("test", { level: "silent" }));
    recorder.record(base);
    for (let i = 0; i < 50; i++) {
      recorder.record({
        ...base,
        function: `no-such-${i}`,
        status: "not_found",
        error: "ResourceNotFoundException",
      });
      recorder.record({ ...base, status: "function_error", error: `MyError${i}` });
      recorder.record({
        ...base,
        function: `x\n${i}`,
        status: "client_error",
        error: "InvalidParameterValueException",
      });
    }
    recorder.record({ ...base, status: "function_error", error: "Runtime.OutOfMemory" });
    const text = await metrics.registry.metrics();
    expect(text).not.toMatch(/no-such-|MyError|x\\n/);
    const errors = await metrics.errors.get();
    const labels = errors.values.map((v) => `${v.labels.function} ${v.labels.error}`).sort();
    expect(labels).toEqual([
      `${UNRESOLVED_FUNCTION_LABEL} InvalidParameterValueException`,
      `${UNRESOLVED_FUNCTION_LABEL} ResourceNotFoundException`,
      `default/echo ${FUNCTION_ERROR_LABEL}`,
      "default/echo Runtime.OutOfMemory",
    ]);
    expect(errors.values.find((v) => v.labels.error === FUNCTION_ERROR_LABEL)?.value).toBe(50);
  });
});
