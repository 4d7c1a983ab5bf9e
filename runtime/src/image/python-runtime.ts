import { existsSync } from "node:fs";
import { lstat } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { LayerBuilder } from "./layer-builder.js";

/** Managed Python runtimes ESB builds images for (Debian's CPython; no reachable source has a Linux 3.12). */
export const PYTHON_RUNTIMES = ["python3.13", "python3.11"] as const;
/** One of {@link PYTHON_RUNTIMES}. */
export type PythonRuntime = (typeof PYTHON_RUNTIMES)[number];

/** True for the names in {@link PYTHON_RUNTIMES}. */
export function isPythonRuntime(runtime: string): runtime is PythonRuntime {
  return (PYTHON_RUNTIMES as readonly string[]).includes(runtime);
}

/**
 * Folder of the root file systems hack/build-python-runtime.sh builds
 * (`<dir>/<runtime>/rootfs`): `$ESB_PYTHON_RUNTIMES_DIR`, else
 * `$ESB_CACHE_DIR/python-runtimes`, else ~/.cache/esb/python-runtimes.
 */
export function pythonRuntimesDir(): string {
  return (
    process.env.ESB_PYTHON_RUNTIMES_DIR ??
    join(process.env.ESB_CACHE_DIR ?? join(homedir(), ".cache", "esb"), "python-runtimes")
  );
}

/** Where the Python bootstrap module lives in the image (next to the emulator's files). */
export const PYTHON_BOOTSTRAP_MODULE = "/var/runtime/esb/python_bootstrap.py";

/**
 * `/var/runtime/bootstrap` of a Python runtime: the emulator runs it (with no
 * arguments, as AWS runs a bootstrap); the handler comes from `_HANDLER`.
 * `-E` is not used: PYTHON* variables of the function reach the interpreter as on AWS.
 */
export function pythonBootstrapScript(runtime: PythonRuntime): string {
  return `#!/bin/sh
exec /usr/bin/${runtime} ${PYTHON_BOOTSTRAP_MODULE} "$@"
`;
}

/**
 * The Python module the bootstrap runs: puts sys.path in the order AWS's Python
 * runtimes have (the function's code, then its layers' /opt/python folders, then
 * PYTHONPATH, i.e. /var/runtime with boto3, then the standard library) and hands
 * over to the official runtime client (awslambdaric's own entry point, unchanged).
 */
export function pythonBootstrapModule(runtime: PythonRuntime): string {
  return `# ESB's bootstrap of the ${runtime} runtime (written by @esb/runtime's image builder).
import os
import sys

# sys.path[0] is this file's folder; AWS's order instead: task root, layers, then PYTHONPATH.
sys.path[0:1] = [
    os.environ.get("LAMBDA_TASK_ROOT", "/var/task"),
    "/opt/python/lib/${runtime}/site-packages",
    "/opt/python",
]

from awslambdaric.__main__ import main  # noqa: E402

main([sys.argv[0], sys.argv[1] if len(sys.argv) > 1 else os.environ.get("_HANDLER", "")])
`;
}

/** Environment of a Python runtime image beyond the common one, as AWS sets it. */
export function pythonRuntimeEnv(runtime: PythonRuntime): string[] {
  return [`AWS_EXECUTION_ENV=AWS_Lambda_${runtime}`, "PYTHONPATH=/var/runtime"];
}

/**
 * The layer with `runtime`'s root file system (Debian's CPython, its shared
 * libraries incl. glibc and libstdc++, the CA bundle, awslambdaric and boto3 in
 * /var/runtime), read from `rootfsDir` (default `<pythonRuntimesDir()>/<runtime>/rootfs`,
 * built by hack/build-python-runtime.sh): its /usr tree, /var/runtime tree,
 * /etc/ssl (the CA bundle), the usr-merge links /lib and /lib64 (the loader
 * the interpreter names is /lib64/ld-linux-x86-64.so.2) and /var/lang/bin/python3
 * and python<X.Y> as AWS has them. The image's Node (for the emulator) loads
 * these libraries too: a second glibc from the host would clash with this loader.
 */
export async function pythonRootfsLayer(runtime: PythonRuntime, rootfsDir?: string): Promise<LayerBuilder> {
  const rootfs = rootfsDir ?? join(pythonRuntimesDir(), runtime, "rootfs");
  if (!existsSync(join(rootfs, "usr", "bin", runtime)))
    throw new Error(
      `the ${runtime} root file system is missing (no ${join(rootfs, "usr", "bin", runtime)}): run hack/build-python-runtime.sh ${runtime}`,
    );
  const layer = new LayerBuilder();
  await layer.addHostTree("/usr", join(rootfs, "usr"));
  await layer.addHostTree("/var/runtime", join(rootfs, "var", "runtime"));
  await layer.addHostTree("/etc/ssl", join(rootfs, "etc", "ssl"));
  for (const d of ["lib", "lib64"]) {
    const st = await lstat(join(rootfs, d)).catch(() => undefined);
    if (st?.isSymbolicLink()) layer.addSymlink(`/${d}`, `usr/${d}`);
  }
  layer.addSymlink(`/var/lang/bin/${runtime}`, `/usr/bin/${runtime}`);
  layer.addSymlink("/var/lang/bin/python3", `/usr/bin/${runtime}`);
  return layer;
}
