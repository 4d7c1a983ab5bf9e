// The Lambda control-plane API in standalone mode (what `esb up` runs), every part real: the AWS
// CLI creates and updates a function from a zip through the gateway (SigV4 on), the manifest and
// the unpacked code land in the functions folder, the controller (FolderFunctionSource) prepares
// it on a real agent backed by the test containerd, the CLI's own waiters see State and
// LastUpdateStatus move, and the zip's code (with a sub-folder) answers.
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { InvokeCommand, LambdaClient } from "@aws-sdk/client-lambda";
import { execFile } from "node:child_process";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { stringify } from "yaml";
import { createLogger } from "@esb/common";
import { staticTokenSource } from "@esb/common/agent-credentials";
import { StaticAgentDirectory } from "@esb/controller/agent-directory";
import { Controller } from "@esb/controller/controller";
import { FolderFunctionSource } from "@esb/controller/folder-function-source";
import { makeZip } from "@esb/gateway/control-api-test-harness";
import { FolderFunctionRegistry } from "@esb/gateway/folder-function-registry";
import { loadGatewayConfig } from "@esb/gateway/gateway-config";
import { GatewayServer } from "@esb/gateway/gateway-server";
import { StaticAgentDiscovery } from "@esb/gateway/static-agent-discovery";
import { E2eStack, waitFor } from "./e2e-stack.js";

const run = promisify(execFile);
const KEY = { accessKeyId: "ESBSTANDALONE", secretAccessKey: "standalone-control-secret-1" };

const zipOf = (word: string) =>
  makeZip({
    "index.mjs": `import { word } from "./lib/word.mjs";\nexport const handler = async () => ({ word, env: process.env.GREETING ?? null });\n`,
    "lib/word.mjs": `export const word = "${word}";\n`,
  });

