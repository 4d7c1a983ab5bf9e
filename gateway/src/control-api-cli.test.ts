// The Lambda control-plane API through the real AWS CLI (botocore's serializers, signer and
// waiters) against a real gateway in standalone mode. The controller's status is stood in for by
// `controllerView` (the real controller: test/src/e2e/control-api-e2e.test.ts).
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { parse } from "yaml";
import type { LambdaFunction } from "@esb/common";
import { ControlApiTestGateway, TEST_KEYS, makeZip } from "./control-api-test-harness.js";
import { LAMBDA_ANNOTATIONS } from "./function-store.js";

const run = promisify(execFile);
const gw = new ControlApiTestGateway();

/** `aws lambda …` with the admin key; resolves with the parsed JSON output, or rejects with stderr. */
async function aws(...args: string[]): Promise<Record<string, unknown>> {
  const env = {
    PATH: process.env.PATH ?? "",
    HOME: gw.dir,
    AWS_ACCESS_KEY_ID: TEST_KEYS.admin.accessKeyId,
    AWS_SECRET_ACCESS_KEY: TEST_KEYS.admin.secretAccessKey,
    AWS_DEFAULT_REGION: "us-east-1",
    AWS_CONFIG_FILE: join(gw.dir, "no-config"),
    AWS_SHARED_CREDENTIALS_FILE: join(gw.dir, "no-credentials"),
    AWS_MAX_ATTEMPTS: "1",
  };
  try {
    const { stdout } = await run(
      "aws",
      ["lambda", ...args, "--endpoint-url", gw.endpoint, "--output", "json"],
      {
        env,
        timeout: 120_000,
      },
    );
    return stdout.trim() ? (JSON.parse(stdout) as Record<string, unknown>) : {};
  } catch (err) {
    throw new Error(String((err as { stderr?: string }).stderr ?? err), { cause: err });
  }
}

/** What the controller would report once it prepared the function as it is now on disk. */
async function controllerReady(name: string, ready: boolean): Promise<void> {
  const m = parse(await readFile(join(gw.dir, `${name}.yaml`), "utf8")) as LambdaFunction;
  gw.controllerView.set(`default/${name}`, {
    ...m,
    metadata: { ...m.metadata, namespace: "default", generation: 1 },
    status: {
      observedGeneration: 1,
      revision: "r1",
      conditions: [
        {
          type: "Ready",
          status: ready ? "True" : "False",
          reason: ready ? "Ready" : "WarmingUp",
          message: ready ? "ready on 1 nodes" : "0 of 1 warm",
          lastTransitionTime: new Date().toISOString(),
          observedGeneration: 1,
        },
      ],
    },
  });
}

let zipFile = "";

beforeAll(async () => {
  await gw.start("");
  zipFile = join(gw.dir, "..", `${gw.dir.split("/").pop()}-fn.zip`);
  await writeFile(zipFile, await makeZip({ "index.mjs": "export const handler = async () => 'cli';" }));
  const { stdout, stderr } = await run("aws", ["--version"]);
  if (!`${stdout}${stderr}`.includes("aws-cli/"))
    throw new Error("the AWS CLI (aws) is not on PATH: install it (pip install awscli) to run this test");
});

afterAll(async () => {
  await gw.stop();
  if (zipFile) await run("rm", ["-f", zipFile]);
});

