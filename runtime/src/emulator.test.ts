// The emulator with the ESB Node runtime client (a real child process) on loopback: the
// Invoke contract (status, headers, body) for success and each failure mode.
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { MAX_REQUEST_BYTES, describeExit } from "./emulator.js";
import { invoke, makeTaskDir, startEmulator, type TestEmulator } from "./emulator-test-kit.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const INDEX_MJS = `
let count = 0;
export const handler = async (event) => ({ ok: true, event });
export const counter = async () => ({ count: ++count });
export const fails = async () => { throw new TypeError("bad thing"); };
export const slow = async (event) => { await new Promise((r) => setTimeout(r, event.ms)); return { slept: event.ms }; };
export const crash = async () => { console.log("about to exit"); process.exit(3); };
export const logs = async (event) => { console.log("hello", event.name); console.error("careful"); return "logged"; };
export const size = async (event) => ({ length: event.length });
export const context = async (event, ctx) => ({
  awsRequestId: ctx.awsRequestId,
  functionName: ctx.functionName,
  functionVersion: ctx.functionVersion,
  memoryLimitInMB: ctx.memoryLimitInMB,
  invokedFunctionArn: ctx.invokedFunctionArn,
  logGroupName: ctx.logGroupName,
  logStreamName: ctx.logStreamName,
  callbackWaitsForEmptyEventLoop: ctx.callbackWaitsForEmptyEventLoop,
  clientContext: ctx.clientContext,
  identity: ctx.identity,
  remaining: ctx.getRemainingTimeInMillis(),
  traceId: process.env._X_AMZN_TRACE_ID,
});
`;

describe("Emulator with the Node runtime client", () => {
  let env: TestEmulator;

  beforeAll(async () => {
    env = await startEmulator(makeTaskDir({ "index.mjs": INDEX_MJS }), { _HANDLER: "index.handler" });
  });
  afterAll(async () => {
    await env.close();
  });

  it("returns the handler's result with AWS headers", async () => {
    const r = await invoke(env.url, { hello: "world" });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ ok: true, event: { hello: "world" } });
    expect(r.headers.get("content-type")).toBe("application/json");
    expect(r.headers.get("x-amz-executed-version")).toBe("$LATEST");
    expect(r.headers.get("x-amz-function-error")).toBeNull();
    expect(r.headers.get("x-amzn-requestid")).toMatch(UUID);
    expect(r.headers.get("x-amz-log-result")).toBeNull();
  });

  it("uses the request id the caller sends", async () => {
    const r = await invoke(env.url, { a: 1 }, { "X-Amz-Request-Id": "req-from-gateway-1" });
    expect(r.status).toBe(200);
    expect(r.headers.get("x-amzn-requestid")).toBe("req-from-gateway-1");
    const logs = await env.waitForLog("END RequestId: req-from-gateway-1\n");
    expect(logs).toContain("START RequestId: req-from-gateway-1 Version: $LATEST\n");
    expect(logs).toContain("END RequestId: req-from-gateway-1\n");
  });

  it("answers 404 with an AWS error shape for other paths", async () => {
    const res = await fetch(env.url.replace("/invocations", "/other"), { method: "POST", body: "{}" });
    expect(res.status).toBe(404);
    expect(res.headers.get("x-amzn-errortype")).toBe("ResourceNotFoundException");
    expect(((await res.json()) as { Type: string }).Type).toBe("User");
  });
});

describe("Emulator: handler variants", () => {
  const cases: [string, Record<string, string>, string][] = [
    [
      "ESM .mjs",
      { "index.mjs": "export const handler = async (e) => ({ kind: 'mjs', e });" },
      "index.handler",
    ],
    [
      "ESM .js in a type:module package",
      {
        "package.json": '{"type":"module"}',
        "index.js": "export const handler = async (e) => ({ kind: 'esm-js', e });",
      },
      "index.handler",
    ],
    [
      "CommonJS .js",
      { "index.js": "exports.handler = async (e) => ({ kind: 'cjs-js', e });" },
      "index.handler",
    ],
    ["CommonJS .cjs", { "app.cjs": "module.exports.main = async (e) => ({ kind: 'cjs', e });" }, "app.main"],
    [
      "nested folder",
      { "src/lib/app.mjs": "export const handler = async (e) => ({ kind: 'nested', e });" },
      "src/lib/app.handler",
    ],
    [
      "nested export",
      { "index.mjs": "export const api = { v1: { get: async (e) => ({ kind: 'deep', e }) } };" },
      "index.api.v1.get",
    ],
    [
      "callback handler",
      {
        "index.js":
          "let later = 'no';\nexports.handler = (e, ctx, cb) => { setTimeout(() => { later = 'yes'; }, 20); cb(null, { kind: 'callback', e }); };",
      },
      "index.handler",
    ],
    [
      "callback handler that does not wait for the event loop",
      {
        "index.js":
          "exports.handler = (e, ctx, cb) => { ctx.callbackWaitsForEmptyEventLoop = false; setTimeout(() => {}, 60000); cb(null, { kind: 'nowait', e }); };",
      },
      "index.handler",
    ],
  ];

  for (const [name, files, handler] of cases) {
    it(`loads ${name} (${handler})`, async () => {
      const env = await startEmulator(makeTaskDir(files), { _HANDLER: handler });
      try {
        const r = await invoke(env.url, { n: 1 });
        expect(r.status).toBe(200);
        expect(r.headers.get("x-amz-function-error")).toBeNull();
        expect((r.json as { e: unknown }).e).toEqual({ n: 1 });
      } finally {
        await env.close();
      }
    });
  }

  it("answers a callback handler only after the event loop drains (callbackWaitsForEmptyEventLoop)", async () => {
    const env = await startEmulator(
      makeTaskDir({
        "index.js":
          "exports.handler = (e, ctx, cb) => { setTimeout(() => console.log('timer after callback'), 100); cb(null, 'done'); };",
      }),
      { _HANDLER: "index.handler" },
    );
    try {
      const r = await invoke(env.url, {}, { "X-Amz-Log-Type": "Tail", "X-Amz-Request-Id": "cb-wait" });
      expect(r.json).toBe("done");
      const tail = Buffer.from(r.headers.get("x-amz-log-result") ?? "", "base64").toString();
      expect(tail).toMatch(/\tcb-wait\tINFO\ttimer after callback\nEND RequestId: cb-wait\n/);
    } finally {
      await env.close();
    }
  });

  it("reports a callback error as an Unhandled function error", async () => {
    const env = await startEmulator(
      makeTaskDir({ "index.js": "exports.handler = (e, ctx, cb) => cb(new RangeError('out of range'));" }),
      { _HANDLER: "index.handler" },
    );
    try {
      const r = await invoke(env.url, {});
      expect(r.status).toBe(200);
      expect(r.headers.get("x-amz-function-error")).toBe("Unhandled");
      const body = r.json as { errorType: string; errorMessage: string; stackTrace: string[] };
      expect(body.errorType).toBe("RangeError");
      expect(body.errorMessage).toBe("out of range");
      expect(body.stackTrace[0]).toBe("RangeError: out of range");
    } finally {
      await env.close();
    }
  });
});

describe("Emulator: failure modes", () => {
  let env: TestEmulator;

  beforeAll(async () => {
    env = await startEmulator(
      makeTaskDir({ "index.mjs": INDEX_MJS }),
      { _HANDLER: "index.counter" },
      { timeoutSeconds: 1 },
    );
  });
  afterAll(async () => {
    await env.close();
  });

  it("keeps module state between warm invocations", async () => {
    expect((await invoke(env.url, {})).json).toEqual({ count: 1 });
    expect((await invoke(env.url, {})).json).toEqual({ count: 2 });
  });

  it("times out with Task timed out, then restarts the runtime for the next request", async () => {
    const slowEnv = await startEmulator(
      makeTaskDir({ "index.mjs": INDEX_MJS }),
      { _HANDLER: "index.slow" },
      { timeoutSeconds: 1 },
    );
    try {
      const r = await invoke(slowEnv.url, { ms: 5000 }, { "X-Amz-Request-Id": "timeout-1" });
      expect(r.status).toBe(200);
      expect(r.headers.get("x-amz-function-error")).toBe("Unhandled");
      const body = r.json as { errorType: string; errorMessage: string };
      expect(body.errorType).toBe("Sandbox.Timedout");
      expect(body.errorMessage).toMatch(
        /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z timeout-1 Task timed out after 1\.00 seconds$/,
      );
      const ok = await invoke(slowEnv.url, { ms: 1 });
      expect(ok.status).toBe(200);
      expect(ok.json).toEqual({ slept: 1 });
      expect(await slowEnv.waitForLog("Task timed out")).toContain(
        "timeout-1 Task timed out after 1.00 seconds\n",
      );
    } finally {
      await slowEnv.close();
    }
  });

  it("returns a handler exception as an Unhandled error with the AWS body", async () => {
    const errEnv = await startEmulator(makeTaskDir({ "index.mjs": INDEX_MJS }), { _HANDLER: "index.fails" });
    try {
      const r = await invoke(errEnv.url, {});
      expect(r.status).toBe(200);
      expect(r.headers.get("x-amz-function-error")).toBe("Unhandled");
      const body = r.json as { errorType: string; errorMessage: string; stackTrace: string[] };
      expect(body.errorType).toBe("TypeError");
      expect(body.errorMessage).toBe("bad thing");
      expect(body.stackTrace[0]).toBe("TypeError: bad thing");
      expect(body.stackTrace.length).toBeGreaterThan(1);
    } finally {
      await errEnv.close();
    }
  });

  it("reports a crash mid-invocation as Runtime.ExitError and recovers", async () => {
    const crashEnv = await startEmulator(makeTaskDir({ "index.mjs": INDEX_MJS }), {
      _HANDLER: "index.crash",
    });
    try {
      const r = await invoke(crashEnv.url, {}, { "X-Amz-Request-Id": "crash-1", "X-Amz-Log-Type": "Tail" });
      expect(r.status).toBe(200);
      expect(r.headers.get("x-amz-function-error")).toBe("Unhandled");
      expect(r.json).toEqual({
        errorType: "Runtime.ExitError",
        errorMessage: "RequestId: crash-1 Error: Runtime exited with error: exit status 3",
      });
      const tail = Buffer.from(r.headers.get("x-amz-log-result") ?? "", "base64").toString();
      expect(tail).toContain("about to exit");
      expect(tail).toContain("END RequestId: crash-1\n");
      // The runtime comes back for the next request (which crashes the same way).
      const again = await invoke(crashEnv.url, {}, { "X-Amz-Request-Id": "crash-2" });
      expect(again.json).toEqual({
        errorType: "Runtime.ExitError",
        errorMessage: "RequestId: crash-2 Error: Runtime exited with error: exit status 3",
      });
    } finally {
      await crashEnv.close();
    }
  });

  it("rejects a concurrent second invocation with 429 TooManyRequestsException", async () => {
    const busyEnv = await startEmulator(makeTaskDir({ "index.mjs": INDEX_MJS }), { _HANDLER: "index.slow" });
    try {
      await invoke(busyEnv.url, { ms: 1 }); // warm
      const first = invoke(busyEnv.url, { ms: 1500 });
      await new Promise((r) => setTimeout(r, 300));
      const second = await invoke(busyEnv.url, { ms: 1 });
      expect(second.status).toBe(429);
      expect(second.headers.get("x-amzn-errortype")).toBe("TooManyRequestsException");
      expect(second.json).toEqual({
        Type: "User",
        message: "This execution environment is busy with another invocation (one invocation at a time)",
        errorType: "TooManyRequestsException",
        errorMessage: "This execution environment is busy with another invocation (one invocation at a time)",
        Reason: "ConcurrentInvocationLimitExceeded",
      });
      const r = await first;
      expect(r.status).toBe(200);
      expect(r.json).toEqual({ slept: 1500 });
    } finally {
      await busyEnv.close();
    }
  });

  it("accepts a 6 MB payload and rejects a larger one with 413", async () => {
    const sizeEnv = await startEmulator(makeTaskDir({ "index.mjs": INDEX_MJS }), { _HANDLER: "index.size" });
    try {
      const max = `"${"a".repeat(MAX_REQUEST_BYTES - 2)}"`;
      expect(Buffer.byteLength(max)).toBe(6 * 1024 * 1024);
      const ok = await invoke(sizeEnv.url, max);
      expect(ok.status).toBe(200);
      expect(ok.json).toEqual({ length: MAX_REQUEST_BYTES - 2 });
      const tooBig = await invoke(sizeEnv.url, `"${"a".repeat(MAX_REQUEST_BYTES - 1)}"`);
      expect(tooBig.status).toBe(413);
      expect(tooBig.headers.get("x-amzn-errortype")).toBe("RequestTooLargeException");
      expect((tooBig.json as { message: string }).message).toBe(
        "Request must be smaller than 6291456 bytes for the InvokeFunction operation",
      );
      // Still usable afterwards.
      expect((await invoke(sizeEnv.url, "[1,2]")).json).toEqual({ length: 2 });
    } finally {
      await sizeEnv.close();
    }
  });

  it("returns the log tail with START, the function's lines, END and REPORT", async () => {
    const logEnv = await startEmulator(makeTaskDir({ "index.mjs": INDEX_MJS }), { _HANDLER: "index.logs" });
    try {
      const first = await invoke(
        logEnv.url,
        { name: "ada" },
        { "X-Amz-Log-Type": "Tail", "X-Amz-Request-Id": "tail-1" },
      );
      expect(first.status).toBe(200);
      expect(first.json).toBe("logged");
      const tail = Buffer.from(first.headers.get("x-amz-log-result") ?? "", "base64").toString();
      const lines = tail.split("\n");
      expect(lines[0]).toBe("START RequestId: tail-1 Version: $LATEST");
      expect(tail).toMatch(/\n\d{4}-\d\d-\d\dT[\d:.]+Z\ttail-1\tINFO\thello ada\n/);
      expect(tail).toMatch(/\ttail-1\tERROR\tcareful\n/);
      expect(tail).toContain("\nEND RequestId: tail-1\n");
      expect(tail).toMatch(
        /\nREPORT RequestId: tail-1\tDuration: \d+\.\d\d ms\tBilled Duration: \d+ ms\tMemory Size: 128 MB\tMax Memory Used: \d+ MB\tInit Duration: \d+\.\d\d ms\t\n$/,
      );
      const second = await invoke(
        logEnv.url,
        { name: "bob" },
        { "X-Amz-Log-Type": "Tail", "X-Amz-Request-Id": "tail-2" },
      );
      const tail2 = Buffer.from(second.headers.get("x-amz-log-result") ?? "", "base64").toString();
      expect(tail2.startsWith("START RequestId: tail-2 Version: $LATEST\n")).toBe(true);
      expect(tail2).not.toContain("tail-1");
      expect(tail2).not.toContain("Init Duration");
    } finally {
      await logEnv.close();
    }
  });

  it("gives the handler the context fields and the Lambda-Runtime headers' content", async () => {
    const ctxEnv = await startEmulator(
      makeTaskDir({ "index.mjs": INDEX_MJS }),
      { _HANDLER: "index.context", AWS_REGION: "eu-west-1", AWS_LAMBDA_FUNCTION_MEMORY_SIZE: "256" },
      { memorySizeMb: 256 },
    );
    try {
      const clientContext = { client: { app_title: "t" }, custom: { k: "v" }, env: { platform: "x" } };
      const r = await invoke(
        ctxEnv.url,
        {},
        {
          "X-Amz-Request-Id": "ctx-1",
          "X-Amz-Client-Context": Buffer.from(JSON.stringify(clientContext)).toString("base64"),
          "X-Amz-Cognito-Identity": JSON.stringify({
            cognitoIdentityId: "id-1",
            cognitoIdentityPoolId: "pool-1",
          }),
          "X-Amzn-Trace-Id": "Root=1-5e1b4151-5ac6c58239e4b6a2c0b3c1a4;Parent=53995c3f42cd8ad8;Sampled=1",
        },
      );
      expect(r.status).toBe(200);
      const body = r.json as Record<string, unknown>;
      expect(body).toEqual({
        awsRequestId: "ctx-1",
        functionName: "test-fn",
        functionVersion: "$LATEST",
        memoryLimitInMB: "256",
        invokedFunctionArn: "arn:aws:lambda:eu-west-1:000000000000:function:test-fn",
        logGroupName: "/aws/lambda/test-fn",
        logStreamName: expect.stringMatching(/^\d{4}\/\d\d\/\d\d\/\[\$LATEST\][0-9a-f]{32}$/),
        callbackWaitsForEmptyEventLoop: true,
        clientContext,
        identity: { cognitoIdentityId: "id-1", cognitoIdentityPoolId: "pool-1" },
        remaining: expect.any(Number),
        traceId: "Root=1-5e1b4151-5ac6c58239e4b6a2c0b3c1a4;Parent=53995c3f42cd8ad8;Sampled=1",
      });
      expect(body.remaining as number).toBeGreaterThan(0);
      expect(body.remaining as number).toBeLessThanOrEqual(3000);
      const bad = await invoke(
        ctxEnv.url,
        {},
        { "X-Amz-Client-Context": Buffer.from("not json").toString("base64") },
      );
      expect(bad.status).toBe(400);
      expect(bad.headers.get("x-amzn-errortype")).toBe("InvalidRequestContentException");
    } finally {
      await ctxEnv.close();
    }
  });
});

describe("Emulator: init errors from the Node runtime client", () => {
  const cases: [string, Record<string, string>, string, string, string][] = [
    [
      "a missing handler export",
      { "index.mjs": "export const other = 1;" },
      "index.handler",
      "Runtime.HandlerNotFound",
      "index.handler is undefined or not exported",
    ],
    [
      "a missing module",
      { "other.mjs": "" },
      "index.handler",
      "Runtime.ImportModuleError",
      "Error: Cannot find module 'index'",
    ],
    [
      "a syntax error",
      { "index.js": "exports.handler = async (e) => {{;" },
      "index.handler",
      "Runtime.UserCodeSyntaxError",
      "SyntaxError: ",
    ],
    [
      "a malformed handler name",
      { "index.mjs": "" },
      "index",
      "Runtime.MalformedHandlerName",
      "Bad handler index",
    ],
    [
      "a handler that climbs out of the task root",
      { "index.mjs": "export const handler = async () => 1;" },
      "../task/index.handler",
      "Runtime.MalformedHandlerName",
      "Bad handler ../task/index.handler",
    ],
    [
      "an exception at import",
      { "index.mjs": "throw new Error('config missing');" },
      "index.handler",
      "Error",
      "config missing",
    ],
  ];
  for (const [name, files, handler, errorType, message] of cases) {
    it(`reports ${name} as ${errorType}, again on the next invocation`, async () => {
      const env = await startEmulator(makeTaskDir(files), { _HANDLER: handler });
      try {
        for (const id of ["init-1", "init-2"]) {
          const r = await invoke(env.url, {}, { "X-Amz-Request-Id": id });
          expect(r.status).toBe(200);
          expect(r.headers.get("x-amz-function-error")).toBe("Unhandled");
          const body = r.json as { errorType: string; errorMessage: string; stackTrace: string[] };
          expect(body.errorType).toBe(errorType);
          expect(body.errorMessage.startsWith(message)).toBe(true);
          expect(Array.isArray(body.stackTrace)).toBe(true);
        }
        const logs = await env.waitForLog("END RequestId: init-2\n");
        expect(logs).toContain("START RequestId: init-2 Version: $LATEST\n");
        expect(logs).toContain("END RequestId: init-2\n");
      } finally {
        await env.close();
      }
    });
  }

  it("reports a runtime that exits during init as Runtime.ExitError", async () => {
    const env = await startEmulator(makeTaskDir({ "index.mjs": "process.exit(2);" }), {
      _HANDLER: "index.handler",
    });
    try {
      const r = await invoke(env.url, {}, { "X-Amz-Request-Id": "exit-init" });
      expect(r.status).toBe(200);
      expect(r.headers.get("x-amz-function-error")).toBe("Unhandled");
      expect(r.json).toEqual({
        errorType: "Runtime.ExitError",
        errorMessage: "RequestId: exit-init Error: Runtime exited with error: exit status 2",
      });
    } finally {
      await env.close();
    }
  });

  it("reports a missing bootstrap as Runtime.InvalidEntrypoint", async () => {
    const dir = makeTaskDir({});
    const env = await startEmulator(
      dir,
      {},
      { command: [], bootstrapPaths: [`${dir}/bootstrap`, `${dir}/opt/bootstrap`] },
    );
    try {
      const r = await invoke(env.url, {}, { "X-Amz-Request-Id": "no-boot" });
      expect(r.status).toBe(200);
      expect(r.headers.get("x-amz-function-error")).toBe("Unhandled");
      expect(r.json).toEqual({
        errorType: "Runtime.InvalidEntrypoint",
        errorMessage: `RequestId: no-boot Error: Couldn't find valid bootstrap(s): [${dir}/bootstrap ${dir}/opt/bootstrap]`,
      });
    } finally {
      await env.close();
    }
  });
});

describe("describeExit", () => {
  it("words exits as AWS does", () => {
    expect(describeExit(1, null)).toBe("exit status 1");
    expect(describeExit(null, "SIGKILL")).toBe("signal: killed");
    expect(describeExit(null, "SIGSEGV")).toBe("signal: segmentation fault");
  });
});
