// @esb-test unit: needs no test environment (`make test-unit` runs it).
// Custom runtimes (`provided`): a shell-script bootstrap found on the bootstrap search path,
// speaking the Runtime API with curl, and the official AWS Node.js runtime interface client
// (npm aws-lambda-ric) run unchanged against the emulator.
import { describe, it, expect } from "@jest/globals";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { invoke, makeTaskDir, startEmulator } from "./emulator-test-kit.js";

// Reads one event, answers {"echo": <event>, "id": ...}; "fail" events go to /error,
// "sleep" events sleep, "exit" events exit 7 mid-invocation.
const SHELL_BOOTSTRAP = `#!/bin/sh
set -eu
API="http://\${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
[ "\${FAIL_INIT:-}" = "1" ] && {
  curl -sS -X POST "$API/init/error" -H "Lambda-Runtime-Function-Error-Type: Runtime.ShellInit" \\
    -d '{"errorType":"Runtime.ShellInit","errorMessage":"cannot start"}' >/dev/null
  exit 1
}
HEADERS=$(mktemp)
while true; do
  EVENT=$(curl -sS -D "$HEADERS" "$API/invocation/next")
  ID=$(grep -i '^Lambda-Runtime-Aws-Request-Id:' "$HEADERS" | tr -d '\\r' | cut -d' ' -f2)
  ARN=$(grep -i '^Lambda-Runtime-Invoked-Function-Arn:' "$HEADERS" | tr -d '\\r' | cut -d' ' -f2)
  echo "shell got $ID"
  case "$EVENT" in
    *fail*) curl -sS -X POST "$API/invocation/$ID/error" -H "Lambda-Runtime-Function-Error-Type: Shell.Failure" \\
              -d '{"errorType":"Shell.Failure","errorMessage":"asked to fail"}' >/dev/null ;;
    *sleep*) sleep 30 ;;
    *exit*) exit 7 ;;
    *) curl -sS -X POST "$API/invocation/$ID/response" -d "{\\"echo\\":$EVENT,\\"id\\":\\"$ID\\",\\"arn\\":\\"$ARN\\"}" >/dev/null ;;
  esac
done
`;

describe("custom runtime: shell bootstrap", () => {
  it("finds the bootstrap on the search path and serves invocations, errors, timeouts and crashes", async () => {
    const dir = makeTaskDir({ "opt/bootstrap": SHELL_BOOTSTRAP });
    const env = await startEmulator(
      dir,
      { AWS_LAMBDA_FUNCTION_NAME: "shell-fn" },
      {
        command: [],
        bootstrapPaths: [join(dir, "missing/bootstrap"), join(dir, "opt/bootstrap")],
        timeoutSeconds: 1,
      },
    );
    try {
      const ok = await invoke(env.url, { n: 1 }, { "X-Amz-Request-Id": "sh-1", "X-Amz-Log-Type": "Tail" });
      expect(ok.status).toBe(200);
      expect(ok.headers.get("x-amz-function-error")).toBeNull();
      expect(ok.json).toEqual({
        echo: { n: 1 },
        id: "sh-1",
        arn: "arn:aws:lambda:us-east-1:000000000000:function:shell-fn",
      });
      const tail = Buffer.from(ok.headers.get("x-amz-log-result") ?? "", "base64").toString();
      expect(tail).toContain("START RequestId: sh-1 Version: $LATEST\nshell got sh-1\nEND RequestId: sh-1\n");

      const failed = await invoke(env.url, { fail: true }, { "X-Amz-Request-Id": "sh-2" });
      expect(failed.status).toBe(200);
      expect(failed.headers.get("x-amz-function-error")).toBe("Unhandled");
      expect(failed.json).toEqual({ errorType: "Shell.Failure", errorMessage: "asked to fail" });

      const slow = await invoke(env.url, { sleep: true }, { "X-Amz-Request-Id": "sh-3" });
      expect(slow.status).toBe(200);
      expect(slow.headers.get("x-amz-function-error")).toBe("Unhandled");
      expect((slow.json as { errorMessage: string }).errorMessage).toMatch(
        /Z sh-3 Task timed out after 1\.00 seconds$/,
      );

      const crashed = await invoke(env.url, { exit: true }, { "X-Amz-Request-Id": "sh-4" });
      expect(crashed.status).toBe(200);
      expect(crashed.headers.get("x-amz-function-error")).toBe("Unhandled");
      expect(crashed.json).toEqual({
        errorType: "Runtime.ExitError",
        errorMessage: "RequestId: sh-4 Error: Runtime exited with error: exit status 7",
      });

      const again = await invoke(env.url, { n: 5 }, { "X-Amz-Request-Id": "sh-5" });
      expect(again.status).toBe(200);
      expect((again.json as { echo: unknown }).echo).toEqual({ n: 5 });
    } finally {
      await env.close();
    }
  });

  it("returns the body a custom runtime posts to /init/error", async () => {
    const dir = makeTaskDir({ bootstrap: SHELL_BOOTSTRAP });
    const env = await startEmulator(
      dir,
      { FAIL_INIT: "1" },
      { command: [], bootstrapPaths: [join(dir, "bootstrap")] },
    );
    try {
      const r = await invoke(env.url, {}, { "X-Amz-Request-Id": "sh-init" });
      expect(r.status).toBe(200);
      expect(r.headers.get("x-amz-function-error")).toBe("Unhandled");
      expect(r.json).toEqual({ errorType: "Runtime.ShellInit", errorMessage: "cannot start" });
    } finally {
      await env.close();
    }
  });
});

