import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import {
  InvalidRequestContentException,
  InvokeCommand,
  LambdaClient,
  RequestTooLargeException,
  ResourceNotFoundException,
  ServiceException,
  TooManyRequestsException,
} from "@aws-sdk/client-lambda";
import { InvocationOutcome } from "@esb/common/gen/esb/agent/v1/agent_pb";
import { GatewayTestHarness, testFunctionManifest } from "./gateway-test-harness.js";

// The Invoke API through the real AWS SDK for JavaScript v3, against a real
// gateway whose agent is the LoopbackTestAgent stand-in (real gRPC, real HTTP workers).
const harness = new GatewayTestHarness();
let lambda: LambdaClient;
const text = (p: Uint8Array | undefined) => Buffer.from(p ?? new Uint8Array()).toString("utf8");
const json = (p: Uint8Array | undefined) => JSON.parse(text(p)) as Record<string, unknown>;
const payload = (v: unknown) => Buffer.from(JSON.stringify(v));

/** An AWS SDK client for a gateway, without retries: each test asserts what one call gets. */
const sdkClient = (endpoint: string) =>
  new LambdaClient({
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "x", secretAccessKey: "x" },
    maxAttempts: 1,
  });

/** A gateway of the test's own (configured by `env`) serving `echo`, with an SDK client for it. */
async function ownGateway(env: Record<string, string> = {}) {
  const h = new GatewayTestHarness();
  await h.start(testFunctionManifest("echo"), env);
  return { h, client: sdkClient(h.endpoint) };
}

beforeAll(async () => {
  await harness.start(
    [
      testFunctionManifest("echo"),
      testFunctionManifest("limited", "  reservedConcurrency: 1"),
      testFunctionManifest("echo", "", "team-a"),
    ].join("\n---\n"),
  );
  harness.agent.setConcurrencyLimit("default/limited", 1);
  lambda = sdkClient(harness.endpoint);
});

afterAll(async () => {
  lambda?.destroy();
  await harness.stop();
});

