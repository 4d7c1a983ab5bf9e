import { join } from "node:path";
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { Containers } from "@esb/common/gen/containerd/services/containers/v1/containers_pb";
import { Content } from "@esb/common/gen/containerd/services/content/v1/content_pb";
import { Images } from "@esb/common/gen/containerd/services/images/v1/images_pb";
import { Tasks } from "@esb/common/gen/containerd/services/tasks/v1/tasks_pb";
import { Status } from "@esb/common/gen/containerd/types/task/task_pb";
import { ContainerdConnection, isNotFound } from "../containerd/containerd-connection.js";
import {
  ContainerdTestFixture,
  TEST_CONTAINERDS,
  testContainerdSocket,
  type TestContainerd,
} from "../testing/containerd-test-fixture.js";
import { kernelFreezerStates } from "../testing/kernel-freezer.js";
import {
  buildTestImage,
  pushTestImage,
  writeTestImageLayout,
  TEST_WORKER_BODY,
} from "../testing/test-image.js";
import { ContainerdRuntime, IP_LABEL } from "./containerd-runtime.js";
import { httpGet, waitFor } from "./runtime-conformance.js";
import {
  ImageUnavailableError,
  RuntimeUnavailableError,
  WORKER_LABELS,
  type WorkerExit,
  type WorkerSpec,
} from "./runtime.js";

// On each test containerd (1.6 and 2.x) in turn.
const containerds = Object.keys(TEST_CONTAINERDS) as TestContainerd[];

