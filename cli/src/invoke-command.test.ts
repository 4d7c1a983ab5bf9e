// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { GatewayTestHarness, testFunctionManifest } from "@esb/gateway/gateway-test-harness";
import { credentialsFromEnv, invokeFunction } from "./invoke-command.js";

// `esb invoke` against a real gateway that verifies SigV4 (LoopbackTestAgent stand-in for the agent).
const KEY = { accessKeyId: "ESBCLITESTKEY", secretAccessKey: "cli-test-secret-0123456789" };
const gateway = new GatewayTestHarness();
let dir = "";

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "esb-cli-invoke-"));
  const file = join(dir, "keys.yaml");
  await writeFile(
    file,
    `credentials:\n  - accessKeyId: ${KEY.accessKeyId}\n    secretAccessKey: ${KEY.secretAccessKey}\n    namespaces: ["*"]\n`,
    { mode: 0o600 },
  );
  await gateway.start(testFunctionManifest("echo"), { GATEWAY_CREDENTIALS_FILE: file });
});

afterAll(async () => {
  await gateway.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("esb invoke", () => {
  const base = { payload: '{"from":"cli"}', invocationType: "RequestResponse", tail: false };

  it("signs with the AWS variables as the AWS CLI does, and the gateway accepts it", async () => {
    const credentials = credentialsFromEnv({
      AWS_ACCESS_KEY_ID: KEY.accessKeyId,
      AWS_SECRET_ACCESS_KEY: KEY.secretAccessKey,
    });
    const res = await invokeFunction("echo", {
      ...base,
      gateway: gateway.endpoint,
      credentials,
      region: "eu-west-1",
    });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toMatchObject({ event: { from: "cli" }, functionName: "echo" });
  });

  it("gets the gateway's AWS errors unsigned or with a wrong secret", async () => {
    expect(credentialsFromEnv({})).toBeUndefined();
    const unsigned = await invokeFunction("echo", { ...base, gateway: gateway.endpoint });
    expect(unsigned.status).toBe(403);
    expect(unsigned.body).toMatch(/Missing Authentication Token/);
    const wrong = await invokeFunction("echo", {
      ...base,
      gateway: gateway.endpoint,
      credentials: { accessKeyId: KEY.accessKeyId, secretAccessKey: "not-the-secret-0123456789" },
    });
    expect(wrong.status).toBe(403);
    expect(wrong.body).toMatch(/signature we calculated does not match/);
  });
});
