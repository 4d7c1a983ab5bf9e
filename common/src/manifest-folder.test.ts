// @esb-test unit: needs no test environment (`make test-unit` runs it).
// The one reader of manifest folders (esb up's controller and gateway agree on what a folder holds).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, expect, afterAll } from "@jest/globals";
import { readManifestFolder } from "./manifest-folder.js";

const dir = mkdtempSync(join(tmpdir(), "esb-manifests-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const fn = (name: string, extra = "") =>
  `apiVersion: esb.dev/v1alpha1\nkind: LambdaFunction\nmetadata:\n  name: ${name}\n${extra}spec:\n  runtime: provided\n  code:\n    path: ./${name}\n`;

describe("readManifestFolder", () => {
  it("reads valid functions, keeps the first of two definitions, and says what is wrong with the rest", async () => {
    writeFileSync(join(dir, "a.yaml"), fn("one") + "---\n" + fn("two", "  namespace: tools\n"));
    writeFileSync(join(dir, "b.yml"), fn("one"));
    writeFileSync(
      join(dir, "c.json"),
      JSON.stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "x" } }),
    );
    writeFileSync(join(dir, "d.yaml"), "not: [valid\n");
    writeFileSync(join(dir, "e.yaml"), fn("refused"));
    writeFileSync(join(dir, "notes.txt"), "ignored");
    const scan = await readManifestFolder(dir, "default", (f) =>
      f.metadata.name === "refused" ? "code is outside the folder" : undefined,
    );
    expect(scan.folderRead).toBe(true);
    expect(scan.functions.map((m) => [m.file, `${m.fn.metadata.namespace}/${m.fn.metadata.name}`])).toEqual([
      ["a.yaml", "default/one"],
      ["a.yaml", "tools/two"],
    ]);
    // A relative code.path is the manifest folder's.
    expect(scan.functions[0].fn.spec.code?.path).toBe(join(dir, "one"));
    expect(scan.invalid.get("b.yml")).toEqual([
      "b.yml: LambdaFunction default/one is already defined in a.yaml; ignored",
    ]);
    expect(scan.invalid.get("c.json")).toContain('c.json: kind must be LambdaFunction (got "ConfigMap")');
    expect(scan.invalid.get("d.yaml")?.join()).toMatch(/^d\.yaml: invalid YAML/);
    expect(scan.invalid.get("e.yaml")).toEqual(["e.yaml: code is outside the folder"]);
    expect([...scan.invalid.keys()].sort()).toEqual(["b.yml", "c.json", "d.yaml", "e.yaml"]);
  });

  it("reports a folder it cannot read instead of throwing", async () => {
    const scan = await readManifestFolder(join(dir, "missing"), "default");
    expect(scan).toMatchObject({ folderRead: false, functions: [] });
    expect(scan.folderError).toMatch(/ENOENT/);
  });
});
