// @esb-test unit: needs no test environment (`make test-unit` runs it).
// esb up's terminal: JSON log lines become lines people read, and every logger made after
// setLogDestination writes there (the components esb up starts in its process).
import { PassThrough } from "node:stream";
import { describe, it, expect } from "@jest/globals";
import { pino } from "pino";
import { createLogger, setLogDestination } from "@esb/common";
import { humanLogLine, TerminalLogStream } from "./terminal-log.js";

describe("esb up's terminal log", () => {
  it("turns a pino line into level, component, message and fields", () => {
    const line = JSON.stringify({
      level: 40,
      time: "2026-12-03T16:00:00.000Z",
      pid: 1,
      component: "gateway",
      agent: "http://127.0.0.1:1",
      err: { message: "connect ECONNREFUSED", stack: "…" },
      msg: "agent heartbeat failed",
    });
    expect(humanLogLine(line)).toBe(
      "esb up: warn gateway: agent heartbeat failed (agent=http://127.0.0.1:1, err=connect ECONNREFUSED)",
    );
    expect(humanLogLine("not json")).toBeUndefined();
    // What the message already says is not repeated.
    const invalid = JSON.stringify({
      level: 50,
      component: "controller",
      file: "/f/bad.yaml",
      errors: ["bad.yaml: spec.code is required"],
      msg: "invalid LambdaFunction manifest skipped: bad.yaml: spec.code is required",
    });
    expect(humanLogLine(invalid)).toBe(
      "esb up: error controller: invalid LambdaFunction manifest skipped: bad.yaml: spec.code is required (file=/f/bad.yaml)",
    );
  });

  it("writes only warnings and errors to the terminal, everything to the file, from loggers made afterwards", async () => {
    const terminal = new PassThrough();
    const file = new PassThrough();
    let shown = "";
    let kept = "";
    terminal.on("data", (d: Buffer) => (shown += d.toString()));
    file.on("data", (d: Buffer) => (kept += d.toString()));
    setLogDestination(
      pino.multistream([
        { level: "trace", stream: file },
        { level: "warn", stream: new TerminalLogStream(terminal) },
      ]),
    );
    try {
      const log = createLogger("controller", { level: "info" });
      log.info({ function: "default/hello" }, "function status");
      log.error({ function: "default/bad" }, "PrepareFunction failed");
      await new Promise((r) => setImmediate(r));
    } finally {
      setLogDestination(undefined);
    }
    expect(shown).toBe("esb up: error controller: PrepareFunction failed (function=default/bad)\n");
    const lines = kept
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { msg: string; level: number });
    expect(lines.map((l) => [l.level, l.msg])).toEqual([
      [30, "function status"],
      [50, "PrepareFunction failed"],
    ]);
  });
});
