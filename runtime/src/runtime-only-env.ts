// Environment variables that change how a Node (or any dynamically linked) process starts belong
// to the function's runtime process, not to the emulator. The emulator is itself a Node process:
// a function's `NODE_OPTIONS=--require=/nonexistent.js` would kill it before it listens, and
// `NODE_COMPILE_CACHE` / `NODE_V8_COVERAGE` pointing at an unwritable place make Node 24 hang at
// start. So the container starts a tiny shell launcher that parks these variables under a prefix
// before it execs the emulator, and the emulator puts them back for the runtime it spawns; a
// broken value then fails the function's init, which is reported in Lambda's terms.

/** Names the launcher moves away from the emulator: Node's own (`NODE_*`), libuv's (`UV_*`), the dynamic loader's (`LD_*`) and OpenSSL's (`OPENSSL_*`). */
export const RUNTIME_ONLY_ENV_NAME = /^(NODE|UV|LD|OPENSSL)_[A-Za-z0-9_]*$/;

/** Prefix under which the launcher parks a runtime-only variable while the emulator runs. */
export const PARKED_ENV_PREFIX = "ESB_RUNTIME_ENV_";

/**
 * The launcher script (POSIX sh; busybox ash in runtime images) that parks every variable named by
 * {@link RUNTIME_ONLY_ENV_NAME} as `ESB_RUNTIME_ENV_<name>`, unsets it, and execs
 * `node emulatorMain "$@"`. Only shell built-ins are used, so a function's PATH cannot change it.
 */
export function emulatorLauncherScript(nodePath: string, emulatorMain: string): string {
  return `#!/bin/sh
# ESB: start the Runtime Interface Emulator without the function's Node/loader start-up
# variables (they are handed back to the function's runtime process by the emulator).
for esb_name in $(export -p | while IFS= read -r esb_line; do
  case "$esb_line" in
    "export NODE_"*|"export UV_"*|"export LD_"*|"export OPENSSL_"*)
      esb_n=\${esb_line#export }; echo "\${esb_n%%=*}" ;;
  esac
done); do
  case "$esb_name" in *[!A-Za-z0-9_]*) continue ;; esac
  eval "esb_set=\\\${$esb_name+x}"
  [ -n "$esb_set" ] || continue
  eval "export ${PARKED_ENV_PREFIX}$esb_name=\\"\\$$esb_name\\""
  unset "$esb_name"
done
unset esb_name esb_set
exec ${shellQuote(nodePath)} ${shellQuote(emulatorMain)} "$@"
`;
}

/**
 * The runtime process's view of `env`: every parked `ESB_RUNTIME_ENV_<name>` becomes `<name>`
 * again (a parked value wins over one of the same name, which only the emulator's own start could
 * have set) and the parked names disappear. `env` is not modified.
 */
export function restoreRuntimeOnlyEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  const parked: [string, string | undefined][] = [];
  for (const [k, v] of Object.entries(env)) {
    if (k.startsWith(PARKED_ENV_PREFIX)) parked.push([k.slice(PARKED_ENV_PREFIX.length), v]);
    else out[k] = v;
  }
  for (const [k, v] of parked) if (RUNTIME_ONLY_ENV_NAME.test(k)) out[k] = v;
  return out;
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}
