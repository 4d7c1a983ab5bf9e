// Cold starts from generic sandboxes (real containerd, the nodejs24.x runtime image ESB builds):
// a worker made from a sandbox is its function's alone and looks to the function exactly like a
// worker started for it (environment, read-only /var/task with its code, memory limits, network
// isolation), and nothing of the sandboxes is left once the agent stops.
import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { createLogger } from "@esb/common";
import { FunctionCodeSchema, FunctionSpecSchema } from "@esb/common/gen/esb/agent/v1/agent_pb";
import { LocalBuildImageResolver, NodeAgent } from "./node-agent.js";
import { SANDBOX_ID_PREFIX } from "./pool/sandbox-pool.js";
import { SANDBOX_LABEL } from "./pool/sandbox-template.js";
import { WORKER_LABELS } from "./runtime/runtime.js";
import { PLATFORM_MEMORY_MB } from "./sandbox/function-memory.js";
import { ContainerdTestFixture, testContainerdSocket } from "./testing/containerd-test-fixture.js";
import { invokeWorker } from "./testing/memory-probe.js";

const log = createLogger("sandbox-cold-start-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });
const HOLDER = "sandbox-cold-start-test";
const MB = 1024 * 1024;

/** Says what the function sees of itself; with `{probe: ip}` tries to reach that worker's :8080. */
const PROBE_HANDLER = (name: string) => `
import { readdirSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
export const handler = async (event) => {
  if (event.probe) {
    return await new Promise((resolve) => {
      const s = connect({ host: event.probe, port: 8080 });
      const done = (r) => { s.destroy(); resolve({ reach: r }); };
      s.setTimeout(1500, () => done("blocked"));
      s.once("connect", () => done("connected"));
      s.once("error", (e) => done(e.code));
    });
  }
  let write = "written";
  try { writeFileSync("/var/task/x", "x"); } catch (e) { write = e.code; }
  return {
    code: "${name}",
    name: process.env.AWS_LAMBDA_FUNCTION_NAME,
    memory: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    greeting: process.env.GREETING ?? null,
    handler: process.env._HANDLER,
    standby: process.env.ESB_RUNTIME_STANDBY ?? null,
    taskFiles: readdirSync("/var/task").sort(),
    cwd: process.cwd(),
    write,
  };
};
`;

describe("cold starts from generic sandboxes (real containerd 1.6, nodejs24.x)", () => {
  const fx = new ContainerdTestFixture({ socket: testContainerdSocket("1.6") });
  const stateDir = mkdtempSync(join(tmpdir(), "esb-sandbox-cold-"));
  let agent: NodeAgent;
  const a = { namespace: "default", name: "sandbox-a" };
  const b = { namespace: "default", name: "sandbox-b" };

  const fn = (ref: typeof a, greeting: string) =>
    create(FunctionSpecSchema, {
      ref,
      generation: 1n,
      revision: `${ref.name}-1`,
      runtime: "nodejs24.x",
      handler: "index.handler",
      code: create(FunctionCodeSchema, {
        files: { "index.mjs": new TextEncoder().encode(PROBE_HANDLER(ref.name)) },
      }),
      environment: { GREETING: greeting },
      memorySizeMb: 128,
      timeoutSeconds: 30,
      scaling: { pauseAfterMs: 600_000, keepWarmSeconds: 600 },
    });
  const acquire = (ref: typeof a) =>
    agent.acquire(ref, { holderId: HOLDER, leaseMs: 120_000, waitMs: 60_000 });
  const sandboxMounts = () =>
    readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .filter((l) => l.includes(`${fx.dir}/runtime/sandboxes`));

  beforeAll(async () => {
    agent = new NodeAgent({
      nodeName: `node-${fx.id}`,
      runtime: fx.runtime(),
      network: fx.network,
      stateDir,
      imageResolver: new LocalBuildImageResolver(),
      logger: log,
      sandboxPoolSize: 1,
    });
    await agent.start();
    await agent.prepareFunction(fn(a, "from a"));
    await agent.prepareFunction(fn(b, "from b"));
    expect(await agent.sandboxes!.filled(120_000)).toBe(true);
  }, 300_000);

  afterAll(async () => {
    if (agent) {
      for (const p of agent.pools()) await agent.destroyFunction(p.ref);
      await agent.close();
    }
    await fx.teardown();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it("gives each function its own sandbox-made worker: its env, its code read-only, its memory limits, isolation kept", async () => {
    const wa = await acquire(a);
    expect(wa.workerId.startsWith(SANDBOX_ID_PREFIX)).toBe(true);
    const ra = await invokeWorker(wa.address, {});
    expect({ status: ra.status, body: JSON.parse(ra.body) }).toEqual({
      status: 200,
      body: {
        code: "sandbox-a",
        name: "sandbox-a",
        memory: "128",
        greeting: "from a",
        handler: "index.handler",
        standby: null,
        taskFiles: ["index.mjs"],
        cwd: "/var/task",
        write: "EROFS",
      },
    });
    const cg = join("/sys/fs/cgroup/memory", fx.namespace, wa.workerId);
    expect(Number(readFileSync(join(cg, "memory.limit_in_bytes"), "utf8"))).toBe(
      (128 + PLATFORM_MEMORY_MB) * MB,
    );
    expect(Number(readFileSync(join(cg, "function", "memory.limit_in_bytes"), "utf8"))).toBe(128 * MB);

    // The next sandbox (refilled) becomes b's: a different worker, b's code and env.
    expect(await agent.sandboxes!.filled(120_000)).toBe(true);
    const wb = await acquire(b);
    expect(wb.workerId.startsWith(SANDBOX_ID_PREFIX)).toBe(true);
    expect(wb.workerId).not.toBe(wa.workerId);
    const rb = JSON.parse((await invokeWorker(wb.address, {})).body) as Record<string, unknown>;
    expect(rb).toMatchObject({ code: "sandbox-b", greeting: "from b", write: "EROFS" });

    // Workers stay isolated from each other.
    const probe = JSON.parse((await invokeWorker(wb.address, { probe: wa.address.split(":")[0] })).body);
    expect(probe.reach).not.toBe("connected");

    // Reused warm, a's worker still serves a; b never gets it.
    await agent.release(wa.workerId, wa.leaseId, "success");
    await agent.release(wb.workerId, wb.leaseId, "success");
    const wb2 = await acquire(b);
    expect(wb2.workerId).toBe(wb.workerId);
    const again = await acquire(a);
    expect(again.workerId).toBe(wa.workerId);
    expect(JSON.parse((await invokeWorker(again.address, {})).body)).toMatchObject({ code: "sandbox-a" });
    await agent.release(again.workerId, again.leaseId, "success");
    await agent.release(wb2.workerId, wb2.leaseId, "success");

    // A restarted agent finds the worker under its function's labels (written beside the critical path).
    const label = async () =>
      (await agent.runtime.listWorkers()).find((w) => w.id === wa.workerId)?.labels[WORKER_LABELS.function];
    for (let i = 0; i < 100 && (await label()) !== "default/sandbox-a"; i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(await label()).toBe("default/sandbox-a");
  }, 180_000);

  it("leaves no sandbox container or mount once the functions are gone and the agent stopped", async () => {
    expect(sandboxMounts().length).toBeGreaterThan(0);
    for (const p of agent.pools()) await agent.destroyFunction(p.ref);
    await agent.close();
    const rt = fx.runtime();
    await rt.start();
    for (let i = 0; i < 100; i++) {
      const left = (await rt.listWorkers()).filter((w) => w.status !== "stopped");
      if (left.length === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const listed = await rt.listWorkers();
    await rt.close();
    expect(listed.filter((w) => w.labels[SANDBOX_LABEL] !== undefined)).toEqual([]);
    expect(sandboxMounts()).toEqual([]);
    agent = undefined!;
  }, 120_000);
});
