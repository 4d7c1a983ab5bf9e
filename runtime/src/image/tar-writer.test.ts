// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { execFileSync } from "node:child_process";
import { createWriteStream } from "node:fs";
import { lstat, mkdir, mkdtemp, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { LayerBuilder } from "./layer-builder.js";
import { tarStream, type TarEntry } from "./tar-writer.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "esb-tar-test-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function writeTar(name: string, entries: TarEntry[]): Promise<string> {
  const path = join(dir, name);
  await pipeline(tarStream(entries), createWriteStream(path));
  return path;
}

const longDir = `${"deep/".repeat(25)}end`; // 128 chars: needs the ustar prefix field
const longName = `${"n".repeat(120)}.txt`; // one component over 100 chars: needs a pax header
const unicodeName = "données/été.txt";
const longTarget = `/${"t".repeat(130)}`;

async function sampleEntries(): Promise<TarEntry[]> {
  const host = join(dir, "host-file.bin");
  await writeFile(host, Buffer.alloc(1500, 7));
  return new LayerBuilder()
    .addDirectory("/tmp", { mode: 0o1777 })
    .addFile("/etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    .addFile("/bin/run", "#!/bin/sh\necho hi\n", { mode: 0o755, uid: 993, gid: 990 })
    .addHostFile("/data/host.bin", host, { mode: 0o600 })
    .addFile(`/${longDir}/file.txt`, "prefix\n")
    .addFile(`/x/${longName}`, "pax\n")
    .addFile(`/${unicodeName}`, "unicode\n")
    .addSymlink("/bin/sh", "busybox")
    .addSymlink("/long-link", longTarget)
    .entries();
}

describe("tarStream", () => {
  it("writes archives that the system tar lists and extracts with names, modes, owners, links and contents intact", async () => {
    const tar = await writeTar("sample.tar", await sampleEntries());
    const listed = execFileSync("tar", ["-tf", tar], { encoding: "utf8" }).trim().split("\n");
    expect(listed).toEqual(
      expect.arrayContaining([
        "tmp/",
        "etc/passwd",
        "bin/run",
        "bin/sh",
        "data/host.bin",
        `${longDir}/file.txt`,
        `x/${longName}`,
        unicodeName,
        "long-link",
      ]),
    );
    // Parents come before children.
    expect(listed.indexOf("etc/")).toBeLessThan(listed.indexOf("etc/passwd"));
    const verbose = execFileSync("tar", ["--numeric-owner", "-tvf", tar], { encoding: "utf8" });
    expect(verbose).toMatch(/drwxrwxrwt 0\/0 +0 1970-01-01 00:00 tmp\//);
    expect(verbose).toMatch(/-rwxr-xr-x 993\/990 +18 1970-01-01 00:00 bin\/run/);

    const out = join(dir, "extracted");
    await mkdir(out);
    execFileSync("tar", ["-xpf", tar, "-C", out, "--same-owner"]);
    expect(await readFile(join(out, "etc/passwd"), "utf8")).toBe("root:x:0:0::/root:/bin/sh\n");
    expect(await readFile(join(out, "data/host.bin"))).toEqual(Buffer.alloc(1500, 7));
    expect(await readFile(join(out, longDir, "file.txt"), "utf8")).toBe("prefix\n");
    expect(await readFile(join(out, "x", longName), "utf8")).toBe("pax\n");
    expect(await readFile(join(out, unicodeName), "utf8")).toBe("unicode\n");
    expect(await readlink(join(out, "bin/sh"))).toBe("busybox");
    expect(await readlink(join(out, "long-link"))).toBe(longTarget);
    expect((await lstat(join(out, "data/host.bin"))).mode & 0o7777).toBe(0o600);
    expect((await lstat(join(out, "tmp"))).mode & 0o7777).toBe(0o1777);
    const run = await lstat(join(out, "bin/run"));
    expect([run.mode & 0o7777, run.uid, run.gid]).toEqual([0o755, 993, 990]);
  });

  it("is byte-for-byte reproducible", async () => {
    const a = await readFile(await writeTar("a.tar", await sampleEntries()));
    const b = await readFile(await writeTar("b.tar", await sampleEntries()));
    expect(a.equals(b)).toBe(true);
    expect(a.length % 512).toBe(0);
  });

  it("rejects absolute paths, ambiguous file sources and files that changed size", async () => {
    await expect(
      writeTar("bad1.tar", [{ type: "file", path: "/abs", mode: 0o644, content: Buffer.from("x") }]),
    ).rejects.toThrow('tar entry path must be relative and non-empty: "/abs"');
    await expect(writeTar("bad2.tar", [{ type: "file", path: "f", mode: 0o644 }])).rejects.toThrow(
      "give exactly one of content or sourcePath",
    );
    const host = join(dir, "grows.txt");
    await writeFile(host, "0123456789");
    await expect(
      writeTar("bad3.tar", [{ type: "file", path: "f", mode: 0o644, sourcePath: host, size: 4 }]),
    ).rejects.toThrow("grew while it was being archived");
  });
});

describe("LayerBuilder", () => {
  it("adds parents, sorts entries, lets later additions win and normalises host tree modes", async () => {
    const tree = join(dir, "tree");
    await mkdir(join(tree, "lib"), { recursive: true });
    await writeFile(join(tree, "index.js"), "x", { mode: 0o600 });
    await writeFile(join(tree, "lib", "tool"), "y", { mode: 0o700 });
    const layer = await new LayerBuilder()
      .addFile("/var/task/index.js", "old")
      .addHostTree("/var/task", tree);
    const entries = layer.entries();
    expect(entries.map((e) => e.path)).toEqual([
      "var",
      "var/task",
      "var/task/index.js",
      "var/task/lib",
      "var/task/lib/tool",
    ]);
    const modes = Object.fromEntries(entries.map((e) => [e.path, e.type === "symlink" ? 0 : e.mode]));
    expect(modes).toEqual({
      var: 0o755,
      "var/task": 0o755,
      "var/task/index.js": 0o644,
      "var/task/lib": 0o755,
      "var/task/lib/tool": 0o755,
    });
    expect(entries[2]).toMatchObject({ type: "file", sourcePath: join(tree, "index.js") });
    expect(() => new LayerBuilder().addFile("/var/../etc/x", "")).toThrow('".." is not allowed');
  });
});
