import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { kernelFreezerStates, type KernelProcessState } from "../testing/kernel-freezer.js";
import { buildTestImage, pushTestImage, TEST_WORKER_BODY } from "../testing/test-image.js";
import {
  ImageUnavailableError,
  WORKER_LABELS,
  type PreparedImage,
  type PullProgress,
  type Runtime,
  type WorkerExit,
  type WorkerLogLine,
  type WorkerSpec,
} from "./runtime.js";

/**
 * Run by a worker of an image without `User`: prints what the kernel says of
 * its sandbox, tries what the sandbox refuses (writing to /, a user namespace,
 * a mount namespace), then does ordinary work (/tmp, a child process, a background job, a pipe).
 */
const SANDBOX_PROBE = `
grep -E '^(Uid|Gid|CapPrm|CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status
if touch /probe 2>/dev/null; then echo root=rw; else echo root=ro; fi
if unshare -U true 2>/tmp/unshare.err; then echo unshare=allowed; else echo "unshare=$(cat /tmp/unshare.err)"; fi
if unshare -m true 2>/tmp/mountns.err; then echo mountns=allowed; else echo "mountns=$(cat /tmp/mountns.err)"; fi
echo data > /tmp/f && echo "tmp=$(cat /tmp/f)"
echo "child=$(/bin/sh -c 'echo ok')"
sleep 0.01 & wait $! && echo background=ok
echo "pipe=$(echo abc | tr a-c A-C)"
echo probe=done
`;

/** Run by a worker with `platformMemoryMb`: what {@link Runtime} promises about its function's memory and /tmp. */
const FUNCTION_MEMORY_PROBE = `
echo "cgroup=$ESB_FUNCTION_CGROUP"
echo "limit=$(cat "$ESB_FUNCTION_CGROUP/memory.limit_in_bytes")"
echo "tmp-fs=$(grep ' /tmp ' /proc/mounts | cut -d' ' -f3)"
/bin/sh -c 'echo $$ > "$ESB_FUNCTION_CGROUP/cgroup.procs" || exit 9
  dd if=/dev/zero of=/tmp/big bs=1048576 count=64 2>/dev/null && echo dd=ok
  exec /bin/busybox awk "BEGIN { s = \\"x\\"; while (1) { s = s s } }"'
echo "function=$?"
if echo 1 2>/dev/null > "$ESB_FUNCTION_CGROUP/memory.limit_in_bytes"; then echo limit-file=writable; else echo limit-file=read-only; fi
echo after=alive
echo probe=done
`;

/**
 * Run by a generic sandbox (standby): waits for its specialisation as ESB's emulator does,
 * then shows what its function would see: the environment handed over, /var/task.
 */
const STANDBY_PROBE = `
echo standby=waiting
touch /tmp/.esb-sandbox-ready
while [ ! -f "$ESB_SANDBOX_CONTROL/specialise.json" ]; do sleep 0.05; done
echo "specialisation=$(cat "$ESB_SANDBOX_CONTROL/specialise.json")"
echo "task=$(ls /var/task)"
echo "task-content=$(cat /var/task/code.txt)"
if touch /var/task/x 2>/dev/null; then echo task=rw; else echo task=ro; fi
if echo x 2>/dev/null > "$ESB_SANDBOX_CONTROL/specialise.json"; then echo control=rw; else echo control=ro; fi
echo probe=done
sleep 600
`;

/** What a {@link Runtime} implementation provides to run the conformance suite. */
export interface ConformanceFixture {
  /** The runtime under test, not yet started. */
  runtime: Runtime;
  /**
   * Reference of the test worker image (`buildTestImage()` from
   * src/testing/test-image.ts) that `runtime.prepareImage` can make available,
   * pushed to the test registry: the suite pushes variants of it to the same
   * registry (the part of the reference before the first "/").
   */
  imageRef: string;
  /** A reference that does not exist in the same registry. */
  missingImageRef: string;
  /** Throws unless nothing of worker `id` is left in the engine (containers, tasks, snapshots, network). */
  assertRemoved(id: string): Promise<void>;
  /**
   * False when the engine under test cannot say that the kernel's OOM killer
   * ended a worker (then only the SIGKILL exit code is checked). Default true.
   */
  reportsOomKills?: boolean;
  /** Removes what the fixture created (networks, folders). Workers are removed by the suite. */
  cleanup(): Promise<void>;
}

