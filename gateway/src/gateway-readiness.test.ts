// @esb-test unit: needs no test environment (`make test-unit` runs it).
// /readyz: a gateway becomes ready once functions are listed and an agent has answered, and stays
// ready while the agents are away (every replica leaving the Service at once would turn the outage
// into the ingress's bare 502s). Real gateway, LoopbackTestAgent stand-in for the agent.
import { describe, it, expect, afterEach } from "@jest/globals";
import { GatewayTestHarness, testFunctionManifest } from "./gateway-test-harness.js";

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("gateway readiness", () => {
  let harness: GatewayTestHarness | undefined;
  afterEach(async () => {
    await harness?.stop();
    harness = undefined;
  });

  it("is not ready before any agent has answered, and says so", async () => {
    harness = new GatewayTestHarness();
    // Nothing listens on port 1 of loopback: the agent never answers.
    await harness.start(testFunctionManifest("fn"), { AGENT_URLS: "http://127.0.0.1:1" });
    const res = await fetch(`${harness.endpoint}/readyz`);
    expect(res.status).toBe(503);
    expect(await res.text()).toBe("no agent has answered yet\n");
  });

  it("stays ready while the agent is away, and callers get AWS errors rather than no gateway", async () => {
    harness = new GatewayTestHarness();
    await harness.start(testFunctionManifest("fn"));
    expect((await fetch(`${harness.endpoint}/readyz`)).status).toBe(200);
    await harness.agent.close();
    await until("the heartbeat to notice the agent is gone", () =>
      harness!.gateway.agents.list().every((a) => !a.healthy),
    );
    expect((await fetch(`${harness.endpoint}/readyz`)).status).toBe(200);
    const res = await fetch(`${harness.endpoint}/2015-03-31/functions/fn/invocations`, {
      method: "POST",
      body: "{}",
    });
    expect(res.status).toBe(500);
    expect(res.headers.get("x-amzn-errortype")).toBe("ServiceException");
  });
});
