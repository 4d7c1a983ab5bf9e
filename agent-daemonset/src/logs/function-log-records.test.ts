// @esb-test unit
// Which invocation a worker's line belongs to, as AWS attributes it (no store needed).
import { describe, it, expect } from "@jest/globals";
import { compareTimes } from "@esb/common/victoria-logs-query";
import { FunctionLogRecords } from "./function-log-records.js";

describe("FunctionLogRecords", () => {
  const known = new Map([["w1", "default/hello"]]);
  const records = () => new FunctionLogRecords({ node: "n1", functionOf: (id) => known.get(id) });

  it("gives lines between START and REPORT that invocation's request id and version, and none after", () => {
    const r = records();
    const out = [
      "START RequestId: req-1 Version: $LATEST",
      "a line of a custom runtime",
      "END RequestId: req-1",
      "REPORT RequestId: req-1\tDuration: 1.00 ms",
      "a line between invocations",
    ].map((line) => r.record({ id: "w1", stream: "stdout", line }));
    expect(out.map((x) => [x.requestId, x.version])).toEqual([
      ["req-1", "$LATEST"],
      ["req-1", "$LATEST"],
      ["req-1", "$LATEST"],
      ["req-1", "$LATEST"],
      [undefined, "$LATEST"],
    ]);
    expect(out[1]).toMatchObject({ function: "default/hello", node: "n1", worker: "w1", stream: "stdout" });
  });

  it("takes the request id and level from AWS's console prefix; 'undefined' (init) is none", () => {
    const r = records();
    const init = r.record({
      id: "w1",
      stream: "stdout",
      line: "2026-12-03T10:00:00.000Z\tundefined\tINFO\tloading",
    });
    expect(init.requestId).toBeUndefined();
    expect(init.level).toBe("INFO");
    r.record({ id: "w1", stream: "stdout", line: "START RequestId: req-2 Version: 3" });
    const err = r.record({
      id: "w1",
      stream: "stderr",
      line: "2026-12-03T10:00:00.100Z\treq-2\tERROR\tboom",
    });
    expect(err).toMatchObject({ requestId: "req-2", level: "ERROR", stream: "stderr", version: "3" });
  });

  it("keeps lines of different workers apart and their times strictly increasing", () => {
    const r = records();
    r.record({ id: "w1", stream: "stdout", line: "START RequestId: a Version: $LATEST" });
    const other = r.record({ id: "w2", stream: "stdout", line: "hello from w2" });
    expect(other.requestId).toBeUndefined();
    expect(other.function).toBe(""); // w2 is unknown to the agent (yet)
    known.set("w2", "default/other");
    expect(r.record({ id: "w2", stream: "stdout", line: "again" }).function).toBe("default/other");
    const times = Array.from({ length: 50 }, () => r.record({ id: "w1", stream: "stdout", line: "x" }).time);
    for (let i = 1; i < times.length; i++) expect(compareTimes(times[i - 1], times[i])).toBe(-1);
  });
});