describe("Invoke API with the AWS SDK", () => {
  it("RequestResponse returns the function's result with the executed version", async () => {
    const out = await lambda.send(
      new InvokeCommand({ FunctionName: "echo", Payload: payload({ hello: "world" }) }),
    );
    expect(out.StatusCode).toBe(200);
    expect(out.FunctionError).toBeUndefined();
    expect(out.ExecutedVersion).toBe("$LATEST");
    const result = json(out.Payload);
    expect(result.event).toEqual({ hello: "world" });
    expect(result.functionName).toBe("echo");
    expect(typeof result.requestId).toBe("string");
  });

  it("reuses the warm worker for the next invocation", async () => {
    const a = json(
      (await lambda.send(new InvokeCommand({ FunctionName: "echo", Payload: payload({ n: 1 }) }))).Payload,
    );
    const b = json(
      (await lambda.send(new InvokeCommand({ FunctionName: "echo", Payload: payload({ n: 2 }) }))).Payload,
    );
    expect(a.worker).toBe(b.worker);
  });

  it("accepts full ARNs, partial ARNs, $LATEST and the namespace/name form", async () => {
    for (const FunctionName of [
      "arn:aws:lambda:us-east-1:123456789012:function:echo",
      "arn:aws:lambda:us-east-1:123456789012:function:echo:$LATEST",
      "123456789012:function:echo",
      "echo:$LATEST",
      "default/echo",
    ]) {
      const out = await lambda.send(new InvokeCommand({ FunctionName, Payload: payload({ FunctionName }) }));
      expect(json(out.Payload).event).toEqual({ FunctionName });
    }
    const qualified = await lambda.send(
      new InvokeCommand({ FunctionName: "echo", Qualifier: "$LATEST", Payload: payload({}) }),
    );
    expect(qualified.StatusCode).toBe(200);
    const other = await lambda.send(
      new InvokeCommand({ FunctionName: "team-a/echo", Payload: payload({ ns: "team-a" }) }),
    );
    expect(json(other.Payload).event).toEqual({ ns: "team-a" });
  });

  it("passes the client context to the worker", async () => {
    const ctx = { custom: { tenant: "t1" } };
    const out = await lambda.send(
      new InvokeCommand({
        FunctionName: "echo",
        ClientContext: Buffer.from(JSON.stringify(ctx)).toString("base64"),
        Payload: payload({}),
      }),
    );
    expect(json(out.Payload).clientContext).toEqual(ctx);
  });

  it("Tail returns the base64 log of this invocation with START/END/REPORT", async () => {
    const out = await lambda.send(
      new InvokeCommand({ FunctionName: "echo", LogType: "Tail", Payload: payload({}) }),
    );
    const requestId = json(out.Payload).requestId as string;
    const log = Buffer.from(out.LogResult ?? "", "base64").toString("utf8");
    expect(log).toContain(`START RequestId: ${requestId}`);
    expect(log).toContain(`END RequestId: ${requestId}`);
    expect(log).toContain(`REPORT RequestId: ${requestId}`);
  });

  it("a function error is 200 with FunctionError Unhandled and the error body", async () => {
    const out = await lambda.send(
      new InvokeCommand({ FunctionName: "echo", Payload: payload({ fail: "boom" }) }),
    );
    expect(out.StatusCode).toBe(200);
    expect(out.FunctionError).toBe("Unhandled");
    const err = json(out.Payload);
    expect(err.errorMessage).toBe("boom");
    expect(err.errorType).toBe("Error");
    expect(Array.isArray(err.stackTrace)).toBe(true);
  });

  it("a worker crash mid-invocation is an Unhandled Runtime.ExitError and the agent is told WORKER_FAILED", async () => {
    const out = await lambda.send(
      new InvokeCommand({ FunctionName: "echo", Payload: payload({ crash: true }) }),
    );
    expect(out.StatusCode).toBe(200);
    expect(out.FunctionError).toBe("Unhandled");
    expect(json(out.Payload).errorType).toBe("Runtime.ExitError");
    // ReleaseWorker is sent in the background, right after the response.
    for (
      let i = 0;
      i < 100 && !harness.agent.releases.some((r) => r.outcome === InvocationOutcome.WORKER_FAILED);
      i++
    ) {
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(harness.agent.releases.some((r) => r.outcome === InvocationOutcome.WORKER_FAILED)).toBe(true);
    // The next invocation gets a working worker.
    const next = await lambda.send(
      new InvokeCommand({ FunctionName: "echo", Payload: payload({ after: "crash" }) }),
    );
    expect(json(next.Payload).event).toEqual({ after: "crash" });
  });

  it("Event returns 202 at once and the function runs in the background", async () => {
    const before = harness.agent.releases.length;
    const out = await lambda.send(
      new InvokeCommand({ FunctionName: "echo", InvocationType: "Event", Payload: payload({ async: true }) }),
    );
    expect(out.StatusCode).toBe(202);
    await harness.gateway.eventQueue.idle();
    for (let i = 0; i < 100 && harness.agent.releases.length === before; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(harness.agent.releases.length).toBeGreaterThan(before);
  });

  it("a failing Event is retried twice", async () => {
    const before = harness.agent.releases.filter(
      (r) => r.outcome === InvocationOutcome.FUNCTION_ERROR,
    ).length;
    const out = await lambda.send(
      new InvokeCommand({
        FunctionName: "echo",
        InvocationType: "Event",
        Payload: payload({ fail: "async boom" }),
      }),
    );
    expect(out.StatusCode).toBe(202);
    await harness.gateway.eventQueue.idle();
    for (let i = 0; i < 100; i++) {
      if (
        harness.agent.releases.filter((r) => r.outcome === InvocationOutcome.FUNCTION_ERROR).length -
          before >=
        3
      )
        break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(
      harness.agent.releases.filter((r) => r.outcome === InvocationOutcome.FUNCTION_ERROR).length - before,
    ).toBe(3);
    const metrics = await harness.gateway.metrics.registry.getSingleMetricAsString(
      "esb_gateway_event_retries_total",
    );
    expect(metrics).toContain('esb_gateway_event_retries_total{function="default/echo"} 2');
  });

  it("DryRun returns 204 for an existing function", async () => {
    const out = await lambda.send(new InvokeCommand({ FunctionName: "echo", InvocationType: "DryRun" }));
    expect(out.StatusCode).toBe(204);
  });

  it("an unknown function or qualifier is ResourceNotFoundException", async () => {
    await expect(
      lambda.send(new InvokeCommand({ FunctionName: "missing", Payload: payload({}) })),
    ).rejects.toBeInstanceOf(ResourceNotFoundException);
    await expect(
      lambda.send(new InvokeCommand({ FunctionName: "missing", InvocationType: "DryRun" })),
    ).rejects.toBeInstanceOf(ResourceNotFoundException);
    await expect(
      lambda.send(new InvokeCommand({ FunctionName: "echo", Qualifier: "prod", Payload: payload({}) })),
    ).rejects.toBeInstanceOf(ResourceNotFoundException);
    await expect(
      lambda.send(new InvokeCommand({ FunctionName: "other-ns/echo", Payload: payload({}) })),
    ).rejects.toBeInstanceOf(ResourceNotFoundException);
  });

  it("a payload that is not JSON is InvalidRequestContentException", async () => {
    const err = await lambda
      .send(new InvokeCommand({ FunctionName: "echo", Payload: Buffer.from("{not json") }))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidRequestContentException);
    expect((err as InvalidRequestContentException).$metadata.httpStatusCode).toBe(400);
  });

  it("payloads over 6 MB (sync) and 1 MB (Event) are RequestTooLargeException", async () => {
    const big = Buffer.from(JSON.stringify({ s: "x".repeat(6 * 1024 * 1024) }));
    await expect(
      lambda.send(new InvokeCommand({ FunctionName: "echo", Payload: big })),
    ).rejects.toBeInstanceOf(RequestTooLargeException);
    const medium = Buffer.from(JSON.stringify({ s: "x".repeat(1024 * 1024 + 10) }));
    await expect(
      lambda.send(new InvokeCommand({ FunctionName: "echo", InvocationType: "Event", Payload: medium })),
    ).rejects.toBeInstanceOf(RequestTooLargeException);
    // 1 MB+ is still fine synchronously.
    const ok = await lambda.send(new InvokeCommand({ FunctionName: "echo", Payload: medium }));
    expect(ok.StatusCode).toBe(200);
  });

  it("RESOURCE_EXHAUSTED from the agent is TooManyRequestsException with the reserved-concurrency reason", async () => {
    const slow = lambda.send(
      new InvokeCommand({ FunctionName: "limited", Payload: payload({ sleepMs: 1500 }) }),
    );
    // Wait until the only allowed worker is busy.
    for (let i = 0; i < 200 && harness.agent.workerCount("default/limited") === 0; i++)
      await new Promise((r) => setTimeout(r, 10));
    const err = await lambda
      .send(new InvokeCommand({ FunctionName: "limited", Payload: payload({}) }))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TooManyRequestsException);
    expect((err as TooManyRequestsException).Reason).toBe(
      "ReservedFunctionConcurrentInvocationLimitExceeded",
    );
    expect((err as TooManyRequestsException).$metadata.httpStatusCode).toBe(429);
    expect((await slow).StatusCode).toBe(200);
    const metrics = await harness.gateway.metrics.registry.getSingleMetricAsString(
      "esb_gateway_throttles_total",
    );
    expect(metrics).toContain('esb_gateway_throttles_total{function="default/limited"} 1');
  });

  it("50 concurrent invocations each get their own answer", async () => {
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        lambda.send(new InvokeCommand({ FunctionName: "echo", Payload: payload({ i, sleepMs: 20 }) })),
      ),
    );
    results.forEach((out, i) => {
      expect(out.StatusCode).toBe(200);
      expect(json(out.Payload).event).toEqual({ i, sleepMs: 20 });
    });
    expect(new Set(results.map((r) => json(r.Payload).requestId)).size).toBe(50);
  });

  it("an unreachable agent is ServiceException saying so", async () => {
    const { h, client } = await ownGateway();
    await h.agent.close();
    try {
      const err = await client
        .send(new InvokeCommand({ FunctionName: "echo", Payload: payload({}) }))
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ServiceException);
      expect((err as ServiceException).message).toContain("no agent could provide a worker for default/echo");
      expect((err as ServiceException).$metadata.httpStatusCode).toBe(500);
    } finally {
      client.destroy();
      await h.stop();
    }
  });
});

