// Starts and stops the real test environment (containerd 1.6 and 2.x, registry,
// etcd + kube-apiserver, podman) through hack/dev-env.sh, or reuses one that is already
// running. Used by the jest global setup/teardown, which run in jest's main
// process before the workers start, so the variables copied into process.env
// here are inherited by every test worker.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** Repository root (this file is test/dist/env/test-environment.js once compiled). */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const devEnvScript = join(repoRoot, "hack", "dev-env.sh");
/** Set while this process owns (started) the environment in that folder. */
const ownedVariable = "ESB_TEST_ENV_OWNED_DIR";
const defaultComponents = "containerd,containerd2,registry,kube,podman";

// Plain stderr lines rather than pino JSON: this is what a person running
// `make test` reads to find the environment.
function say(message: string): void {
  process.stderr.write(`[esb-test] ${message}\n`);
}

function runDevEnv(args: string[]): Promise<void> {
  return new Promise((done, fail) => {
    // stdout repeats env.sh; its log lines on stderr are worth showing.
    const child = spawn(devEnvScript, args, { stdio: ["ignore", "ignore", "inherit"] });
    child.on("error", fail);
    child.on("exit", (code, signal) =>
      code === 0
        ? done()
        : fail(
            new Error(
              `hack/dev-env.sh ${args.join(" ")} failed (${signal ?? `exit code ${code}`}); see its log above`,
            ),
          ),
    );
  });
}

function loadEnvJson(dir: string): Record<string, string> {
  const values = JSON.parse(readFileSync(join(dir, "env.json"), "utf8")) as Record<string, string>;
  Object.assign(process.env, values);
  return values;
}

function listValues(values: Record<string, string>): string {
  return Object.entries(values)
    .map(([k, v]) => `  ${k}=${v}`)
    .join("\n");
}

// If jest dies without running the teardown, still stop what we started.
function stopSync(dir: string): void {
  if (process.env[ownedVariable] !== dir) return;
  delete process.env[ownedVariable];
  spawnSync(devEnvScript, ["down", "--dir", dir], { stdio: "ignore" });
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Makes the test environment available in process.env (ESB_TEST_*):
 * - ESB_DEV_ENV_DIR names a folder with env.json → reuse that environment (never stopped here);
 * - ESB_TEST_ENV=none → nothing (tests needing a component then fail with a clear error);
 * - otherwise start `hack/dev-env.sh up` in a new temp folder with the components in
 *   ESB_TEST_ENV_ONLY (default containerd,containerd2,registry,kube,podman); {@link stopTestEnvironment} stops it.
 */
export async function startTestEnvironment(): Promise<void> {
  const reuse = process.env.ESB_DEV_ENV_DIR;
  if (reuse) {
    if (existsSync(join(reuse, "env.json"))) {
      const values = loadEnvJson(reuse);
      say(`reusing the test environment in ${reuse} (left running):\n${listValues(values)}`);
      return;
    }
    say(`ESB_DEV_ENV_DIR=${reuse} has no env.json; starting a new environment instead`);
  }
  if (process.env.ESB_TEST_ENV === "none") {
    say("ESB_TEST_ENV=none: no test environment started");
    return;
  }
  const only = process.env.ESB_TEST_ENV_ONLY || defaultComponents;
  const dir = mkdtempSync(join(tmpdir(), "esb-test-env-"));
  say(`starting the test environment (${only}) in ${dir}`);
  try {
    await runDevEnv(["up", "--dir", dir, "--only", only]);
  } catch (error) {
    // dev-env.sh cleans up after its own failures, but not if it died part-way.
    await runDevEnv(["down", "--dir", dir]).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  process.env[ownedVariable] = dir;
  process.once("exit", () => stopSync(dir));
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      stopSync(dir);
      process.exit(130);
    });
  }
  const values = loadEnvJson(dir);
  say(`test environment up (source ${join(dir, "env.sh")} to use it by hand):\n${listValues(values)}`);
}

/** Stops and removes the environment that {@link startTestEnvironment} started; a reused one is left alone. */
export async function stopTestEnvironment(): Promise<void> {
  const dir = process.env[ownedVariable];
  if (!dir) return;
  say(`stopping the test environment in ${dir}`);
  await runDevEnv(["down", "--dir", dir]);
  delete process.env[ownedVariable];
  rmSync(dir, { recursive: true, force: true });
}
