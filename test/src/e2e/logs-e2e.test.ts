// Function logs end to end, as `esb up` wires them: a real VictoriaLogs on loopback with Basic
// auth (as esb up's embedded store runs it), the agent shipping every worker's output, AWS
// SDK invocations through the gateway (with LogType Tail), and `esb logs` run as a process finding
// each invocation's lines by request id: a nodejs24.x function's console and raw lines, and a
// `provided` shell runtime's lines (no request id of their own).
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { InvokeCommand } from "@aws-sdk/client-lambda";
import { VictoriaLogsServer } from "@esb/common/victoria-logs-server";
import { eventually } from "@esb/controller/kube-test-support";
import { E2eStack } from "./e2e-stack.js";

const NODE_CODE = `
export const handler = async (event) => {
  console.log("handled", event.name);
  console.warn("careful", event.name);
  process.stderr.write("raw stderr " + event.name + "\\n");
  return { ok: true };
};
`;

// A custom runtime in busybox sh that prints a line of its own for each event.
const SHELL_BOOTSTRAP = [
  "#!/bin/sh",
  'API="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"',
  "while true; do",
  '  if ! wget -S -q -O /tmp/event "$API/invocation/next" 2>/tmp/headers; then sleep 0.1; continue; fi',
  "  id=$(sed -n 's/^ *[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: *//p' /tmp/headers | tr -d '\\r')",
  '  echo "shell got $(cat /tmp/event)"',
  '  wget -q -O /dev/null --post-data "{}" "$API/invocation/$id/response"',
  "done",
  "",
].join("\n");

const MAIN = join(process.cwd(), "cli", "dist", "main.js");

function esbLogs(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, "logs", ...args], { env: { ...process.env, ...env } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

describe("function logs end to end (gateway, agent, containerd workers, VictoriaLogs, esb logs)", () => {
  const stack = new E2eStack();
  let dir = "";
  let store: VictoriaLogsServer;
  const password = randomBytes(16).toString("hex");
  const creds = { ESB_LOGS_USERNAME: "esb", ESB_LOGS_PASSWORD: password };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "esb-logs-e2e-"));
    await writeFile(join(dir, "password"), password, { mode: 0o600 });
    store = new VictoriaLogsServer({
      dataDir: join(dir, "data"),
      auth: { username: "esb", passwordFile: join(dir, "password") },
    });
    await store.start();
    stack.agentOverrides = { logs: { url: store.url, username: "esb", password } };
    await stack.start([
      {
        name: "logger",
        spec: {
          runtime: "nodejs24.x",
          handler: "index.handler",
          code: { inline: { "index.mjs": NODE_CODE } },
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
    ]);
  }, 600_000);

  afterAll(async () => {
    await stack.stop();
    await store?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** `esb logs` lines (time stripped) of one invocation, once its REPORT line is stored. */
  const linesOf = (fn: string, requestId: string) =>
    eventually(
      `${fn}'s REPORT line for ${requestId} in esb logs`,
      async () => {
        const r = await esbLogs([fn, "--logs-url", store.url, "--request-id", requestId], creds);
        if (r.code !== 0) throw new Error(`esb logs failed: ${r.stderr}`);
        const lines = r.stdout
          .trim()
          .split("\n")
          .map((l) => l.replace(/^\S+ /, ""));
        return lines.some((l) => l.startsWith("REPORT ")) && lines;
      },
      30_000,
    );

  it("shows a Node function's lines of one invocation, the same the Tail carries", async () => {
    const lambda = stack.lambda();
    const out = await lambda.send(
      new InvokeCommand({ FunctionName: "logger", Payload: '{"name":"first"}', LogType: "Tail" }),
    );
    await lambda.send(new InvokeCommand({ FunctionName: "logger", Payload: '{"name":"second"}' }));
    const requestId = out.$metadata.requestId!;
    const tail = Buffer.from(out.LogResult!, "base64").toString();
    const lines = await linesOf("logger", requestId);
    expect(lines[0]).toBe(`START RequestId: ${requestId} Version: $LATEST`);
    expect(lines).toContainEqual(
      expect.stringMatching(new RegExp(`\\t${requestId}\\tINFO\\thandled first$`)),
    );
    expect(lines).toContainEqual(
      expect.stringMatching(new RegExp(`\\t${requestId}\\tWARN\\tcareful first$`)),
    );
    expect(lines).toContain("raw stderr first");
    expect(lines).toContain(`END RequestId: ${requestId}`);
    expect(lines.at(-1)).toMatch(new RegExp(`^REPORT RequestId: ${requestId}\\tDuration: `));
    // Nothing of the other invocation.
    expect(lines.join("\n")).not.toContain("second");
    // The Tail holds the same lines, in the same order.
    expect(tail.trimEnd().split("\n")).toEqual(lines);
    lambda.destroy();
  }, 120_000);

  it("attributes a custom runtime's own lines to the invocation they were written in", async () => {
    const lambda = stack.lambda();
    const out = await lambda.send(new InvokeCommand({ FunctionName: "shell", Payload: '{"n":1}' }));
    const requestId = out.$metadata.requestId!;
    const lines = await linesOf("shell", requestId);
    expect(lines).toContain('shell got {"n":1}');
    lambda.destroy();
  }, 120_000);
});