describe("warm hold", () => {
  it("reuses a held worker without asking the agent, and releases it at stop", async () => {
    const { h, client } = await ownGateway({ GATEWAY_WARM_HOLD_MS: "60000" });
    try {
      const a = json(
        (await client.send(new InvokeCommand({ FunctionName: "echo", Payload: payload({ n: 1 }) }))).Payload,
      );
      const b = json(
        (await client.send(new InvokeCommand({ FunctionName: "echo", Payload: payload({ n: 2 }) }))).Payload,
      );
      expect(a.worker).toBe(b.worker);
      expect(h.agent.acquireCalls).toBe(1);
      expect(h.agent.releases.length).toBe(0);
      await h.gateway.stop();
      expect(h.agent.releases.length).toBe(1);
    } finally {
      client.destroy();
      await h.cleanup();
    }
  });
});

describe("warm hold under load", () => {
  it("serves a caller waiting on a slow cold start with a worker released meanwhile", async () => {
    const { h, client } = await ownGateway({ GATEWAY_WARM_HOLD_MS: "60000" });
    try {
      // A's worker is busy for 300 ms; B arrives meanwhile and its cold start takes 3 s.
      const first = client.send(
        new InvokeCommand({ FunctionName: "echo", Payload: payload({ n: 1, sleepMs: 300 }) }),
      );
      // Only once A's acquire is at the agent (its cold start without delay) do cold starts slow down.
      while (h.agent.acquireCalls < 1) await new Promise((r) => setTimeout(r, 5));
      h.agent.coldStartDelayMs = 3000;
      const second = client.send(new InvokeCommand({ FunctionName: "echo", Payload: payload({ n: 2 }) }));
      const a = json((await first).Payload);
      const b = json((await second).Payload);
      // B got A's worker as soon as A was done, not the worker still booting.
      expect(b.worker).toBe(a.worker);
      expect(h.agent.acquireCalls).toBe(2);
      // The second cold start's worker is kept by the gateway, and released at stop.
      await new Promise((r) => setTimeout(r, 3200));
      await h.gateway.stop();
      expect(h.agent.releases.length).toBe(2);
    } finally {
      client.destroy();
      await h.cleanup();
    }
  });
});

