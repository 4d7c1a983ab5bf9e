// Entry point of a worker container: `node /var/runtime/esb/emulator-main.js [bootstrap command...]`,
// started by the launcher of runtime-only-env.ts.
// Configuration comes from the environment (see emulatorOptionsFromEnv); SIGTERM/SIGINT stop
// the runtime process group and exit 0.
import { Emulator, emulatorOptionsFromEnv } from "./emulator.js";

const emulator = new Emulator(emulatorOptionsFromEnv(process.env, process.argv.slice(2)));
emulator.start().then(
  (addr) => {
    process.stdout.write(
      `esb emulator: invoke on ${addr.invoke.host}:${addr.invoke.port}, runtime API on ${addr.runtimeApi.host}:${addr.runtimeApi.port}\n`,
    );
  },
  (err: unknown) => {
    process.stderr.write(
      `esb emulator failed to start: ${err instanceof Error ? err.message : String(err)}\n`,
    );
    process.exit(1);
  },
);
const stop = (): void => {
  void emulator.close().finally(() => process.exit(0));
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
