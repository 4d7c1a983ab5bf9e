/**
 * Files (relative to runtime/dist) that run inside a worker and must be copied into
 * `/var/runtime/esb/` of a runtime image. They use only Node built-ins and import only each
 * other. They are ES modules: the directory needs a package.json with `{"type":"module"}`.
 * The emulator starts as `node /var/runtime/esb/emulator-main.js [bootstrap command...]`;
 * `/var/runtime/bootstrap` of nodejs runtimes runs `node /var/runtime/esb/node-client-main.js`.
 */
export const WORKER_FILES: string[] = [
  "emulator.js",
  "emulator-main.js",
  "node-client.js",
  "node-client-main.js",
];

/** Content of `/var/runtime/esb/package.json` in a runtime image (marks the worker files as ES modules). */
export const WORKER_PACKAGE_JSON = '{"type":"module"}\n';

/** Command line that starts the emulator in a runtime image (the container's entrypoint). */
export const EMULATOR_COMMAND: string[] = ["/var/lang/bin/node", "/var/runtime/esb/emulator-main.js"];

/** Content of `/var/runtime/bootstrap` for nodejs runtimes (an executable shell script, mode 0755). */
export const NODE_BOOTSTRAP_SCRIPT =
  '#!/bin/sh\nexec /var/lang/bin/node /var/runtime/esb/node-client-main.js "$@"\n';