describe("warm hold under a burst", () => {
  it("does not ask the agent for a worker per request while cold starts are slow", async () => {
    const { h, client } = await ownGateway({ GATEWAY_WARM_HOLD_MS: "60000" });
    try {
      await client.send(new InvokeCommand({ FunctionName: "echo", Payload: payload({ n: 0 }) }));
      expect(h.agent.acquireCalls).toBe(1);
      // From now on a cold start takes 1.5 s; three callers each make 10 short calls.
      h.agent.coldStartDelayMs = 1500;
      const caller = async (c: number) => {
        for (let i = 0; i < 10; i++) {
          const out = json(
            (
              await client.send(
                new InvokeCommand({ FunctionName: "echo", Payload: payload({ c, i, sleepMs: 20 }) }),
              )
            ).Payload,
          );
          expect(out.event).toEqual({ c, i, sleepMs: 20 });
        }
      };
      await Promise.all([caller(1), caller(2), caller(3)]);
      // One worker per concurrent caller at most: 1 + the 2 callers that found it busy.
      expect(h.agent.acquireCalls).toBeLessThanOrEqual(3);
    } finally {
      await new Promise((r) => setTimeout(r, 1600));
      await h.gateway.stop();
      client.destroy();
      await h.cleanup();
    }
  });
});

describe("stopping the gateway", () => {
  it("lets an invocation in progress finish and gives its worker back", async () => {
    const { h, client } = await ownGateway();
    try {
      const running = client.send(
        new InvokeCommand({ FunctionName: "echo", Payload: payload({ n: 1, sleepMs: 500 }) }),
      );
      await new Promise((r) => setTimeout(r, 150));
      const stopped = h.gateway.stop();
      const out = await running;
      expect(out.FunctionError).toBeUndefined();
      expect(json(out.Payload).event).toEqual({ n: 1, sleepMs: 500 });
      await stopped;
      expect(h.agent.releases.map((r) => r.outcome)).toEqual([InvocationOutcome.SUCCESS]);
    } finally {
      client.destroy();
      await h.cleanup();
    }
  });
});

describe("health and metrics endpoints", () => {
  it("serves /healthz, /readyz and /metrics", async () => {
    expect((await fetch(`${harness.endpoint}/healthz`)).status).toBe(200);
    expect((await fetch(`${harness.endpoint}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${harness.endpoint}/metrics`)).text();
    expect(metrics).toContain("esb_gateway_invocations_total");
    expect(metrics).toContain("esb_gateway_invocation_duration_seconds_bucket");
    expect(metrics).toContain('start="cold"');
    expect(metrics).toContain('start="warm"');
    expect(metrics).toContain("esb_gateway_event_queue_depth");
  });

  it("GetFunction returns the configuration of a known function", async () => {
    const res = await fetch(`${harness.endpoint}/2015-03-31/functions/echo`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { Configuration: { FunctionName: string; Version: string } };
    expect(body.Configuration.FunctionName).toBe("echo");
    expect(body.Configuration.Version).toBe("$LATEST");
  });
});
