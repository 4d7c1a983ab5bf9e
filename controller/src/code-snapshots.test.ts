// @esb-test unit: needs no test environment (`make test-unit` runs it).
// code.path snapshots on a real file system: the folder source watches code.path, an edit becomes
// a new generation whose code.path is a snapshot of the new content (so a new revision), and
// snapshots nobody uses are removed after their grace period.
import { describe, it, expect, afterEach } from "@jest/globals";
import { mkdir, mkdtemp, readFile, readdir, readlink, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger, functionRevision, type LambdaFunction } from "@esb/common";
import { CodeSnapshots, contentHash } from "./code-snapshots.js";
import { FolderFunctionSource } from "./folder-function-source.js";

const logger = createLogger("code-snapshots-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "esb-code-snap-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function eventually<T>(what: string, fn: () => T | undefined | false, timeoutMs = 5_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const manifest = `apiVersion: esb.dev/v1alpha1
kind: LambdaFunction
metadata:
  name: hello
spec:
  runtime: nodejs24.x
  handler: index.handler
  code:
    path: ./hello
`;

describe("CodeSnapshots", () => {
  it("copies a folder once per content, links as links, and prunes unused copies after the grace", async () => {
    const dir = await tempDir();
    const code = join(dir, "code");
    await mkdir(join(code, "lib"), { recursive: true });
    await writeFile(join(code, "index.mjs"), "v1");
    await writeFile(join(code, "lib", "a.js"), "a");
    await symlink("/etc/passwd", join(code, "link"));
    const snaps = new CodeSnapshots(join(dir, "snaps"));
    const first = await snaps.snapshot(code);
    expect(first).toBe(join(dir, "snaps", await contentHash(code)));
    expect(await readFile(join(first, "lib", "a.js"), "utf8")).toBe("a");
    expect(await readlink(join(first, "link"))).toBe("/etc/passwd");
    expect(await snaps.snapshot(code)).toBe(first);

    await writeFile(join(code, "index.mjs"), "v2");
    const second = await snaps.snapshot(code);
    expect(second).not.toBe(first);
    expect(await readFile(join(first, "index.mjs"), "utf8")).toBe("v1"); // the old revision keeps its code
    expect(await readFile(join(second, "index.mjs"), "utf8")).toBe("v2");

    const t = Date.now();
    expect(await snaps.prune(new Set([second]), 1000, t)).toEqual([]);
    expect(await snaps.prune(new Set([second]), 1000, t + 999)).toEqual([]);
    expect(await snaps.prune(new Set([second]), 1000, t + 1000)).toEqual([first]);
    await expect(stat(first)).rejects.toThrow();
    expect(await readdir(join(dir, "snaps"))).toEqual([second.slice(join(dir, "snaps").length + 1)]);
  });
});

describe("FolderFunctionSource with code snapshots", () => {
  it("turns an edit under code.path into a new generation and revision within a moment", async () => {
    const dir = await tempDir();
    await mkdir(join(dir, "fns", "hello"), { recursive: true });
    await writeFile(join(dir, "fns", "hello", "index.mjs"), "export const handler = async () => 1;");
    await writeFile(join(dir, "fns", "hello.yaml"), manifest);
    const changes: { fn: LambdaFunction; revision: string }[] = [];
    const enqueued: string[] = [];
    const source = new FolderFunctionSource(join(dir, "fns"), {
      logger,
      pollMs: 60_000, // only the watchers may notice the edit
      codeSnapshotDir: join(dir, "snaps"),
      snapshotGraceMs: 0,
      onCodeChange: (fn, revision) => changes.push({ fn, revision }),
    });
    await source.start((k) => enqueued.push(k));
    cleanups.push(() => source.stop());
    const v1 = source.get("default/hello")!;
    expect(v1.metadata.generation).toBe(1);
    expect(v1.spec.code?.path).toMatch(new RegExp(`^${join(dir, "snaps")}/[0-9a-f]{32}$`));
    expect(await readFile(join(v1.spec.code!.path!, "index.mjs"), "utf8")).toContain("=> 1");

    // A rescan with nothing changed is not a change.
    enqueued.length = 0;
    await source.rescan();
    expect(enqueued).toEqual([]);

    await writeFile(join(dir, "fns", "hello", "index.mjs"), "export const handler = async () => 2;");
    await eventually("the code change", () => changes.length > 0);
    const v2 = source.get("default/hello")!;
    expect(v2.metadata.generation).toBe(2);
    expect(v2.spec.code?.path).not.toBe(v1.spec.code?.path);
    expect(await readFile(join(v2.spec.code!.path!, "index.mjs"), "utf8")).toContain("=> 2");
    expect(changes[0].revision).toBe(functionRevision(v2.spec, { hostPath: v2.spec.code!.path! }));
    expect(changes[0].revision).not.toBe(functionRevision(v1.spec, { hostPath: v1.spec.code!.path! }));
    expect(enqueued).toContain("default/hello");
    // With no grace, the first snapshot goes as soon as nothing uses it.
    await source.rescan();
    await expect(stat(v1.spec.code!.path!)).rejects.toThrow();
    await stat(v2.spec.code!.path!);
  });
});
