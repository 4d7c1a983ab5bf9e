// End to end, with every part real: the AWS SDK → gateway → agent (gRPC) →
// containerd worker (own netns on the test's bridge) → emulator → Node runtime
// client → handler, with the controller preparing the functions from a folder
// of LambdaFunction manifests, exactly as `esb up` wires them.
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { InvokeCommand, type InvokeCommandOutput, type LambdaClient } from "@aws-sdk/client-lambda";
import { createServer, type AddressInfo } from "node:net";
import { resolvConfNameservers } from "@esb/agent/network/worker-firewall";
import { E2eStack, waitFor, type E2eFunction } from "./e2e-stack.js";
import { SANDBOX_PROBE_CODE } from "./sandbox-probe.js";

/** One handler for every scenario; the event says what to do. */
const HANDLER_CODE = `
const initId = Math.random().toString(36).slice(2);
export const handler = async (event) => {
  if (event && event.action === "fail") {
    const err = new TypeError("bad input: " + event.why);
    throw err;
  }
  if (event && event.action === "sleep") await new Promise((r) => setTimeout(r, event.ms));
  if (event && event.action === "crash") process.exit(1);
  if (event && event.action === "oom") {
    const hog = [];
    for (;;) hog.push(Buffer.alloc(16 * 1024 * 1024, 1));
  }
  console.log("handled", JSON.stringify(event));
  return { ok: true, event, initId, worker: process.env.AWS_LAMBDA_LOG_STREAM_NAME };
};
`;

const HTTP_CODE = `
export const handler = async (event) => ({
  statusCode: 201,
  headers: { "content-type": "application/json", "x-e2e": "yes" },
  body: JSON.stringify({ name: event.pathParameters.name, method: event.requestContext.http.method, q: event.queryStringParameters, body: event.body }),
});
`;

// A complete custom runtime in busybox sh (the provided image has busybox).
const SHELL_BOOTSTRAP = [
  "#!/bin/sh",
  'API="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"',
  "while true; do",
  '  if ! wget -S -q -O /tmp/event "$API/invocation/next" 2>/tmp/headers; then sleep 0.1; continue; fi',
  "  id=$(sed -n 's/^ *[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: *//p' /tmp/headers | tr -d '\\r')",
  '  wget -q -O /dev/null --header "Content-Type: application/json" --post-data "{\\"shell\\":true,\\"handler\\":\\"$_HANDLER\\",\\"event\\":$(cat /tmp/event)}" "$API/invocation/$id/response"',
  "done",
  "",
].join("\n");

// Module init of 4 s: longer than the 1 s function timeout, well inside AWS's 10 s init limit.
const SLOW_INIT_CODE = `
await new Promise((r) => setTimeout(r, 4000));
export const handler = async (event) => ({ initialised: true, event });
`;

const node = (extra: Partial<E2eFunction["spec"]> = {}): E2eFunction["spec"] => ({
  runtime: "nodejs24.x",
  handler: "index.handler",
  code: { inline: { "index.mjs": HANDLER_CODE } },
  ...extra,
});

const FUNCTIONS: E2eFunction[] = [
  { name: "echo", spec: node({ scaling: { pauseAfterMs: 300 } }) },
  { name: "errors", spec: node() },
  { name: "slow", spec: node({ timeout: 1 }) },
  {
    name: "slowinit",
    spec: {
      runtime: "nodejs24.x",
      handler: "index.handler",
      timeout: 1,
      code: { inline: { "index.mjs": SLOW_INIT_CODE } },
    },
  },
  { name: "hog", spec: node({ memorySize: 128 }) },
  // Node's start-up options are the function's: broken ones fail its init, not the emulator.
  {
    name: "badopts",
    spec: node({ environment: { variables: { NODE_OPTIONS: "--require=/nonexistent.js" } } }),
  },
  { name: "single", spec: node({ reservedConcurrency: 1, timeout: 30 }) },
  { name: "wide", spec: node({ timeout: 60 }) },
  {
    name: "probe",
    spec: {
      runtime: "nodejs24.x",
      handler: "index.handler",
      timeout: 30,
      code: { inline: { "index.mjs": SANDBOX_PROBE_CODE } },
    },
  },
  {
    name: "shell",
    spec: {
      runtime: "provided",
      handler: "function.handler",
      code: { inline: { bootstrap: SHELL_BOOTSTRAP } },
    },
  },
  {
    name: "web",
    spec: {
      runtime: "nodejs24.x",
      handler: "index.handler",
      code: { inline: { "index.mjs": HTTP_CODE } },
      http: { routes: [{ path: "/e2e/{name}", methods: ["GET", "POST"] }] },
    },
  },
];

