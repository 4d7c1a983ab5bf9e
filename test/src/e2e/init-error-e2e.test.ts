// A function whose code cannot initialise is not Ready: its provisioned workers report the
// init error (emulator → agent → controller), the condition says why in AWS's words, and an
// invocation gets the same error type. Fixing the code makes it Ready. Every part is real.
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { InvokeCommand, type LambdaClient } from "@aws-sdk/client-lambda";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { stringify } from "yaml";
import { E2eStack, waitFor } from "./e2e-stack.js";

const manifest = (files: Record<string, string>) =>
  stringify({
    apiVersion: "esb.dev/v1alpha1",
    kind: "LambdaFunction",
    metadata: { name: "broken" },
    spec: {
      runtime: "nodejs24.x",
      handler: "index.handler",
      code: { inline: files },
      provisionedConcurrency: 1,
    },
  });

describe("a function that does not initialise", () => {
  const stack = new E2eStack();
  let lambda: LambdaClient;

  beforeAll(async () => {
    await stack.start([]);
    lambda = stack.lambda();
  }, 600_000);

  afterAll(async () => {
    lambda?.destroy();
    try {
      await stack.stop();
    } finally {
      await stack.cleanup();
    }
  }, 300_000);

  it("is not Ready (InitFailed, with the runtime's error), answers with that error, and is Ready once fixed", async () => {
    // The handler's module is missing: Runtime.ImportModuleError at init.
    await writeFile(
      join(stack.functionsDir, "broken.yaml"),
      manifest({ "other.mjs": "export const x = 1;" }),
    );
    await stack.source.rescan();
    const ready = () =>
      stack.source.get("default/broken")?.status?.conditions?.find((c) => c.type === "Ready");
    await waitFor(() => ready()?.reason === "InitFailed", 120_000, "Ready=False InitFailed").catch((err) => {
      throw new Error(`${(err as Error).message}; Ready is ${JSON.stringify(ready())}`);
    });
    expect(ready()).toMatchObject({ status: "False", reason: "InitFailed" });
    expect(ready()?.message).toMatch(/Runtime\.ImportModuleError: .*Cannot find module 'index'/);

    const out = await lambda.send(
      new InvokeCommand({ FunctionName: "broken", Payload: new TextEncoder().encode("{}") }),
    );
    expect(out.FunctionError).toBe("Unhandled");
    expect(JSON.parse(new TextDecoder().decode(out.Payload))).toMatchObject({
      errorType: "Runtime.ImportModuleError",
    });

    await writeFile(
      join(stack.functionsDir, "broken.yaml"),
      manifest({ "index.mjs": "export const handler = async () => ({ fixed: true });" }),
    );
    await stack.source.rescan();
    await stack.waitReady(["broken"], 120_000);
    const fixed = await lambda.send(
      new InvokeCommand({ FunctionName: "broken", Payload: new TextEncoder().encode("{}") }),
    );
    expect(JSON.parse(new TextDecoder().decode(fixed.Payload))).toEqual({ fixed: true });
  }, 300_000);
});
