// @esb-test unit: needs no test environment (`make test-unit` runs it).
// The emulator tells the agent how the runtime's init went (GET /esb/init), so that a
// provisioned worker whose function cannot load is reported instead of counted as warm.
import { describe, it, expect } from "@jest/globals";
import { INIT_STATUS_PATH } from "./init-status.js";
import { invoke, makeTaskDir, startEmulator } from "./emulator-test-kit.js";

async function initStatus(invokeUrl: string, waitMs: number): Promise<unknown> {
  const base = new URL(invokeUrl);
  const res = await fetch(`${base.origin}${INIT_STATUS_PATH}?waitMs=${waitMs}`);
  expect(res.status).toBe(200);
  return res.json();
}

describe("Emulator init status", () => {
  it("is ready once the runtime asked for work, before any invocation", async () => {
    const t = await startEmulator(makeTaskDir({ "index.mjs": "export const handler = async () => 1;" }), {
      _HANDLER: "index.handler",
    });
    try {
      expect(await initStatus(t.url, 10_000)).toEqual({ state: "ready" });
    } finally {
      await t.close();
    }
  });

  it("is the init error when the handler's module is missing, and invocations say the same", async () => {
    const t = await startEmulator(makeTaskDir({ "other.mjs": "" }), { _HANDLER: "index.handler" });
    try {
      expect(await initStatus(t.url, 10_000)).toEqual({
        state: "failed",
        errorType: "Runtime.ImportModuleError",
        errorMessage: expect.stringContaining("Cannot find module 'index'"),
      });
      const res = await invoke(t.url, {});
      expect(res.json).toMatchObject({ errorType: "Runtime.ImportModuleError" });
    } finally {
      await t.close();
    }
  });

  it("is an exit error when the runtime dies before asking for work", async () => {
    const t = await startEmulator(
      makeTaskDir({ "index.mjs": "export const handler = async () => 1;" }),
      { _HANDLER: "index.handler" },
      { command: [process.execPath, "-e", "process.exit(7)"] },
    );
    try {
      expect(await initStatus(t.url, 10_000)).toEqual({
        state: "failed",
        errorType: "Runtime.ExitError",
        errorMessage: expect.stringContaining("exit status 7"),
      });
    } finally {
      await t.close();
    }
  });

  it("stays pending (answered after the wait) while no runtime was started", async () => {
    const t = await startEmulator(
      makeTaskDir({ "index.mjs": "export const handler = async () => 1;" }),
      { _HANDLER: "index.handler" },
      { startRuntimeAtStart: false },
    );
    try {
      expect(await initStatus(t.url, 50)).toEqual({ state: "pending" });
    } finally {
      await t.close();
    }
  });
});
