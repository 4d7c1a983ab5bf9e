// Runs images built only by this package's code as real containers in the test
// containerd, each in a network namespace this test creates, and invokes them
// over HTTP on :8080 (the worker contract).
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { execFile } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { writeOciArchive } from "./oci-image-writer.js";
import { buildFunctionImage, type RuntimeImage } from "./runtime-image-builder.js";
import { RuntimeImageStore } from "./runtime-image-store.js";

const run = promisify(execFile);
const id = randomBytes(3).toString("hex");
const namespace = `esb-imgtest-${id}`;
// A random 10.x.y.0/24 (away from the agent's 10.88.0.0/16), carved into /30s, one per container.
const subnet = `10.${randomInt(100, 200)}.${randomInt(0, 256)}`;

let socket: string;
let dir: string;
const netnsCreated: string[] = [];
const containers: string[] = [];
const images: string[] = [];

async function ctr(...args: string[]): Promise<string> {
  const { stdout } = await run("ctr", ["--address", socket, "-n", namespace, ...args], {
    maxBuffer: 16 << 20,
  });
  return stdout;
}

async function ip(...args: string[]): Promise<void> {
  await run("ip", args);
}

/** A network namespace with a veth pair; returns the namespace path and the container-side address. */
async function createNetns(index: number): Promise<{ path: string; address: string }> {
  const name = `esbimg${id}${index}`;
  const hostIf = `eih${id}${index}`;
  const peerIf = `eic${id}${index}`;
  await ip("netns", "add", name);
  netnsCreated.push(name);
  await ip("link", "add", hostIf, "type", "veth", "peer", "name", peerIf);
  await ip("link", "set", peerIf, "netns", name);
  await ip("addr", "add", `${subnet}.${4 * index + 1}/30`, "dev", hostIf);
  await ip("link", "set", hostIf, "up");
  await ip("-n", name, "addr", "add", `${subnet}.${4 * index + 2}/30`, "dev", peerIf);
  await ip("-n", name, "link", "set", peerIf, "up");
  await ip("-n", name, "link", "set", "lo", "up");
  return { path: `/var/run/netns/${name}`, address: `${subnet}.${4 * index + 2}` };
}

/** Imports `image` into containerd and runs it detached in a fresh network namespace. */
async function startWorker(
  image: RuntimeImage,
  index: number,
  env: string[],
): Promise<{ address: string; logFile: string }> {
  const archive = join(dir, `${image.tag}.oci.tar`);
  await writeOciArchive(image.layoutDir, archive);
  await ctr("images", "import", archive);
  images.push(image.imageName!);
  const netns = await createNetns(index);
  const container = `esb-imgtest-${id}-${index}`;
  const logFile = join(dir, `${container}.log`);
  const envArgs = env.flatMap((e) => ["--env", e]);
  await ctr(
    "run",
    "-d",
    "--log-uri",
    `file://${logFile}`,
    "--with-ns",
    `network:${netns.path}`,
    ...envArgs,
    image.imageName!,
    container,
  );
  containers.push(container);
  await waitForPort(netns.address, 8080, logFile);
  return { address: netns.address, logFile };
}

async function waitForPort(host: string, port: number, logFile: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host, port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`worker at ${host}:${port} did not listen within 60 s; log:\n${await readLog(logFile)}`);
}

async function readLog(logFile: string): Promise<string> {
  return readFile(logFile, "utf8").catch(() => "(no log)");
}

async function invoke(
  address: string,
  event: unknown,
): Promise<{ status: number; body: string; headers: Headers }> {
  const res = await fetch(`http://${address}:8080/2015-03-31/functions/function/invocations`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(event),
  });
  return { status: res.status, body: await res.text(), headers: res.headers };
}

const workerEnv = [
  "AWS_LAMBDA_FUNCTION_NAME=function",
  "AWS_LAMBDA_FUNCTION_TIMEOUT=30",
  "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128",
];