/** Polls `check` until it returns a value other than undefined/false; fails after `ms`. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  ms = 60_000,
): Promise<T> {
  const until = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until)
      throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** One HTTP GET; resolves status and body. */
export function httpGet(host: string, port: number, path = "/"): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, method: "GET", timeout: 5000, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("timeout", () => req.destroy(new Error(`GET http://${host}:${port}${path} timed out`)));
    req.on("error", reject);
    req.end();
  });
}

/**
 * The behaviour every {@link Runtime} must show, as a jest suite against the
 * real engine: image preparation, worker start and HTTP reachability,
 * pause/resume, logs, exits (crash, OOM kill), the worker sandbox (seccomp,
 * user, capabilities), listing and removal. `setup` builds the runtime and
 * makes the test image available.
 */
export function describeRuntimeConformance(name: string, setup: () => Promise<ConformanceFixture>): void {
  describe(`Runtime conformance: ${name}`, () => {
    let fx: ConformanceFixture;
    let runtime: Runtime;
    let image: PreparedImage;
    const progress: PullProgress[] = [];
    const exits: WorkerExit[] = [];
    const logs: WorkerLogLine[] = [];
    const run = Math.random().toString(36).slice(2, 8);
    const started: string[] = [];
    let seq = 0;

    const spec = (overrides: Partial<WorkerSpec> = {}): WorkerSpec => {
      const id = `conf-${run}-${seq++}`;
      started.push(id);
      return {
        id,
        image,
        labels: {
          [WORKER_LABELS.function]: "default/conformance",
          [WORKER_LABELS.owner]: `conformance-${run}`,
          [WORKER_LABELS.role]: "worker",
        },
        env: { AWS_LAMBDA_FUNCTION_NAME: "conformance" },
        memoryMb: 128,
        tmpMb: 16,
        pidsLimit: 64,
        ...overrides,
      };
    };
    const exitOf = (id: string) => waitFor(`exit of ${id}`, () => exits.find((e) => e.id === id));
    const logsOf = (id: string) => logs.filter((l) => l.id === id).map((l) => `${l.stream}:${l.line}`);

    beforeAll(async () => {
      fx = await setup();
      runtime = fx.runtime;
      await runtime.start();
      runtime.onWorkerExit((e) => exits.push(e));
      runtime.onWorkerLog((l) => logs.push(l));
    });

    afterAll(async () => {
      if (!fx) return;
      for (const id of started) await runtime.removeWorker(id).catch(() => undefined);
      await runtime.close();
      await fx.cleanup();
    });

    it("prepares an image: digest, config and progress", async () => {
      image = await runtime.prepareImage(fx.imageRef, (p) => progress.push(p));
      expect(image.ref).toBe(fx.imageRef);
      expect(image.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(image.config.entrypoint).toEqual(["/bin/sh", "/serve.sh"]);
      expect(image.config.env).toContain("TEST_IMAGE=1");
      expect(image.config.user).toBe("1000:1000");
      const last = progress.at(-1);
      if (last) expect(last.layersDone).toBe(last.layers);
      // Preparing again finds it locally and answers the same.
      expect((await runtime.prepareImage(fx.imageRef)).digest).toBe(image.digest);
    });

    it("rejects a missing image with ImageUnavailableError naming it", async () => {
      const err = await runtime.prepareImage(fx.missingImageRef).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ImageUnavailableError);
      expect((err as Error).message).toContain(fx.missingImageRef.split("/").pop()!.split(":")[0]);
    });

    it("starts a worker reachable over HTTP at its IP, lists it and forwards its output", async () => {
      const s = spec();
      const handle = await runtime.startWorker(s);
      expect(handle.id).toBe(s.id);
      expect(handle.ip).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
      expect(handle.port).toBe(8080);
      const res = await waitFor("worker HTTP", () => httpGet(handle.ip, 8080));
      expect(res.status).toBe(200);
      expect(res.body).toBe(TEST_WORKER_BODY);
      expect(await runtime.workerStatus(s.id)).toBe("running");
      const listed = (await runtime.listWorkers()).find((w) => w.id === s.id);
      expect(listed).toMatchObject({ id: s.id, ip: handle.ip, status: "running" });
      expect(listed?.labels[WORKER_LABELS.function]).toBe("default/conformance");
      await waitFor("stdout and stderr lines", () => {
        const l = logsOf(s.id);
        return (
          l.includes("stdout:test-worker starting mode=serve") && l.includes("stderr:test-worker stderr line")
        );
      });
    });

    it("pauses and resumes a worker: the kernel's freezer has it frozen, then thawed", async () => {
      const s = spec();
      const handle = await runtime.startWorker(s);
      await waitFor("worker HTTP", () => httpGet(handle.ip, 8080));
      expect((await kernelFreezerStates(handle.pid!)).map((p) => p.freezer)).not.toContain("FROZEN");
      await runtime.pauseWorker(s.id);
      expect(await runtime.workerStatus(s.id)).toBe("paused");
      expect((await runtime.listWorkers()).find((w) => w.id === s.id)?.status).toBe("paused");
      const frozen = await kernelFreezerStates(handle.pid!);
      expect(frozen.length).toBeGreaterThan(0);
      for (const p of frozen) expect(p).toMatchObject({ freezer: "FROZEN", state: p.frozenState ?? p.state });
      // Pausing again is harmless; the worker stays frozen.
      await runtime.pauseWorker(s.id).catch(() => undefined);
      await runtime.resumeWorker(s.id);
      expect(await runtime.workerStatus(s.id)).toBe("running");
      for (const p of await kernelFreezerStates(handle.pid!)) expect(p.freezer).toBe("THAWED");
      expect((await httpGet(handle.ip, 8080)).body).toBe(TEST_WORKER_BODY);
    });

    it("freezes every process of a worker, the function's in its own memory cgroup included", async () => {
      // The shell moves a child into the function's memory cgroup, as the emulator does with the runtime.
      const s = spec({
        memoryMb: 32,
        platformMemoryMb: 64,
        args: [
          "/bin/sh",
          "-c",
          `/bin/sh -c 'echo $$ > "$ESB_FUNCTION_CGROUP/cgroup.procs" && exec sleep 100000' & exec /bin/sh /serve.sh`,
        ],
      });
      const handle = await runtime.startWorker(s);
      await waitFor("worker HTTP", () => httpGet(handle.ip, 8080));
      const inFunction = (ps: KernelProcessState[]) => ps.filter((p) => p.memoryCgroup.endsWith("/function"));
      const memoryV1 = existsSync("/sys/fs/cgroup/memory/memory.limit_in_bytes");
      if (memoryV1)
        await waitFor(
          "function process",
          async () => inFunction(await kernelFreezerStates(handle.pid!)).length > 0,
          10_000,
        );
      await runtime.pauseWorker(s.id);
      const frozen = await kernelFreezerStates(handle.pid!);
      expect(frozen.length).toBeGreaterThanOrEqual(2);
      if (memoryV1) expect(inFunction(frozen).length).toBeGreaterThan(0);
      for (const p of frozen) expect(p).toMatchObject({ freezer: "FROZEN", state: p.frozenState ?? p.state });
      await runtime.resumeWorker(s.id);
      for (const p of await kernelFreezerStates(handle.pid!)) expect(p.freezer).toBe("THAWED");
      expect((await httpGet(handle.ip, 8080)).body).toBe(TEST_WORKER_BODY);
    });

    it("applies args, env, a read-only root and a writable /tmp, as the image user", async () => {
      const s = spec({
        env: { FOO: "bar" },
        args: [
          "/bin/sh",
          "-c",
          'echo "env=$FOO image=$TEST_IMAGE"; if touch /x 2>/dev/null; then echo root=rw; else echo root=ro; fi; ' +
            'touch /tmp/x && echo tmp=rw; echo "uid=$(/bin/busybox id -u) gid=$(/bin/busybox id -g)"',
        ],
      });
      await runtime.startWorker(s);
      const exit = await exitOf(s.id);
      expect(exit).toMatchObject({ exitCode: 0, oomKilled: false });
      const out = await waitFor("output", () => {
        const l = logsOf(s.id);
        return l.some((x) => x.startsWith("stdout:uid=")) && l;
      });
      expect(out).toEqual(
        expect.arrayContaining([
          "stdout:env=bar image=1",
          "stdout:root=ro",
          "stdout:tmp=rw",
          "stdout:uid=1000 gid=1000",
        ]),
      );
    });

    it("sandboxes a worker: seccomp allowlist, sandbox user, no capabilities, read-only root", async () => {
      // An image with no User and a root-owned 0755 /tmp, as images built for Docker often are.
      const registry = fx.imageRef.slice(0, fx.imageRef.indexOf("/"));
      const ref = await pushTestImage(
        registry,
        `esb-test/conformance-sandbox-${run}`,
        "v1",
        await buildTestImage("oci", { user: "", tmpDirMode: 0o755 }),
      );
      const bare = await runtime.prepareImage(ref);
      expect(bare.config.user).toBe("");
      const s = spec({ image: bare, args: ["/bin/sh", "-c", SANDBOX_PROBE] });
      await runtime.startWorker(s);
      expect(await exitOf(s.id)).toMatchObject({ exitCode: 0, oomKilled: false });
      const out = await waitFor(
        "probe output",
        () => logsOf(s.id).includes("stdout:probe=done") && logsOf(s.id),
      );
      expect(out).toEqual(
        expect.arrayContaining([
          "stdout:Seccomp:\t2",
          "stdout:NoNewPrivs:\t1",
          "stdout:CapEff:\t0000000000000000",
          "stdout:CapPrm:\t0000000000000000",
          "stdout:CapBnd:\t0000000000000000",
          "stdout:Uid:\t993\t993\t993\t993",
          "stdout:Gid:\t990\t990\t990\t990",
          "stdout:root=ro",
          "stdout:tmp=data",
          "stdout:child=ok",
          "stdout:background=ok",
          "stdout:pipe=ABC",
        ]),
      );
      // Refused by the allowlist: creating a user namespace needs no capability, only seccomp stops it.
      expect(out.find((l) => l.startsWith("stdout:unshare="))).toMatch(/Operation not permitted/);
      expect(out.find((l) => l.startsWith("stdout:mountns="))).toMatch(/Operation not permitted/);
    });

    it("reports a crash as an exit with its code", async () => {
      const s = spec({ env: { TEST_MODE: "crash" } });
      await runtime.startWorker(s);
      const exit = await exitOf(s.id);
      expect(exit.exitCode).toBe(3);
      expect(exit.oomKilled).toBe(false);
      expect(exit.at).toBeInstanceOf(Date);
      expect(await runtime.workerStatus(s.id)).toBe("stopped");
    });

    it("enforces the memory limit: a worker allocating past it is OOM-killed", async () => {
      const s = spec({ env: { TEST_MODE: "oom" }, memoryMb: 32 });
      await runtime.startWorker(s);
      const exit = await exitOf(s.id);
      expect(exit.exitCode).toBe(137);
      if (fx.reportsOomKills !== false) expect(exit.oomKilled).toBe(true);
    });

    it("gives a function its own memory cgroup inside the worker's, and a /tmp on disk", async () => {
      // The worker (32 MB function + 64 MB platform) plays both parts: its shell is the platform,
      // a child joins the function's cgroup as the emulator's runtime does, writes 64 MB to /tmp
      // (disk: more than its memory, yet it lives) and then allocates until it is OOM-killed.
      const s = spec({ memoryMb: 32, platformMemoryMb: 64, args: ["/bin/sh", "-c", FUNCTION_MEMORY_PROBE] });
      await runtime.startWorker(s);
      expect(await exitOf(s.id)).toMatchObject({ exitCode: 0, oomKilled: false });
      const out = await waitFor(
        "probe output",
        () => logsOf(s.id).includes("stdout:probe=done") && logsOf(s.id),
      );
      expect(out).toEqual(
        expect.arrayContaining([
          "stdout:cgroup=/run/esb/function-memory",
          `stdout:limit=${32 * 1024 * 1024}`,
          "stdout:dd=ok",
          "stdout:function=137",
          "stdout:limit-file=read-only",
          "stdout:after=alive",
        ]),
      );
      expect(out.find((l) => l.startsWith("stdout:tmp-fs="))).not.toBe("stdout:tmp-fs=tmpfs");
    });

    it("specialises a generic sandbox: code read-only at /var/task, function labels, environment handed over once", async () => {
      if (!runtime.specialiseWorker) return; // engines without it start every worker anew (documented)
      const code = mkdtempSync(join(tmpdir(), "esb-conformance-code-"));
      chmodSync(code, 0o755);
      writeFileSync(join(code, "code.txt"), "the function's code\n", { mode: 0o644 });
      try {
        const base = { memoryMb: 32, platformMemoryMb: 64, args: ["/bin/sh", "-c", STANDBY_PROBE] };
        const sandbox = spec({
          ...base,
          standby: true,
          labels: { [WORKER_LABELS.owner]: `conformance-${run}` },
        });
        await runtime.startWorker(sandbox);
        await waitFor("standby", () => logsOf(sandbox.id).includes("stdout:standby=waiting"));
        // A spec that does not fit the sandbox (another memory size) is refused.
        await expect(runtime.specialiseWorker({ ...sandbox, ...base, memoryMb: 64 })).rejects.toThrow(
          /memoryMb/,
        );
        const fn = {
          ...spec(base),
          id: sandbox.id,
          env: { AWS_LAMBDA_FUNCTION_NAME: "conformance", GREETING: "specialised" },
          mounts: [{ hostPath: code, containerPath: "/var/task" }],
        };
        const handle = await runtime.specialiseWorker(fn);
        expect(handle).toMatchObject({ id: sandbox.id, port: 8080 });
        const out = await waitFor(
          "probe output",
          () => logsOf(sandbox.id).includes("stdout:probe=done") && logsOf(sandbox.id),
        );
        const env = JSON.parse(
          out.find((l) => l.startsWith("stdout:specialisation="))!.slice("stdout:specialisation=".length),
        );
        expect(env.env).toMatchObject({
          GREETING: "specialised",
          TEST_IMAGE: "1",
          AWS_LAMBDA_FUNCTION_NAME: "conformance",
        });
        expect(out).toEqual(
          expect.arrayContaining([
            "stdout:task=code.txt",
            "stdout:task-content=the function's code",
            "stdout:task=ro",
            "stdout:control=ro",
          ]),
        );
        const listed = await waitFor("function labels", async () => {
          const w = (await runtime.listWorkers()).find((x) => x.id === sandbox.id);
          return w?.labels[WORKER_LABELS.function] === "default/conformance" && w;
        });
        expect(listed.ip).toBe(handle.ip);
        // Once only: a specialised worker is no sandbox any more.
        await expect(runtime.specialiseWorker(fn)).rejects.toThrow();
      } finally {
        rmSync(code, { recursive: true, force: true });
      }
    });

    it("removes workers completely and idempotently", async () => {
      const running = spec();
      await runtime.startWorker(running);
      const paused = spec();
      await runtime.startWorker(paused);
      await runtime.pauseWorker(paused.id);
      for (const id of [...started]) {
        await runtime.removeWorker(id);
        await runtime.removeWorker(id);
        await fx.assertRemoved(id);
        expect(["unknown", "stopped"]).toContain(await runtime.workerStatus(id));
      }
      const ids = (await runtime.listWorkers()).map((w) => w.id);
      for (const id of started) expect(ids).not.toContain(id);
      // No exit is reported for workers that were removed on purpose.
      expect(exits.map((e) => e.id)).not.toContain(running.id);
      expect(exits.map((e) => e.id)).not.toContain(paused.id);
    });
  });
}
