// @esb-test unit: needs no test environment (`make test-unit` runs it).
// The runtime image carries WORKER_FILES only: every module they import must be among them
// (a missing one stops every worker at start with ERR_MODULE_NOT_FOUND).
import { readFileSync } from "node:fs";
import { describe, it, expect } from "@jest/globals";
import { WORKER_FILES } from "./worker-files.js";

describe("WORKER_FILES", () => {
  it("holds every module its files import (relative imports of the built files)", () => {
    const missing: string[] = [];
    for (const file of WORKER_FILES) {
      const text = readFileSync(new URL(`./${file}`, import.meta.url), "utf8");
      for (const m of text.matchAll(/(?:from|import)\s*\(?\s*["']\.\/([^"']+)["']/g)) {
        if (!WORKER_FILES.includes(m[1])) missing.push(`${file} imports ./${m[1]}`);
      }
    }
    expect(missing).toEqual([]);
  });
});
