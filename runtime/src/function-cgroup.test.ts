// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect, beforeEach, afterEach } from "@jest/globals";
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { commandInCgroup, functionCgroupFromEnv } from "./function-cgroup.js";
import { NODE_BOOTSTRAP_SCRIPT } from "./worker-files.js";

const run = promisify(execFile);

describe("the function's memory cgroup, as the emulator sees it", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "esb-function-cgroup-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("is found from ESB_FUNCTION_CGROUP only when its cgroup.procs exists, with v1 file names", () => {
    expect(functionCgroupFromEnv({})).toBeUndefined();
    expect(functionCgroupFromEnv({ ESB_FUNCTION_CGROUP: dir })).toBeUndefined();
    for (const f of ["cgroup.procs", "memory.max_usage_in_bytes", "memory.oom_control"])
      writeFileSync(join(dir, f), "");
    expect(functionCgroupFromEnv({ ESB_FUNCTION_CGROUP: dir })).toEqual({
      dir,
      procsFile: join(dir, "cgroup.procs"),
      peakFile: join(dir, "memory.max_usage_in_bytes"),
      oomFile: join(dir, "memory.oom_control"),
    });
  });

  it("starts the command after writing its own pid to cgroup.procs, and refuses to start without it", async () => {
    writeFileSync(join(dir, "cgroup.procs"), "");
    const cgroup = functionCgroupFromEnv({ ESB_FUNCTION_CGROUP: dir })!;
    // The exec'd command prints its pid: the one written before the exec.
    const argv = commandInCgroup(cgroup, ["/bin/sh", "-c", "echo $$"]);
    const { stdout } = await run(argv[0], argv.slice(1));
    expect(readFileSync(cgroup.procsFile, "utf8").trim()).toBe(stdout.trim());
    // Unwritable even for root (tests run as root): a directory where the file should be.
    rmSync(cgroup.procsFile);
    mkdirSync(cgroup.procsFile);
    const missing = commandInCgroup(cgroup, ["/bin/echo", "ran"]);
    const err = (await run(missing[0], missing.slice(1)).catch((e: unknown) => e)) as {
      code: number;
      stdout: string;
      stderr: string;
    };
    expect(err.code).toBe(126);
    expect(err.stdout).toBe("");
    expect(err.stderr).toMatch(/cannot join the function memory cgroup/);
  });
});

describe("the Node bootstrap", () => {
  /** The script with `node` replaced by `echo`: what it would run. */
  async function nodeArgs(env: Record<string, string>): Promise<string> {
    const script = NODE_BOOTSTRAP_SCRIPT.replace("exec /var/lang/bin/node", "exec echo");
    const { stdout } = await run("/bin/sh", ["-c", script, "bootstrap", "index.handler"], {
      env: { PATH: "/usr/bin:/bin", ...env },
    });
    return stdout.trim();
  }

  it("sizes V8's heap from memorySize as AWS does, unless NODE_OPTIONS does", async () => {
    expect(await nodeArgs({ AWS_LAMBDA_FUNCTION_MEMORY_SIZE: "128" })).toBe(
      "--max-semi-space-size=6 --max-old-space-size=116 /var/runtime/esb/node-client-main.js index.handler",
    );
    expect(await nodeArgs({ AWS_LAMBDA_FUNCTION_MEMORY_SIZE: "1024" })).toMatch(
      /^--max-semi-space-size=51 --max-old-space-size=922 /,
    );
    expect(
      await nodeArgs({ AWS_LAMBDA_FUNCTION_MEMORY_SIZE: "128", NODE_OPTIONS: "--max-old-space-size=50" }),
    ).toBe("/var/runtime/esb/node-client-main.js index.handler");
    expect(await nodeArgs({ AWS_LAMBDA_FUNCTION_MEMORY_SIZE: "lots" })).toBe(
      "/var/runtime/esb/node-client-main.js index.handler",
    );
  });
});
