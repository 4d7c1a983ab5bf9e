// Entry point of a worker container: `node /var/runtime/esb/emulator-main.js [bootstrap command...]`,
// started by the launcher of runtime-only-env.ts.
// Configuration comes from the environment (see emulatorOptionsFromEnv); SIGTERM/SIGINT stop
// the runtime process group and exit 0. In a generic sandbox (ESB_SANDBOX_CONTROL set, see
// sandbox-standby.ts) the emulator first waits for its function's environment, with the
// runtime client already booted when ESB_SANDBOX_PREBOOT names its bootstrap.
import { rmSync, writeFileSync } from "node:fs";
import { Emulator, emulatorOptionsFromEnv } from "./emulator.js";
import {
  preBootRuntime,
  SANDBOX_CONTROL_ENV,
  SANDBOX_PREBOOT_ENV,
  SANDBOX_READY_FILE,
  waitForSpecialisation,
  type PreBootedRuntime,
} from "./sandbox-standby.js";

let emulator: Emulator | undefined;
let preBooted: PreBootedRuntime | undefined;

async function main(): Promise<void> {
  const control = process.env[SANDBOX_CONTROL_ENV];
  let env: NodeJS.ProcessEnv = process.env;
  if (control) {
    const bootstrap = process.env[SANDBOX_PREBOOT_ENV];
    if (bootstrap) {
      preBooted = preBootRuntime(bootstrap, process.env);
      // The agent takes the sandbox as ready once it says it waits (SANDBOX_READY_FILE):
      // only then is the runtime booted too.
      await preBooted.booted;
    }
    const specialised = waitForSpecialisation(control);
    writeFileSync(SANDBOX_READY_FILE, "");
    env = (await specialised).env;
    rmSync(SANDBOX_READY_FILE, { force: true });
  }
  emulator = new Emulator({ ...emulatorOptionsFromEnv(env, process.argv.slice(2)), preBooted });
  const addr = await emulator.start();
  process.stdout.write(
    `esb emulator: invoke on ${addr.invoke.host}:${addr.invoke.port}, runtime API on ${addr.runtimeApi.host}:${addr.runtimeApi.port}\n`,
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`esb emulator failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
const stop = (): void => {
  if (!emulator) {
    if (preBooted?.child.pid) {
      try {
        process.kill(-preBooted.child.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    process.exit(0);
  }
  void emulator.close().finally(() => process.exit(0));
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