describe("official AWS runtime interface client (aws-lambda-ric) against the emulator", () => {
  const ricMain = join(
    dirname(createRequire(import.meta.url).resolve("aws-lambda-ric/package.json")),
    "index.mjs",
  );
  const files = {
    "index.mjs": `
let calls = 0;
export const handler = async (event, context) => { calls++; console.log("ric handler", calls); return { ok: true, event, calls, id: context.awsRequestId }; };
export const fails = async () => { const e = new Error("ric failure"); e.name = "CustomError"; throw e; };
`,
  };

  it("runs a successful handler and keeps state", async () => {
    const env = await startEmulator(
      makeTaskDir(files),
      { _HANDLER: "index.handler" },
      { command: [process.execPath, ricMain] },
    );
    try {
      const r = await invoke(env.url, { via: "ric" }, { "X-Amz-Request-Id": "ric-1" });
      expect(r.status).toBe(200);
      expect(r.headers.get("x-amz-function-error")).toBeNull();
      expect(r.json).toEqual({ ok: true, event: { via: "ric" }, calls: 1, id: "ric-1" });
      const r2 = await invoke(env.url, { via: "ric" }, { "X-Amz-Request-Id": "ric-2" });
      expect(r2.json).toEqual({ ok: true, event: { via: "ric" }, calls: 2, id: "ric-2" });
    } finally {
      await env.close();
    }
  });

  it("reports a handler error as Unhandled with the client's body", async () => {
    const env = await startEmulator(
      makeTaskDir(files),
      { _HANDLER: "index.fails" },
      { command: [process.execPath, ricMain] },
    );
    try {
      const r = await invoke(env.url, {}, { "X-Amz-Request-Id": "ric-err" });
      expect(r.status).toBe(200);
      expect(r.headers.get("x-amz-function-error")).toBe("Unhandled");
      const body = r.json as { errorType: string; errorMessage: string; trace: string[] };
      expect(body.errorType).toBe("CustomError");
      expect(body.errorMessage).toBe("ric failure");
      expect(body.trace[0]).toBe("CustomError: ric failure");
    } finally {
      await env.close();
    }
  });

  it("reports a missing handler as Runtime.HandlerNotFound", async () => {
    const env = await startEmulator(
      makeTaskDir(files),
      { _HANDLER: "index.nope" },
      { command: [process.execPath, ricMain] },
    );
    try {
      const r = await invoke(env.url, {}, { "X-Amz-Request-Id": "ric-init" });
      expect(r.status).toBe(200);
      expect(r.headers.get("x-amz-function-error")).toBe("Unhandled");
      expect((r.json as { errorType: string }).errorType).toBe("Runtime.HandlerNotFound");
    } finally {
      await env.close();
    }
  });
});