interface Answer {
  status: number | undefined;
  functionError: string | undefined;
  body: Record<string, unknown>;
  log: string;
}

async function invoke(lambda: LambdaClient, name: string, event: unknown, tail = false): Promise<Answer> {
  const out: InvokeCommandOutput = await lambda.send(
    new InvokeCommand({
      FunctionName: name,
      Payload: new TextEncoder().encode(JSON.stringify(event)),
      LogType: tail ? "Tail" : undefined,
    }),
  );
  const text = new TextDecoder().decode(out.Payload ?? new Uint8Array());
  return {
    status: out.StatusCode,
    functionError: out.FunctionError,
    body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
    log: out.LogResult ? Buffer.from(out.LogResult, "base64").toString("utf8") : "",
  };
}

describe("invoke end to end (SDK → gateway → agent → containerd worker)", () => {
  const stack = new E2eStack();
  let lambda: LambdaClient;

  beforeAll(async () => {
    await stack.start(FUNCTIONS);
    lambda = stack.lambda();
  }, 900_000);

  afterAll(async () => {
    lambda?.destroy();
    try {
      await stack.stop();
      // Nothing leaks: no task, no container, no network namespace, no NAT rule, no bridge.
      expect([...(await stack.tasks()).entries()]).toEqual([]);
      expect(await stack.containers()).toEqual([]);
      expect(await stack.netnsLeft()).toEqual([]);
      expect(await stack.natRulesLeft()).toEqual([]);
      expect(await stack.bridgeExists()).toBe(false);
    } finally {
      await stack.cleanup();
    }
  }, 300_000);

  it("answers RequestResponse cold, then warm from the same worker", async () => {
    const cold = await invoke(lambda, "echo", { n: 1 });
    expect(cold.status).toBe(200);
    expect(cold.functionError).toBeUndefined();
    expect(cold.body).toMatchObject({ ok: true, event: { n: 1 } });
    const warm = await invoke(lambda, "echo", { n: 2 });
    expect(warm.body).toMatchObject({ ok: true, event: { n: 2 } });
    expect(warm.body.worker).toBe(cold.body.worker);
    expect(warm.body.initId).toBe(cold.body.initId);
  });

  it("freezes the idle worker (kernel cgroup freezer) and thaws it for the next invocation", async () => {
    const first = await invoke(lambda, "echo", { n: "before-pause" });
    const workers = stack.agent.agent.listWorkers({ namespace: "default", name: "echo" });
    expect(workers).toHaveLength(1);
    const id = workers[0].workerId;
    await waitFor(async () => (await stack.taskFreezer(id)) === "FROZEN", 30_000, `task ${id} FROZEN`);
    expect(await stack.agent.agent.runtime.workerStatus(id)).toBe("paused");
    // The agent owns the freezer: containerd lists the frozen task as running.
    expect((await stack.tasks()).get(id)).toBe("RUNNING");

    const thawed = await invoke(lambda, "echo", { n: "after-pause" });
    expect(thawed.body).toMatchObject({ ok: true, event: { n: "after-pause" } });
    expect(thawed.body.worker).toBe(first.body.worker);
    expect(thawed.body.initId).toBe(first.body.initId);
    const metrics = await stack.gateway.metrics.registry.metrics();
    expect(metrics).toMatch(
      /esb_gateway_invocation_duration_seconds_count\{[^}]*function="default\/echo"[^}]*start="thawed"[^}]*\} [1-9]/,
    );
  });

  it("returns the log tail with START, END and REPORT", async () => {
    const res = await invoke(lambda, "echo", { n: "tail" }, true);
    expect(res.body).toMatchObject({ ok: true });
    expect(res.log).toMatch(/^START RequestId: \S+/m);
    expect(res.log).toContain('handled {"n":"tail"}');
    expect(res.log).toMatch(/^END RequestId: \S+/m);
    expect(res.log).toMatch(/^REPORT RequestId: \S+\s+Duration: [\d.]+ ms/m);
  });

  it("reports a handler error as an Unhandled function error", async () => {
    const res = await invoke(lambda, "errors", { action: "fail", why: "nope" });
    expect(res.status).toBe(200);
    expect(res.functionError).toBe("Unhandled");
    expect(res.body.errorType).toBe("TypeError");
    expect(res.body.errorMessage).toBe("bad input: nope");
    expect(Array.isArray(res.body.stackTrace)).toBe(true);
    // The worker survives a handler error.
    expect((await invoke(lambda, "errors", { n: 1 })).body).toMatchObject({ ok: true });
  });

  it("times out after the function timeout and recovers", async () => {
    // Warm first, so that the 1 s budget is the handler's own.
    expect((await invoke(lambda, "slow", { n: 0 })).body).toMatchObject({ ok: true });
    const res = await invoke(lambda, "slow", { action: "sleep", ms: 3000 });
    expect(res.functionError).toBe("Unhandled");
    expect(String(res.body.errorMessage)).toContain("Task timed out after 1.00 seconds");
    const next = await invoke(lambda, "slow", { n: 1 });
    expect(next.functionError).toBeUndefined();
    expect(next.body).toMatchObject({ ok: true, event: { n: 1 } });
  });

  it("does not count a cold start's init against the function timeout", async () => {
    const res = await invoke(lambda, "slowinit", { n: 1 });
    expect(res.functionError).toBeUndefined();
    expect(res.body).toEqual({ initialised: true, event: { n: 1 } });
  });

  it("reports a crashed runtime as Runtime.ExitError and serves the next invocation from a fresh runtime", async () => {
    const before = await invoke(lambda, "errors", { n: "before-crash" });
    const res = await invoke(lambda, "errors", { action: "crash" });
    expect(res.functionError).toBe("Unhandled");
    expect(res.body.errorType).toBe("Runtime.ExitError");
    expect(String(res.body.errorMessage)).toContain("exit status 1");
    const next = await invoke(lambda, "errors", { n: "after-crash" });
    expect(next.functionError).toBeUndefined();
    expect(next.body).toMatchObject({ ok: true, event: { n: "after-crash" } });
    // A new execution environment: the module was initialised again.
    expect(next.body.initId).not.toBe(before.body.initId);
  });

  it("reports a function whose NODE_OPTIONS breaks Node's start as its init error (Runtime.ExitError), not a dead worker", async () => {
    for (let i = 0; i < 2; i++) {
      const res = await invoke(lambda, "badopts", { n: i });
      expect(res.status).toBe(200);
      expect(res.functionError).toBe("Unhandled");
      expect(res.body.errorType).toBe("Runtime.ExitError");
      expect(String(res.body.errorMessage)).toContain("Runtime exited with error: exit status 1");
    }
  });

  it("reports a function that allocates past memorySize as a Runtime error, and recovers", async () => {
    const res = await invoke(lambda, "hog", { action: "oom" });
    expect(res.functionError).toBe("Unhandled");
    expect(String(res.body.errorType)).toMatch(/^Runtime\./);
    const next = await invoke(lambda, "hog", { n: 1 });
    expect(next.body).toMatchObject({ ok: true, event: { n: 1 } });
  });

  it("throttles past reservedConcurrency with TooManyRequestsException", async () => {
    // Warm the single worker so both calls below race for it, not for a cold start.
    await invoke(lambda, "single", { n: 0 });
    const slow = invoke(lambda, "single", { action: "sleep", ms: 4000 });
    // Make sure the slow call holds the worker before the second one asks.
    await waitFor(
      () =>
        stack.agent.agent
          .listWorkers({ namespace: "default", name: "single" })
          .some((w) => w.state === "busy"),
      30_000,
      "single busy",
    );
    const second = await lambda
      .send(new InvokeCommand({ FunctionName: "single", Payload: new TextEncoder().encode("{}") }))
      .then(
        () => undefined,
        (err: unknown) => err as { name: string; $metadata?: { httpStatusCode?: number }; Reason?: string },
      );
    expect(second?.name).toBe("TooManyRequestsException");
    expect(second?.$metadata?.httpStatusCode).toBe(429);
    expect((await slow).body).toMatchObject({ ok: true, event: { action: "sleep" } });
  });

  it("holds reservedConcurrency across two gateway replicas: the agent grants the one worker once", async () => {
    const second = await stack.startGateway(`e2e-gateway-b-${stack.id}`);
    const other = stack.lambda(second.endpoint);
    try {
      await invoke(lambda, "single", { n: 0 }); // warm, so the calls below race for the worker only
      const call = (client: LambdaClient, i: number) =>
        client
          .send(
            new InvokeCommand({
              FunctionName: "single",
              Payload: new TextEncoder().encode(JSON.stringify({ action: "sleep", ms: 1500, i })),
            }),
          )
          .then(
            (out) => (out.StatusCode === 200 && !out.FunctionError ? "ok" : `error ${out.FunctionError}`),
            (err: { name: string }) => err.name,
          );
      const outcomes = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => call(i % 2 ? other : lambda, i)));
      expect(outcomes.filter((o) => o === "ok")).toHaveLength(1);
      expect(outcomes.filter((o) => o === "TooManyRequestsException")).toHaveLength(5);
    } finally {
      other.destroy();
      await second.gateway.stop();
    }
  });

  it("gives each of 20 concurrent invocations its own answer", async () => {
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => invoke(lambda, "wide", { i })));
    for (const [i, a] of answers.entries()) {
      expect(a.functionError).toBeUndefined();
      expect(a.body).toMatchObject({ ok: true, event: { i } });
    }
    // One invocation per worker at a time: concurrent calls were spread over several workers.
    expect(new Set(answers.map((a) => a.body.worker)).size).toBeGreaterThan(1);
  }, 600_000);

  it("runs a provided function whose bootstrap is a shell script", async () => {
    const res = await invoke(lambda, "shell", { from: "e2e" });
    expect(res.functionError).toBeUndefined();
    expect(res.body).toEqual({ shell: true, handler: "function.handler", event: { from: "e2e" } });
    const again = await invoke(lambda, "shell", [1, 2]);
    expect(again.body).toEqual({ shell: true, handler: "function.handler", event: [1, 2] });
  });

  it("serves an HTTP route through the gateway", async () => {
    const res = await fetch(`${stack.endpoint}/e2e/alice?x=1`, {
      method: "POST",
      body: "hi",
      signal: AbortSignal.timeout(60_000),
    });
    expect(res.status).toBe(201);
    expect(res.headers.get("x-e2e")).toBe("yes");
    expect(await res.json()).toEqual({ name: "alice", method: "POST", q: { x: "1" }, body: "hi" });
    const none = await fetch(`${stack.endpoint}/nowhere`, { signal: AbortSignal.timeout(10_000) });
    expect(none.status).toBe(404);
  });

  it("runs a function sandboxed: seccomp, no capabilities, not root, read-only root and code; it reaches no other worker, nor the node, nor the agent", async () => {
    // Another function's worker, and a port on the node's side of the bridge that the node itself reaches.
    await invoke(lambda, "echo", { n: "neighbour" });
    const neighbour = stack.agent.agent.listWorkers({ namespace: "default", name: "echo" })[0];
    const [workerHost, workerPort] = neighbour.address.split(":");
    const bridgeIp = stack.subnet.replace(/\.0\/24$/, ".1");
    const server = createServer((s) => s.end("node\n"));
    await new Promise<void>((r) => server.listen(0, bridgeIp, r));
    const nodePort = (server.address() as AddressInfo).port;
    try {
      const fromNode = await fetch(`http://${bridgeIp}:${nodePort}/`).then(
        () => "connected",
        (e: Error) => (e.cause as { code?: string })?.code ?? e.message,
      );
      // The HTTP client complains about the non-HTTP answer, but it did connect.
      expect(fromNode).not.toMatch(/ECONNREFUSED|EHOSTUNREACH|ETIMEDOUT/);
      const res = await invoke(lambda, "probe", {
        targets: [
          { name: "otherWorker", host: workerHost, port: Number(workerPort) },
          { name: "node", host: bridgeIp, port: nodePort },
          { name: "agent", host: bridgeIp, port: stack.agent.port },
        ],
      });
      expect(res.functionError).toBeUndefined();
      const status = res.body.status as Record<string, string>;
      expect(status).toMatchObject({
        Seccomp: "2",
        NoNewPrivs: "1",
        CapEff: "0000000000000000",
        CapPrm: "0000000000000000",
      });
      expect(status.Uid.split("\t")[0]).not.toBe("0");
      expect(res.body.writes).toEqual({ root: "EROFS", task: "EROFS", tmp: "written" });
      // Rejected by the worker's firewall (an unfiltered closed port would answer ECONNREFUSED).
      expect(res.body.connects).toEqual({
        otherWorker: "EHOSTUNREACH",
        node: "EHOSTUNREACH",
        agent: "EHOSTUNREACH",
      });
      const nameservers = resolvConfNameservers();
      if (nameservers.length) {
        for (const ns of nameservers) expect(res.body.resolvConf).toContain(`nameserver ${ns}`);
      }
    } finally {
      server.close();
    }
  });

  it("answers ResourceNotFoundException for an unknown function", async () => {
    const err = await lambda
      .send(new InvokeCommand({ FunctionName: "no-such-function", Payload: new TextEncoder().encode("{}") }))
      .then(
        () => undefined,
        (e: unknown) => e as { name: string; $metadata?: { httpStatusCode?: number } },
      );
    expect(err?.name).toBe("ResourceNotFoundException");
    expect(err?.$metadata?.httpStatusCode).toBe(404);
  });

  it("gives every worker back once the calls are answered", async () => {
    // Releases run in the background after each answer.
    await waitFor(() => stack.agent.agent.nodeStats().busyWorkers === 0, 30_000, "no busy worker");
    expect(stack.agent.agent.nodeStats().workers).toBeGreaterThan(0);
  });
});