describe("Lambda control-plane API standalone (AWS CLI → gateway → functions folder → controller → agent)", () => {
  const stack = new E2eStack();
  let lambda: LambdaClient;
  let zips = "";

  /** `aws lambda …` signed with KEY; resolves with the parsed JSON output (or {}). */
  const aws = async (...args: string[]): Promise<Record<string, unknown>> => {
    const env = {
      PATH: process.env.PATH ?? "",
      HOME: stack.dir,
      AWS_ACCESS_KEY_ID: KEY.accessKeyId,
      AWS_SECRET_ACCESS_KEY: KEY.secretAccessKey,
      AWS_DEFAULT_REGION: "us-east-1",
      AWS_CONFIG_FILE: join(stack.dir, "none"),
      AWS_SHARED_CREDENTIALS_FILE: join(stack.dir, "none"),
    };
    try {
      const { stdout } = await run(
        "aws",
        ["lambda", ...args, "--endpoint-url", stack.endpoint, "--output", "json"],
        { env, timeout: 900_000 },
      );
      return stdout.trim() ? (JSON.parse(stdout) as Record<string, unknown>) : {};
    } catch (err) {
      throw new Error(String((err as { stderr?: string }).stderr ?? err), { cause: err });
    }
  };
  const invoke = async () => {
    const out = await lambda.send(new InvokeCommand({ FunctionName: "zipped", Payload: Buffer.from("{}") }));
    expect(out.FunctionError).toBeUndefined();
    return JSON.parse(Buffer.from(out.Payload!).toString()) as Record<string, unknown>;
  };

  beforeAll(async () => {
    await stack.startAgent();
    stack.functionsDir = join(stack.dir, "functions");
    await mkdir(stack.functionsDir);
    zips = join(stack.dir, "zips");
    await mkdir(zips);
    await writeFile(join(zips, "one.zip"), await zipOf("one"));
    await writeFile(join(zips, "two.zip"), await zipOf("two"));
    const keys = join(stack.dir, "keys.yaml");
    await writeFile(keys, stringify({ credentials: [{ ...KEY, namespaces: ["*"] }] }), { mode: 0o600 });
    const logger = createLogger("control-e2e", { level: stack.logLevel() });
    // As esb up wires them: the controller's view gives GetFunction its State.
    stack.source = new FolderFunctionSource(stack.functionsDir, {
      logger,
      codeSnapshotDir: join(stack.dir, "code-snapshots"),
    });
    const config = loadGatewayConfig({
      GATEWAY_PORT: "0",
      GATEWAY_HOST: "127.0.0.1",
      AGENT_URLS: stack.agentUrl,
      FUNCTIONS_DIR: stack.functionsDir,
      GATEWAY_HEARTBEAT_MS: "200",
      GATEWAY_CREDENTIALS_FILE: keys,
    });
    stack.gateway = new GatewayServer({
      config,
      registry: new FolderFunctionRegistry(stack.functionsDir, config.namespace, logger),
      discovery: new StaticAgentDiscovery(config.agentUrls),
      agentToken: staticTokenSource(stack.agentTokens.gateway),
      functionStatus: (namespace, name) => stack.source.get(`${namespace}/${name}`),
      logger,
    });
    stack.endpoint = `http://127.0.0.1:${await stack.gateway.start()}`;
    stack.controller = new Controller({
      source: stack.source,
      agents: new StaticAgentDirectory([stack.agentUrl]),
      agentToken: staticTokenSource(stack.agentTokens.controller),
      gatewayUrl: stack.endpoint,
      logger,
    });
    await stack.controller.start();
    lambda = new LambdaClient({
      endpoint: stack.endpoint,
      region: "us-east-1",
      credentials: KEY,
      maxAttempts: 1,
    });
  }, 300_000);

  afterAll(async () => {
    lambda?.destroy();
    try {
      await stack.stop();
    } finally {
      await stack.cleanup();
    }
  }, 300_000);

  it("create-function --zip-file; wait function-active-v2; the zip's code answers", async () => {
    const created = await aws(
      "create-function",
      "--function-name",
      "zipped",
      "--runtime",
      "nodejs24.x",
      "--handler",
      "index.handler",
      "--role",
      "arn:aws:iam::000000000000:role/esb",
      "--zip-file",
      `fileb://${join(zips, "one.zip")}`,
    );
    expect(created).toMatchObject({ State: "Pending" });
    expect((await readdir(stack.functionsDir)).filter((f) => f.endsWith(".yaml"))).toEqual(["zipped.yaml"]);
    await aws("wait", "function-active-v2", "--function-name", "zipped");
    expect(await invoke()).toEqual({ word: "one", env: null });
  }, 900_000);

  it("update-function-code and update-function-configuration; wait function-updated-v2 after each", async () => {
    await aws(
      "update-function-code",
      "--function-name",
      "zipped",
      "--zip-file",
      `fileb://${join(zips, "two.zip")}`,
    );
    await aws("wait", "function-updated-v2", "--function-name", "zipped");
    expect(await invoke()).toEqual({ word: "two", env: null });
    expect(await readdir(join(stack.functionsDir, ".esb-code"))).toHaveLength(1);
    const updated = await aws(
      "update-function-configuration",
      "--function-name",
      "zipped",
      "--environment",
      "Variables={GREETING=hi}",
    );
    expect(updated).toMatchObject({ LastUpdateStatus: "InProgress" });
    await aws("wait", "function-updated-v2", "--function-name", "zipped");
    expect(await invoke()).toEqual({ word: "two", env: "hi" });
  }, 900_000);

  it("publish-version keeps running its code after an update; an alias and --qualifier run it", async () => {
    const v1 = await aws("publish-version", "--function-name", "zipped");
    expect(v1).toMatchObject({ Version: "1" });
    await aws(
      "update-function-code",
      "--function-name",
      "zipped",
      "--zip-file",
      `fileb://${join(zips, "one.zip")}`,
    );
    await aws("wait", "function-updated-v2", "--function-name", "zipped");
    await aws("create-alias", "--function-name", "zipped", "--name", "live", "--function-version", "1");
    // The version is a LambdaFunction of its own: the controller prepares it like any other.
    await aws("wait", "function-active-v2", "--function-name", "zipped", "--qualifier", "1");
    expect(await invoke()).toEqual({ word: "one", env: "hi" });
    const viaAlias = await lambda.send(
      new InvokeCommand({ FunctionName: "zipped", Qualifier: "live", Payload: Buffer.from("{}") }),
    );
    expect(viaAlias.ExecutedVersion).toBe("1");
    expect(JSON.parse(Buffer.from(viaAlias.Payload!).toString())).toEqual({ word: "two", env: "hi" });
  }, 900_000);

  it("delete-function removes the manifest, the code and (through the controller) the workers", async () => {
    await aws("delete-function", "--function-name", "zipped");
    expect((await readdir(stack.functionsDir)).filter((f) => f.endsWith(".yaml"))).toEqual([]);
    expect(await readdir(join(stack.functionsDir, ".esb-code"))).toEqual([]);
    await waitFor(
      async () =>
        (await stack.agent.agent.listWorkers({ namespace: "default", name: "zipped" })).length === 0,
      120_000,
      "workers of the deleted function gone",
    );
  }, 180_000);
});
