// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect, beforeAll, afterAll, afterEach } from "@jest/globals";
import { createLogger, type LambdaFunction } from "@esb/common";
import { AgentClientPool } from "./agent-client-pool.js";
import { FunctionInvoker, type InvocationRequest } from "./function-invoker.js";
import { LoopbackTestAgent } from "./loopback-test-agent.js";
import { StaticAgentDiscovery } from "./static-agent-discovery.js";
import { InvocationOutcome, WorkerBroker } from "./worker-broker.js";
import { WorkerHttpClient, type WorkerResponse } from "./worker-http-client.js";

// Every path of FunctionInvoker gives its worker back: the real broker and agent
// client pool over gRPC, in front of the LoopbackTestAgent stand-in (real HTTP workers).

async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for: ${what}`);
}

/** A worker HTTP client that fails in a way the invoker does not expect (a bug, not a worker failure). */
class BrokenWorkerHttpClient extends WorkerHttpClient {
  override async invoke(): Promise<WorkerResponse> {
    throw new TypeError("unexpected failure in the gateway");
  }
}

const FN: LambdaFunction = {
  apiVersion: "esb.dev/v1alpha1",
  kind: "LambdaFunction",
  metadata: { name: "fn", namespace: "default" },
  spec: { runtime: "nodejs22.x", handler: "index.handler", timeout: 3 },
} as LambdaFunction;

function request(event: unknown, fn: LambdaFunction = FN): InvocationRequest {
  return {
    key: { namespace: "default", name: "fn" },
    fn,
    payload: Buffer.from(JSON.stringify(event)),
    requestId: `req-${Math.random().toString(16).slice(2)}`,
  };
}

describe("FunctionInvoker releases every worker it takes", () => {
  const logger = createLogger("function-invoker-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });
  const agent = new LoopbackTestAgent();
  let agents: AgentClientPool;
  let broker: WorkerBroker;
  const workers = new WorkerHttpClient();

  beforeAll(async () => {
    const url = await agent.listen();
    agents = new AgentClientPool(new StaticAgentDiscovery([url]), "gw-invoker-test", 50, logger);
    await agents.start();
    broker = new WorkerBroker(agents, { leaseMs: 60_000, logger });
  });

  afterAll(async () => {
    await broker.releaseHeld();
    await agents.stop();
    await workers.close();
    await agent.close();
  });

  afterEach(async () => {
    // Nothing stays leased, at the agent or in the gateway's heartbeat list.
    await until(() => agent.busyLeases().length === 0, "every worker released at the agent");
    await until(() => agents.list()[0].leases.size === 0, "no lease left in the heartbeat list");
  });

  /** Runs `run` and returns the outcome of the ReleaseWorker it caused. */
  async function releasedAs(run: () => Promise<unknown>): Promise<InvocationOutcome> {
    const before = agent.releases.length;
    await run().catch(() => undefined);
    await until(() => agent.releases.length > before, "ReleaseWorker received");
    expect(agent.releases.length).toBe(before + 1);
    return agent.releases[before].outcome;
  }

  it("a successful invocation releases its worker as SUCCESS", async () => {
    const invoker = new FunctionInvoker(broker, workers, logger);
    expect(await releasedAs(() => invoker.invoke(request({ hello: 1 })))).toBe(InvocationOutcome.SUCCESS);
  });

  it("a function error releases its worker as FUNCTION_ERROR (kept warm)", async () => {
    const invoker = new FunctionInvoker(broker, workers, logger);
    const result = await invoker.invoke(request({ fail: "boom" }));
    expect(result.functionError).toBe("Unhandled");
    await until(() => agent.releases.at(-1)?.outcome === InvocationOutcome.FUNCTION_ERROR, "released");
  });

  it("a worker that dies mid-invocation is released as WORKER_FAILED", async () => {
    const invoker = new FunctionInvoker(broker, workers, logger);
    let errorType: string | undefined;
    const outcome = await releasedAs(async () => {
      errorType = (await invoker.invoke(request({ crash: true }))).errorType;
    });
    expect(outcome).toBe(InvocationOutcome.WORKER_FAILED);
    expect(errorType).toBe("Runtime.ExitError");
  });

  it("an unexpected error propagates after the worker is released as WORKER_FAILED", async () => {
    const invoker = new FunctionInvoker(broker, new BrokenWorkerHttpClient(), logger);
    let thrown: unknown;
    const outcome = await releasedAs(() =>
      invoker.invoke(request({})).catch((err: unknown) => {
        thrown = err;
      }),
    );
    expect(thrown).toBeInstanceOf(TypeError);
    expect(outcome).toBe(InvocationOutcome.WORKER_FAILED);
  });

  it("a request that cannot be sent (malformed function) still releases its worker", async () => {
    const invoker = new FunctionInvoker(broker, workers, logger);
    const broken = { ...FN, spec: undefined } as unknown as LambdaFunction;
    let thrown: unknown;
    const outcome = await releasedAs(() =>
      invoker.invoke(request({}, broken)).catch((err: unknown) => {
        thrown = err;
      }),
    );
    expect(thrown).toBeInstanceOf(TypeError);
    expect(outcome).toBe(InvocationOutcome.WORKER_FAILED);
  });

  it("heartbeats list the lease while the invocation runs, and an empty list once it is released", async () => {
    const invoker = new FunctionInvoker(broker, workers, logger);
    const running = invoker.invoke(request({ sleepMs: 400 }));
    await until(() => agent.busyLeases().length === 1, "worker acquired");
    const [lease] = agent.busyLeases();
    await until(() => agent.lastListedLeases?.includes(lease) === true, "lease listed by a heartbeat");
    await running;
    await until(() => agent.lastListedLeases?.length === 0, "an empty list after the release");
  });
});
