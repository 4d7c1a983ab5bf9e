// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect, afterEach } from "@jest/globals";
import { createLogger } from "@esb/common";
import { AgentClientPool } from "./agent-client-pool.js";
import { LambdaApiError } from "./lambda-api-error.js";
import { LoopbackTestAgent } from "./loopback-test-agent.js";
import { StaticAgentDiscovery } from "./static-agent-discovery.js";
import { InvocationOutcome, WorkerBroker, type WorkerBrokerOptions } from "./worker-broker.js";

// The broker gives back every worker it takes and lists what it holds in its
// heartbeats: the real broker and agent client pool over gRPC, in front of the
// LoopbackTestAgent stand-in.

async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for: ${what}`);
}

const FN = { namespace: "default", name: "fn" };
const logger = createLogger("worker-broker-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });

describe("WorkerBroker gives back every worker it takes", () => {
  let agent: LoopbackTestAgent;
  let agents: AgentClientPool;
  let broker: WorkerBroker;

  async function start(opts: Omit<WorkerBrokerOptions, "leaseMs" | "logger"> = {}): Promise<void> {
    agent = new LoopbackTestAgent();
    const url = await agent.listen();
    agents = new AgentClientPool(new StaticAgentDiscovery([url]), "gw-broker-test", 50, logger);
    await agents.start();
    broker = new WorkerBroker(agents, { leaseMs: 60_000, logger, ...opts });
  }

  afterEach(async () => {
    await broker.releaseHeld();
    await until(() => agent.busyLeases().length === 0, "every worker released at the agent");
    // The gateway forgets a lease when the agent's answer arrives, just after the agent freed it.
    await until(() => agents.list()[0].leases.size === 0, "every lease forgotten by the gateway");
    await agents.stop();
    await agent.close();
  });

  it("an acquire that times out is cancelled at the agent, whose worker then serves the next call", async () => {
    // The timeout leaves a loaded machine time to get the acquire to the agent (else there is
    // nothing to cancel there); the cold start outlasts it by far.
    await start({ acquireTimeoutMs: 1000 });
    agent.coldStartDelayMs = 2500;
    const err = await broker.acquire(FN).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LambdaApiError);
    // The agent saw the cancellation (the gRPC deadline) and handed nothing out.
    await until(() => agent.cancelledAcquires === 1, "acquire cancelled at the agent");
    expect(agent.busyLeases()).toEqual([]);
    expect(agents.list()[0].leases.size).toBe(0);
    agent.coldStartDelayMs = 0;
    const lease = await broker.acquire(FN);
    expect(lease.startKind).toBe("warm");
    expect(agent.workerCount()).toBe(1);
    broker.release(lease, InvocationOutcome.SUCCESS);
  });

  it("a worker the agent brings after a hand-off served the caller is held, listed, then released", async () => {
    await start({ warmHoldMs: 150 });
    const first = await broker.acquire(FN);
    agent.coldStartDelayMs = 300;
    // This caller needs a cold start; the first worker, released meanwhile, serves it instead.
    const second = broker.acquire(FN);
    await new Promise((r) => setTimeout(r, 50));
    broker.release(first, InvocationOutcome.SUCCESS);
    const got = await second;
    expect(got.workerId).toBe(first.workerId);
    // The cold-started worker arrives later: not lost, held by the gateway and listed in heartbeats.
    await until(() => agent.workerCount() === 2 && agent.busyLeases().length === 2, "spare worker arrived");
    const spare = agent.busyLeases().find((l) => l !== got.leaseId)!;
    await until(() => agent.lastListedLeases?.includes(spare) === true, "spare lease listed");
    broker.release(got, InvocationOutcome.SUCCESS);
    // Both go back to the agent once their warm hold ends.
    await until(() => agent.busyLeases().length === 0, "both released");
    await until(() => agent.lastListedLeases?.length === 0, "nothing listed");
  });

  it("a caller waiting for a worker another caller brings gives up after the function timeout and grace, with an AWS error", async () => {
    await start({ warmHoldMs: 1000, passiveWaitGraceMs: 100 });
    const first = await broker.acquire(FN);
    agent.coldStartDelayMs = 1500;
    // This caller's cold start is on its way; the first worker, released meanwhile, serves it.
    const served = broker.acquire(FN);
    await new Promise((r) => setTimeout(r, 50));
    broker.release(first, InvocationOutcome.SUCCESS);
    const got = await served;
    // The next caller counts on that cold start's worker, which comes later than it may wait.
    const started = Date.now();
    const err = await broker.acquire(FN, { timeoutSeconds: 0.2 }).catch((e: unknown) => e);
    const waited = Date.now() - started;
    expect(err).toBeInstanceOf(LambdaApiError);
    expect((err as LambdaApiError).type).toBe("ServiceException");
    expect((err as LambdaApiError).statusCode).toBe(500);
    expect((err as LambdaApiError).message).toMatch(
      /no worker of default\/fn became available within 0\.3 s/,
    );
    expect(waited).toBeGreaterThanOrEqual(250);
    expect(waited).toBeLessThan(1200);
    broker.release(got, InvocationOutcome.SUCCESS);
    // The late worker is not lost: held, then released with the other.
    await until(() => agent.workerCount() === 2, "the cold-started worker arrived");
  });

  it("an acquire while the agent is away waits for it to come back, within the outage wait", async () => {
    await start({ agentOutageWaitMs: 10_000 });
    const port = Number(new URL(agents.list()[0].url).port);
    await agent.close();
    const pending = broker.acquire(FN);
    await new Promise((r) => setTimeout(r, 600));
    // The agent restarts on its address (as a DaemonSet pod or esb up's agent does).
    agent = new LoopbackTestAgent();
    await agent.listen(port);
    const lease = await pending;
    expect(agent.busyLeases()).toEqual([lease.leaseId]);
    broker.release(lease, InvocationOutcome.SUCCESS);
  });

  it("an agent that stays away fails the acquire with ServiceException once the outage wait is over", async () => {
    await start({ agentOutageWaitMs: 400 });
    const port = Number(new URL(agents.list()[0].url).port);
    await agent.close();
    const err = await broker.acquire(FN).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LambdaApiError);
    expect((err as LambdaApiError).type).toBe("ServiceException");
    expect((err as LambdaApiError).message).toMatch(
      /no agent could provide a worker for default\/fn: .*ECONNREFUSED/,
    );
    agent = new LoopbackTestAgent();
    await agent.listen(port);
  });

  it("a release the agent could not take while restarting is sent again once it is back", async () => {
    await start();
    const lease = await broker.acquire(FN);
    const port = Number(new URL(lease.agent.url).port);
    await agent.close();
    broker.release(lease, InvocationOutcome.SUCCESS);
    await new Promise((r) => setTimeout(r, 700)); // refused meanwhile, and retried
    agent = new LoopbackTestAgent();
    await agent.listen(port);
    await until(
      () => agent.releases.some((r) => r.workerId === lease.workerId),
      "the release reached the new agent",
    );
  });
});