describe.each(containerds)("ContainerdRuntime (real containerd %s)", (containerd) => {
  // A namespace, bridge and subnet of this run only; throws when the test environment is missing.
  const fixture = new ContainerdTestFixture({ socket: testContainerdSocket(containerd) });
  const { registry, dir, network } = fixture;
  const tag = fixture.id;
  let runtime: ContainerdRuntime;
  let conn: ContainerdConnection;
  const make = () => fixture.runtime();
  const workers: string[] = [];

  beforeAll(async () => {
    runtime = make();
    await runtime.start();
    conn = new ContainerdConnection({ socketPath: fixture.socket, namespace: fixture.namespace });
  });

  afterAll(async () => {
    for (const id of workers) await runtime?.removeWorker(id).catch(() => undefined);
    await runtime?.close();
    conn?.close();
    await fixture.teardown();
  });

  it("reports an unreachable socket as RuntimeUnavailableError", async () => {
    const rt = new ContainerdRuntime({ socketPath: join(dir, "no.sock"), network, stateDir: join(dir, "x") });
    await expect(rt.start()).rejects.toBeInstanceOf(RuntimeUnavailableError);
    await rt.close();
  });

  it("pulls Docker-media-type images and OCI indexes (choosing linux/amd64)", async () => {
    for (const format of ["docker", "oci-index"] as const) {
      const img = await buildTestImage(format);
      const ref = await pushTestImage(registry, `esb-test/rt-${tag}-${format}`, "v1", img);
      const progress: number[] = [];
      const prepared = await runtime.prepareImage(ref, (p) => progress.push(p.fetchedBytes));
      expect(prepared.digest).toBe(img.digest);
      expect(prepared.config.entrypoint).toEqual(["/bin/sh", "/serve.sh"]);
      expect(progress.at(-1)).toBeGreaterThan(0);
      const rec = await conn.unary(Images.method.get, { name: ref });
      expect(rec.image?.target?.digest).toBe(img.digest);
    }
  });

  it("labels content so containerd's GC keeps what the image references", async () => {
    const img = await buildTestImage("oci");
    const ref = await pushTestImage(registry, `esb-test/rt-${tag}-gc`, "v1", img);
    await runtime.prepareImage(ref);
    const manifest = JSON.parse(img.blobs.get(img.digest)!.toString("utf8")) as {
      config: { digest: string };
      layers: { digest: string }[];
    };
    const { info } = await conn.unary(Content.method.info, { digest: img.digest });
    expect(info?.labels["containerd.io/gc.ref.content.config"]).toBe(manifest.config.digest);
    expect(info?.labels["containerd.io/gc.ref.content.l.1"]).toBe(manifest.layers[1].digest);
    const config = await conn.unary(Content.method.info, { digest: manifest.config.digest });
    expect(config.info?.labels["containerd.io/gc.ref.snapshot.overlayfs"]).toMatch(/^sha256:/);
  });

  it("explains pull failures with the reference and HTTP status", async () => {
    const err = (await runtime
      .prepareImage(`${registry}/esb-test/missing-${tag}:v9`)
      .catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(ImageUnavailableError);
    expect(err.message).toContain(`esb-test/missing-${tag}:v9`);
    expect(err.message).toContain("404");
    const bad = (await runtime.prepareImage("UPPER/case").catch((e: unknown) => e)) as Error;
    expect(bad).toBeInstanceOf(ImageUnavailableError);
  });

  it("imports an image from an OCI layout directory without a registry", async () => {
    const img = await buildTestImage("oci");
    const layout = join(dir, "layout");
    const ref = `esb.local/imported-${tag}:v1`;
    await writeTestImageLayout(layout, img, "v1");
    const imported = await runtime.importImage(layout, ref);
    expect(imported.digest).toBe(img.digest);
    // A fresh runtime finds it locally (the registry esb.local does not exist).
    const other = make();
    await other.start();
    try {
      expect((await other.prepareImage(ref)).digest).toBe(img.digest);
    } finally {
      await other.close();
    }
  });

  it("runs a worker that the agent's freezer pauses and resumes, and a restarted agent adopts it", async () => {
    const img = await buildTestImage("oci");
    const ref = await pushTestImage(registry, `esb-test/rt-${tag}-run`, "v1", img);
    const image = await runtime.prepareImage(ref);
    const spec: WorkerSpec = {
      id: `rt-${tag}-a`,
      image,
      labels: { [WORKER_LABELS.function]: "default/fn", [WORKER_LABELS.role]: "worker" },
      env: {},
      memoryMb: 64,
      tmpMb: 8,
    };
    workers.push(spec.id);
    const handle = await runtime.startWorker(spec);
    expect(handle.pid).toBeGreaterThan(0);
    expect((await waitFor("HTTP", () => httpGet(handle.ip, 8080))).body).toBe(TEST_WORKER_BODY);

    const { container } = await conn.unary(Containers.method.get, { id: spec.id });
    expect(container?.labels[IP_LABEL]).toBe(handle.ip);
    const oci = JSON.parse(Buffer.from(container!.spec!.value).toString("utf8"));
    expect(oci.linux.resources.memory.limit).toBe(64 * 1024 * 1024);
    expect(oci.linux.namespaces).toContainEqual({
      type: "network",
      path: join(dir, "netns", `esb-${spec.id}`),
    });

    // The agent owns the freezer: containerd keeps reporting the task running, the kernel has it frozen.
    await runtime.pauseWorker(spec.id);
    expect((await conn.unary(Tasks.method.get, { containerId: spec.id })).process?.status).toBe(
      Status.RUNNING,
    );
    expect(await runtime.workerStatus(spec.id)).toBe("paused");
    for (const p of await kernelFreezerStates(handle.pid!)) expect(p.freezer).toBe("FROZEN");

    // A second runtime (as after an agent restart) lists the worker paused from the kernel's
    // freezer, thaws it, and later sees its crash.
    const adopter = make();
    await adopter.start();
    try {
      const exits: WorkerExit[] = [];
      adopter.onWorkerExit((e) => exits.push(e));
      const listed = (await adopter.listWorkers()).find((w) => w.id === spec.id);
      expect(listed).toMatchObject({ ip: handle.ip, status: "paused", port: 8080 });
      await adopter.resumeWorker(spec.id);
      expect((await httpGet(handle.ip, 8080)).body).toBe(TEST_WORKER_BODY);
      expect((await adopter.listWorkers()).find((w) => w.id === spec.id)?.status).toBe("running");
      // SIGKILL: the worker's pid 1 has no SIGTERM handler, and pid 1 ignores unhandled signals.
      await conn.unary(Tasks.method.kill, { containerId: spec.id, signal: 9 });
      const exit = await waitFor("adopted worker exit", () => exits.find((e) => e.id === spec.id));
      expect(exit).toMatchObject({ exitCode: 137, oomKilled: false });
    } finally {
      await adopter.close();
    }
    await runtime.removeWorker(spec.id);
    const gone = await conn.unary(Tasks.method.get, { containerId: spec.id }).catch((e: unknown) => e);
    expect(isNotFound(gone)).toBe(true);
  });

  it("takes over a worker that containerd paused (an agent from before): thawed through containerd, frozen by cgroup", async () => {
    const img = await buildTestImage("oci");
    const ref = await pushTestImage(registry, `esb-test/rt-${tag}-legacy`, "v1", img);
    const spec: WorkerSpec = {
      id: `rt-${tag}-legacy`,
      image: await runtime.prepareImage(ref),
      labels: { [WORKER_LABELS.function]: "default/fn", [WORKER_LABELS.role]: "worker" },
      env: {},
      memoryMb: 64,
      tmpMb: 8,
    };
    workers.push(spec.id);
    const handle = await runtime.startWorker(spec);
    await waitFor("HTTP", () => httpGet(handle.ip, 8080));
    await conn.unary(Tasks.method.pause, { containerId: spec.id });
    expect((await runtime.listWorkers()).find((w) => w.id === spec.id)?.status).toBe("paused");
    expect((await conn.unary(Tasks.method.get, { containerId: spec.id })).process?.status).toBe(
      Status.RUNNING,
    );
    for (const p of await kernelFreezerStates(handle.pid!)) expect(p.freezer).toBe("FROZEN");
    await runtime.resumeWorker(spec.id);
    expect((await httpGet(handle.ip, 8080)).body).toBe(TEST_WORKER_BODY);
    // Frozen again by the agent, then removed: thawed so that the kill takes.
    await runtime.pauseWorker(spec.id);
    await runtime.removeWorker(spec.id);
    const gone = await conn.unary(Tasks.method.get, { containerId: spec.id }).catch((e: unknown) => e);
    expect(isNotFound(gone)).toBe(true);
  });

  it("rejects pause of an unknown worker", async () => {
    await expect(runtime.pauseWorker(`nope-${tag}`)).rejects.toThrow(/no running task/);
  });
});
