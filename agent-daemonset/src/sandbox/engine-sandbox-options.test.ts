// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect } from "@jest/globals";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type Docker from "dockerode";
import { engineSandboxOptions } from "./engine-sandbox-options.js";
import { workerSeccompProfile } from "./seccomp-profile.js";

/** Only the version call is used: the engine's name is what the options depend on. */
const engine = (name: string) =>
  ({ version: async () => ({ Components: [{ Name: name, Version: "1" }] }) }) as unknown as Docker;

describe("engineSandboxOptions", () => {
  it("gives a Docker engine the profile JSON itself", async () => {
    const opts = await engineSandboxOptions(engine("Engine"));
    expect(opts.seccompOpt).toBe(`seccomp=${JSON.stringify(workerSeccompProfile())}`);
    await opts.dispose();
  });

  it("gives Podman a profile file in a private folder, removed on dispose", async () => {
    const dir = mkdtempSync(join(tmpdir(), "esb-sandbox-test-"));
    try {
      const opts = await engineSandboxOptions(engine("Podman Engine"), dir);
      const file = opts.seccompOpt.replace(/^seccomp=/, "");
      expect(file.startsWith(dir)).toBe(true);
      expect(JSON.parse(readFileSync(file, "utf8"))).toEqual(workerSeccompProfile());
      await opts.dispose();
      expect(existsSync(file)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
