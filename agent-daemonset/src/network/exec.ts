import { spawn } from "node:child_process";

/** Longest a network helper program (CNI plugin, iptables-restore, umount…) may run before it is killed. */
const PROGRAM_TIMEOUT_MS = 60_000;

/**
 * Runs `file` with `args` and `env`, writes `stdin` to it, and resolves with
 * its exit code (-1 when it exited by a signal or timeout) and output; rejects
 * only when it cannot be started (e.g. not installed).
 */
export function exec(
  file: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  stdin: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, stdio: ["pipe", "pipe", "pipe"], timeout: PROGRAM_TIMEOUT_MS });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.on("error", () => undefined);
    child.stdin.end(stdin);
  });
}

/** Runs a program with the agent's environment; throws with its stderr unless it exits 0. */
export async function run(file: string, args: string[]): Promise<void> {
  const { code, stderr } = await exec(file, args, process.env, "");
  if (code !== 0) throw new Error(`${file} ${args.join(" ")} failed (exit ${code}): ${stderr.trim()}`);
}
