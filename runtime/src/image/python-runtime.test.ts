// @esb-test unit
// The plan of the Python runtime images, from the root file systems hack/build-python-runtime.sh
// builds (`make test` builds them first); the images run in test/src/e2e/python-e2e.test.ts.
import { describe, it, expect } from "@jest/globals";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pythonBootstrapScript, pythonRuntimesDir } from "./python-runtime.js";
import { planRuntimeImage } from "./runtime-image-builder.js";

const paths = (entries: { path: string }[]): string[] => entries.map((e) => `/${e.path}`);

describe("Python runtime images", () => {
  it.each(["python3.13", "python3.11"] as const)(
    "%s: Debian's CPython with awslambdaric and boto3, Node for the emulator on the same glibc, AWS's environment",
    async (runtime) => {
      const plan = await planRuntimeImage({ runtime });
      expect(plan.layers.map((l) => l.createdBy)).toEqual([
        "esb: Lambda filesystem layout, busybox",
        `esb: ${runtime} (Debian), awslambdaric, boto3`,
        "esb: Node.js 24 for the emulator",
        "esb: Runtime Interface Emulator and runtime client",
      ]);
      const [, python, node, worker] = plan.layers.map((l) => l.builder.entries());
      const pythonPaths = paths(python);
      expect(pythonPaths).toEqual(
        expect.arrayContaining([
          `/usr/bin/${runtime}`,
          "/var/runtime/awslambdaric/__main__.py",
          "/var/runtime/boto3/__init__.py",
          "/etc/ssl/certs/ca-certificates.crt",
          "/usr/share/esb/python-runtime.txt",
        ]),
      );
      // Precompiled: the sandbox user cannot write __pycache__.
      expect(
        pythonPaths.some((p) => /^\/var\/runtime\/boto3\/__pycache__\/__init__\.cpython-3\d+\.pyc$/.test(p)),
      ).toBe(true);
      expect(python.find((e) => e.path === "lib64")).toMatchObject({ type: "symlink", target: "usr/lib64" });
      expect(python.find((e) => e.path === "var/lang/bin/python3")).toMatchObject({
        type: "symlink",
        target: `/usr/bin/${runtime}`,
      });
      // Only the Node binary: the host's glibc would clash with the loader of the Python layer.
      expect(paths(node).filter((p) => !["/var", "/var/lang", "/var/lang/bin"].includes(p))).toEqual([
        "/var/lang/bin/node",
      ]);
      const bootstrap = worker.find((e) => e.path === "var/runtime/bootstrap");
      expect(bootstrap).toMatchObject({ mode: 0o755 });
      expect(String((bootstrap as { content: Buffer }).content)).toBe(pythonBootstrapScript(runtime));
      expect(paths(worker)).toContain("/var/runtime/esb/python_bootstrap.py");
      expect(plan.config.Env).toEqual(
        expect.arrayContaining([`AWS_EXECUTION_ENV=AWS_Lambda_${runtime}`, "PYTHONPATH=/var/runtime"]),
      );
      expect(plan.config.Env!.some((e) => e.startsWith("NODE_PATH="))).toBe(false);
      expect(plan.config.Labels).toEqual({ "dev.esb.runtime": runtime });
      // Same inputs, same fingerprint (so the image cache finds it again).
      expect((await planRuntimeImage({ runtime })).fingerprint).toBe(plan.fingerprint);
    },
  );

  it("says how to build a missing root file system", async () => {
    const empty = await mkdtemp(join(tmpdir(), "esb-python-rootfs-"));
    try {
      await expect(planRuntimeImage({ runtime: "python3.13", pythonRootfs: empty })).rejects.toThrow(
        /python3\.13 root file system is missing .*run hack\/build-python-runtime\.sh python3\.13/,
      );
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
    expect(pythonRuntimesDir()).toMatch(/python-runtimes$/);
  });
});
