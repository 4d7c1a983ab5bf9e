// Through the agent with real workers: a nodejs24.x function (the runtime image ESB builds) on
// the test containerd writes console lines and raw stdout/stderr; the agent ships them to a
// REAL VictoriaLogs, where they are found by request id with their function, node, worker,
// version and stream; the invocation's `Tail` still carries the same lines.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { createLogger } from "@esb/common";
import { FunctionCodeSchema, FunctionSpecSchema } from "@esb/common/gen/esb/agent/v1/agent_pb";
import { VictoriaLogsClient, type StoredLogLine } from "@esb/common/victoria-logs-query";
import { VictoriaLogsServer } from "@esb/common/victoria-logs-server";
import { Registry } from "prom-client";
import { LocalBuildImageResolver, NodeAgent, functionKey } from "../node-agent.js";
import { ContainerdTestFixture } from "../testing/containerd-test-fixture.js";
import { invokeWorker } from "../testing/memory-probe.js";
import { WorkerLogShipping } from "./worker-log-shipping.js";

const log = createLogger("worker-log-shipping-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });

const HANDLER = `
console.log("init line");
export const handler = async (event) => {
  console.log("hello", event.name);
  console.error("something went wrong for", event.name);
  process.stdout.write("raw stdout line\\n");
  return { ok: true };
};
`;

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("worker logs shipped by the agent (real containerd, nodejs24.x worker, real VictoriaLogs)", () => {
  const fx = new ContainerdTestFixture();
  const dir = mkdtempSync(join(tmpdir(), "esb-worker-logs-"));
  const store = new VictoriaLogsServer({ dataDir: join(dir, "logs") });
  const ref = { namespace: "default", name: "log-probe" };
  let agent: NodeAgent;
  let logs: WorkerLogShipping;

  beforeAll(async () => {
    await store.start();
    const runtime = fx.runtime();
    agent = new NodeAgent({
      nodeName: `node-${fx.id}`,
      runtime,
      network: fx.network,
      stateDir: join(dir, "agent"),
      imageResolver: new LocalBuildImageResolver(),
      logger: log,
    });
    // As startAgent wires it.
    logs = new WorkerLogShipping({
      runtime,
      node: agent.nodeName,
      functionOf: (id) => {
        const w = agent.listWorkers().find((x) => x.workerId === id);
        return w && functionKey(w.ref);
      },
      config: { url: store.url },
      registry: new Registry(),
      logger: log,
    });
    await agent.start();
    await agent.prepareFunction(
      create(FunctionSpecSchema, {
        ref,
        generation: 1n,
        revision: "logs1",
        runtime: "nodejs24.x",
        handler: "index.handler",
        code: create(FunctionCodeSchema, { files: { "index.mjs": new TextEncoder().encode(HANDLER) } }),
        memorySizeMb: 128,
        timeoutSeconds: 30,
        ephemeralStorageMb: 16,
        scaling: { pauseAfterMs: 600_000, keepWarmSeconds: 600 },
      }),
    );
  }, 300_000);

  afterAll(async () => {
    if (agent) {
      for (const p of agent.pools()) await agent.destroyFunction(p.ref);
      await agent.close();
    }
    await logs?.close();
    await fx.teardown();
    await store.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("stores the START/END/REPORT lines and the function's own lines, queryable by request id", async () => {
    const w = await agent.acquire(ref, { holderId: "logs-test", leaseMs: 60_000, waitMs: 60_000 });
    let tail: string;
    try {
      const res = await invokeWorker(w.address, { name: "ESB" }, { tail: true });
      expect(res.status).toBe(200);
      tail = res.log;
    } finally {
      await agent.release(w.workerId, w.leaseId, "success");
    }
    // The gateway's LogType: Tail keeps working: it names the request id.
    const requestId = /START RequestId: (\S+)/.exec(tail)?.[1];
    expect(requestId).toBeDefined();
    expect(tail).toContain("raw stdout line");

    const client = new VictoriaLogsClient({ url: store.url });
    const lines = await until("the invocation's lines in VictoriaLogs", async () => {
      const got = await client.query({ function: "default/log-probe", requestId, since: "10m" });
      return got.some((l) => l.message.startsWith("REPORT")) && got;
    });
    const find = (re: RegExp): StoredLogLine => {
      const l = lines.find((x) => re.test(x.message));
      if (!l) throw new Error(`no stored line matches ${re}: ${JSON.stringify(lines.map((x) => x.message))}`);
      return l;
    };
    const base = { function: "default/log-probe", node: `node-${fx.id}`, worker: w.workerId, requestId };
    expect(find(/^START RequestId: /)).toMatchObject({ ...base, version: "$LATEST" });
    expect(find(/\tINFO\thello ESB$/)).toMatchObject({ ...base, level: "INFO", stream: "stdout" });
    expect(find(/\tERROR\tsomething went wrong for ESB$/)).toMatchObject({ ...base, level: "ERROR" });
    expect(find(/^raw stdout line$/)).toMatchObject(base);
    expect(find(/^END RequestId: /)).toMatchObject(base);
    expect(find(/^REPORT RequestId: .*Duration: /)).toMatchObject(base);
    // START comes first and REPORT last, as the worker wrote them.
    expect(lines[0].message).toMatch(/^START /);
    expect(lines[lines.length - 1].message).toMatch(/^REPORT /);

    // The init line belongs to no invocation but to the function.
    const all = await client.query({ function: "default/log-probe", since: "10m" });
    const init = all.find((l) => l.message.endsWith("\tINFO\tinit line"));
    expect(init).toMatchObject({ function: "default/log-probe", worker: w.workerId });
    expect(init?.requestId).toBeUndefined();
  }, 120_000);
});
