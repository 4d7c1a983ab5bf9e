// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { collectProductionPackages } from "./component-image-builder.js";

let repo: string;

async function pkg(dir: string, json: object): Promise<void> {
  await mkdir(join(repo, dir), { recursive: true });
  await writeFile(join(repo, dir, "package.json"), JSON.stringify(json));
}

beforeAll(async () => {
  repo = await mkdtemp(join(tmpdir(), "esb-component-deps-"));
  await pkg(".", { name: "root", workspaces: ["lib", "app", "other"] });
  await pkg("lib", { name: "@x/lib", version: "1.0.0", dependencies: { a: "^1" } });
  await pkg("app", {
    name: "@x/app",
    version: "1.0.0",
    dependencies: { "@x/lib": "1.0.0", b: "^2", "@s/c": "^1" },
    devDependencies: { dev: "^1" },
    optionalDependencies: { gone: "^1" },
  });
  await pkg("other", { name: "@x/other", version: "1.0.0", dependencies: { unused: "^1" } });
  // npm's workspace links.
  for (const [name, target] of [
    ["@x/lib", "../../lib"],
    ["@x/app", "../../app"],
    ["@x/other", "../../other"],
  ]) {
    await mkdir(dirname(join(repo, "node_modules", name)), { recursive: true });
    await symlink(target, join(repo, "node_modules", name));
  }
  await pkg("node_modules/a", { name: "a", version: "1.0.0", dependencies: { d: "^1" } });
  await pkg("node_modules/d", { name: "d", version: "1.0.0" });
  // b needs d@2, nested under b (npm's layout for a version conflict).
  await pkg("node_modules/b", {
    name: "b",
    version: "2.0.0",
    dependencies: { d: "^2" },
    peerDependencies: { p: "*" },
  });
  await pkg("node_modules/b/node_modules/d", { name: "d", version: "2.0.0" });
  // Installed under the workspace only; b's peer p is installed nowhere.
  await pkg("app/node_modules/@s/c", { name: "@s/c", version: "1.0.0", dependencies: { a: "^1" } });
  await pkg("node_modules/dev", { name: "dev", version: "1.0.0" });
  await pkg("node_modules/unused", { name: "unused", version: "1.0.0" });
});

afterAll(async () => {
  await rm(repo, { recursive: true, force: true });
});

describe("collectProductionPackages", () => {
  it("follows dependencies like Node resolves them and skips devDependencies", async () => {
    const deps = await collectProductionPackages(repo, "app");
    expect(deps.workspaces).toEqual(["app", "lib"]);
    expect(deps.packages).toEqual([
      "app/node_modules/@s/c",
      "node_modules/a",
      "node_modules/b",
      "node_modules/b/node_modules/d",
      "node_modules/d",
    ]);
    expect(deps.links).toEqual([{ path: "node_modules/@x/lib", target: "../../lib" }]);
    expect(deps.absent.sort()).toEqual(["gone (of @x/app)", "p (of b)"]);
  });

  it("fails when a required dependency is not installed", async () => {
    await pkg("broken", { name: "broken", dependencies: { missing: "^1" } });
    await writeFile(
      join(repo, "package.json"),
      JSON.stringify({ workspaces: ["lib", "app", "other", "broken"] }),
    );
    await expect(collectProductionPackages(repo, "broken")).rejects.toThrow(
      /dependency missing is not installed/,
    );
  });

  it("rejects a directory that is not a workspace", async () => {
    await expect(collectProductionPackages(repo, "node_modules/a")).rejects.toThrow(/is not a workspace/);
  });
});
