import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, expect } from "@jest/globals";
import { writeTar } from "./tar-writer.js";

describe("writeTar", () => {
  it("writes archives GNU tar extracts", () => {
    const dir = mkdtempSync(join(tmpdir(), "esb-tar-"));
    try {
      const tar = writeTar([
        { type: "dir", path: "d" },
        { type: "file", path: "d/f.sh", data: Buffer.from("#!/bin/sh\necho hi\n"), mode: 0o755 },
        { type: "symlink", path: "d/l", target: "f.sh" },
      ]);
      writeFileSync(join(dir, "a.tar"), tar);
      execFileSync("tar", ["-xf", "a.tar"], { cwd: dir });
      expect(readFileSync(join(dir, "d/f.sh"), "utf8")).toBe("#!/bin/sh\necho hi\n");
      expect(statSync(join(dir, "d/f.sh")).mode & 0o777).toBe(0o755);
      expect(readlinkSync(join(dir, "d/l"))).toBe("f.sh");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