beforeAll(async () => {
  const s = process.env.ESB_TEST_CONTAINERD_SOCKET;
  if (!s)
    throw new Error(
      "ESB_TEST_CONTAINERD_SOCKET is not set: the test containerd must be running (see test/src/env)",
    );
  socket = s;
  dir = await mkdtemp(join(tmpdir(), "esb-image-container-test-"));
});

afterAll(async () => {
  for (const c of containers) {
    await ctr("tasks", "kill", "-s", "SIGKILL", c).catch(() => undefined);
    for (let i = 0; i < 50; i++) {
      if (
        await ctr("tasks", "delete", c).then(
          () => true,
          () => false,
        )
      )
        break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await ctr("containers", "delete", c).catch(() => undefined);
  }
  // --sync waits for containerd's garbage collection, so the namespace is empty afterwards.
  for (const image of images) await ctr("images", "rm", "--sync", image).catch(() => undefined);
  for (const n of netnsCreated) await ip("netns", "delete", n).catch(() => undefined);
  for (let i = 0; socket && i < 50; i++) {
    if (
      await run("ctr", ["--address", socket, "namespaces", "rm", namespace]).then(
        () => true,
        () => false,
      )
    )
      break;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (dir) await rm(dir, { recursive: true, force: true });
}, 60_000);

describe("runtime images in containerd", () => {
  const store = new RuntimeImageStore();

  it("runs a nodejs24.x function index.handler and returns its result over HTTP on :8080", async () => {
    const runtime = await store.get({ runtime: "nodejs24.x" });
    const fn = await buildFunctionImage({
      baseLayout: runtime.layoutDir,
      outDir: join(dir, "node-fn"),
      files: { "index.js": "exports.handler = async (event) => ({ ok: true, event });\n" },
      env: ["_HANDLER=index.handler"],
    });
    const worker = await startWorker(fn, 0, workerEnv);
    const first = await invoke(worker.address, { hello: "world" });
    expect({ status: first.status, body: first.body }).toEqual({
      status: 200,
      body: JSON.stringify({ ok: true, event: { hello: "world" } }),
    });
    expect(first.headers.get("x-amz-function-error")).toBeNull();
    // Warm: the same worker answers again.
    const second = await invoke(worker.address, { n: 2 });
    expect(JSON.parse(second.body)).toEqual({ ok: true, event: { n: 2 } });
  }, 300_000);

  it("runs a provided function whose bootstrap is a busybox shell script", async () => {
    const runtime = await store.get({ runtime: "provided" });
    // A complete custom runtime in sh: long-poll next (wget -S prints the
    // response headers, which carry the request id), answer with a JSON result.
    const bootstrap = [
      "#!/bin/sh",
      'API="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"',
      "while true; do",
      '  if ! wget -S -q -O /tmp/event "$API/invocation/next" 2>/tmp/headers; then sleep 0.1; continue; fi',
      "  id=$(sed -n 's/^ *[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: *//p' /tmp/headers | tr -d '\\r')",
      '  wget -q -O /dev/null --header "Content-Type: application/json" --post-data "{\\"shell\\":true,\\"user\\":\\"$(id -u)\\",\\"event\\":$(cat /tmp/event)}" "$API/invocation/$id/response"',
      "done",
      "",
    ].join("\n");
    const fn = await buildFunctionImage({
      baseLayout: runtime.layoutDir,
      outDir: join(dir, "shell-fn"),
      files: { bootstrap },
    });
    const worker = await startWorker(fn, 1, workerEnv);
    const res = await invoke(worker.address, { from: "test" });
    if (res.status !== 200)
      throw new Error(`status ${res.status}: ${res.body}\nlog:\n${await readLog(worker.logFile)}`);
    expect(JSON.parse(res.body)).toEqual({ shell: true, user: "993", event: { from: "test" } });
    const again = await invoke(worker.address, [1, 2, 3]);
    expect(JSON.parse(again.body)).toEqual({ shell: true, user: "993", event: [1, 2, 3] });
  }, 300_000);
});