describe("the AWS CLI", () => {
  it("create-function --zip-file, then wait function-active-v2 until the controller reports Ready", async () => {
    const created = await aws(
      "create-function",
      "--function-name",
      "cli-fn",
      "--runtime",
      "nodejs24.x",
      "--handler",
      "index.handler",
      "--role",
      "arn:aws:iam::000000000000:role/cli",
      "--zip-file",
      `fileb://${zipFile}`,
      "--tags",
      "team=cli",
    );
    expect(created).toMatchObject({
      FunctionName: "cli-fn",
      State: "Pending",
      LastUpdateStatus: "InProgress",
    });
    const waiting = aws("wait", "function-active-v2", "--function-name", "cli-fn");
    await new Promise((r) => setTimeout(r, 1500));
    await controllerReady("cli-fn", true);
    await waiting;
    expect(await aws("get-function-configuration", "--function-name", "cli-fn")).toMatchObject({
      State: "Active",
      LastUpdateStatus: "Successful",
    });
  });

  it("update-function-configuration is InProgress until the controller has the new revision; wait function-updated-v2", async () => {
    const updated = await aws("update-function-configuration", "--function-name", "cli-fn", "--timeout", "9");
    expect(updated).toMatchObject({ Timeout: 9, State: "Active", LastUpdateStatus: "InProgress" });
    const waiting = aws("wait", "function-updated-v2", "--function-name", "cli-fn");
    await new Promise((r) => setTimeout(r, 1500));
    await controllerReady("cli-fn", true);
    await waiting;
    const code = await aws(
      "update-function-code",
      "--function-name",
      "cli-fn",
      "--zip-file",
      `fileb://${zipFile}`,
    );
    expect(code).toMatchObject({ LastUpdateStatus: "InProgress" });
    expect(
      (await readFile(join(gw.dir, "cli-fn.yaml"), "utf8")).includes(LAMBDA_ANNOTATIONS.codeSha256),
    ).toBe(true);
  });

  it("list-functions, concurrency, provisioned concurrency and tags", async () => {
    const list = await aws("list-functions");
    expect((list.Functions as { FunctionName: string }[]).map((f) => f.FunctionName)).toEqual(["cli-fn"]);
    expect(
      await aws(
        "put-function-concurrency",
        "--function-name",
        "cli-fn",
        "--reserved-concurrent-executions",
        "3",
      ),
    ).toEqual({ ReservedConcurrentExecutions: 3 });
    expect(
      await aws(
        "put-provisioned-concurrency-config",
        "--function-name",
        "cli-fn",
        "--qualifier",
        "$LATEST",
        "--provisioned-concurrent-executions",
        "1",
      ),
    ).toMatchObject({ RequestedProvisionedConcurrentExecutions: 1 });
    const arn = "arn:aws:lambda:us-east-1:000000000000:function:cli-fn";
    await aws("tag-resource", "--resource", arn, "--tags", "env=test");
    await aws("untag-resource", "--resource", arn, "--tag-keys", "team");
    expect(await aws("list-tags", "--resource", arn)).toEqual({ Tags: { env: "test" } });
    expect(await aws("get-function", "--function-name", "cli-fn")).toMatchObject({
      Concurrency: { ReservedConcurrentExecutions: 3 },
      Tags: { env: "test" },
    });
  });

  it("errors: ResourceNotFoundException, InvalidParameterValueException, ResourceConflictException", async () => {
    await expect(aws("get-function", "--function-name", "missing")).rejects.toThrow(
      "ResourceNotFoundException",
    );
    const bad = join(gw.dir, "..", `${gw.dir.split("/").pop()}-bad.zip`);
    // The CLI itself refuses a file without a zip directory; this one has one, but its entry's
    // local header is broken (what a truncated or tampered upload looks like).
    const broken = await makeZip({ "index.mjs": "export const handler = async () => 'cli';" });
    broken.writeUInt32LE(0x12345678, 0);
    await writeFile(bad, broken);
    try {
      const create = (name: string, runtime: string, file: string) =>
        aws(
          "create-function",
          "--function-name",
          name,
          "--runtime",
          runtime,
          "--handler",
          "index.handler",
          "--role",
          "r",
          "--zip-file",
          `fileb://${file}`,
        );
      await expect(create("x", "nodejs24.x", bad)).rejects.toThrow(
        /InvalidParameterValueException.*Could not unzip/,
      );
      await expect(create("y", "ruby1.8", zipFile)).rejects.toThrow("InvalidParameterValueException");
      await expect(create("cli-fn", "nodejs24.x", zipFile)).rejects.toThrow("ResourceConflictException");
    } finally {
      await run("rm", ["-f", bad]);
    }
  });

  it("delete-function", async () => {
    await aws("delete-function", "--function-name", "cli-fn");
    await expect(aws("get-function", "--function-name", "cli-fn")).rejects.toThrow(
      "ResourceNotFoundException",
    );
  });
});
