/**
 * Files (relative to runtime/dist) that run inside a worker and must be copied into
 * `/var/runtime/esb/` of a runtime image. They use only Node built-ins and import only each
 * other. They are ES modules: the directory needs a package.json with `{"type":"module"}`.
 * The emulator starts as `/var/runtime/esb/start-emulator [bootstrap command...]` (a shell launcher
 * that execs `node /var/runtime/esb/emulator-main.js`, see runtime-only-env.ts);
 * `/var/runtime/bootstrap` of nodejs runtimes runs `node /var/runtime/esb/node-client-main.js`.
 */
export const WORKER_FILES: string[] = [
  "emulator.js",
  "emulator-main.js",
  "function-cgroup.js",
  "init-status.js",
  "payload-gc.js",
  "runtime-only-env.js",
  "sandbox-standby.js",
  "node-client.js",
  "node-client-main.js",
];

/** Content of `/var/runtime/esb/package.json` in a runtime image (marks the worker files as ES modules). */
export const WORKER_PACKAGE_JSON = '{"type":"module"}\n';

/** Where the emulator's launcher lives in a runtime image (written by the image builder from emulatorLauncherScript). */
export const EMULATOR_LAUNCHER_PATH = "/var/runtime/esb/start-emulator";

/** Node binary and main module the launcher execs. */
export const EMULATOR_NODE_COMMAND: [string, string] = [
  "/var/lang/bin/node",
  "/var/runtime/esb/emulator-main.js",
];

/**
 * Command line that starts the emulator in a runtime image (the container's entrypoint): the
 * launcher, so the function's NODE_OPTIONS and friends reach its runtime but not the emulator.
 */
export const EMULATOR_COMMAND: string[] = [EMULATOR_LAUNCHER_PATH];

/** Content of `/var/runtime/bootstrap` for nodejs runtimes (an executable shell script, mode 0755). */
export const NODE_BOOTSTRAP_SCRIPT = `#!/bin/sh
# V8 sizes its heap from the function's memory, as AWS's bootstrap does (new space a tenth,
# old space the rest), unless NODE_OPTIONS sizes it: the function's memory cgroup is not the
# one Node finds from inside the worker, so it would size the heap from the node's memory.
heap=""
case "$NODE_OPTIONS" in
  *max-old-space-size*|*max_old_space_size*) ;;
  *) case "$AWS_LAMBDA_FUNCTION_MEMORY_SIZE" in
       ""|*[!0-9]*) ;;
       *) new_space=$((AWS_LAMBDA_FUNCTION_MEMORY_SIZE / 10))
          heap="--max-semi-space-size=$((new_space / 2)) --max-old-space-size=$((AWS_LAMBDA_FUNCTION_MEMORY_SIZE - new_space))" ;;
     esac ;;
esac
exec /var/lang/bin/node $heap /var/runtime/esb/node-client-main.js "$@"
`;
