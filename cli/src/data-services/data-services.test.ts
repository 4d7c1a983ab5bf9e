// esb up's data services against the real servers (versitygw and Dynoxide, built by
// `make data-services`), through the real proxy on a bridge this test creates: routing, signature
// checks, a service turned off, and data and credentials kept across a restart.
import { randomBytes, randomInt } from "node:crypto";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "@jest/globals";
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import {
  CreateTableCommand,
  DynamoDBClient,
  GetItemCommand,
  ListTablesCommand,
  PutItemCommand,
} from "@aws-sdk/client-dynamodb";
import { createLogger } from "@esb/common";
import { DataServices, type DataServiceSetting } from "./data-services.js";

const dir = mkdtempSync(join(tmpdir(), "esb-data-services-"));
const bridge = `esbd${randomBytes(3).toString("hex")}`;
const subnet = `10.${randomInt(200, 250)}.${randomInt(0, 256)}.0/24`;
const log = createLogger("data-services-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });
const running: DataServices[] = [];

async function start(s3: DataServiceSetting = "embedded", dynamodb: DataServiceSetting = "embedded") {
  const ds = new DataServices({
    stateDir: dir,
    bridge,
    subnet,
    s3,
    dynamodb,
    proxyPort: 0,
    logger: log,
    progress: () => {},
  });
  running.push(ds);
  await ds.start();
  const { env } = ds.agentEnv();
  const credentials = {
    accessKeyId: env.WORKER_AWS_ACCESS_KEY_ID,
    secretAccessKey: env.WORKER_AWS_SECRET_ACCESS_KEY,
  };
  const opts = { endpoint: ds.endpoint, region: "us-east-1", maxAttempts: 1 };
  return {
    ds,
    env,
    s3: new S3Client({ ...opts, credentials }),
    ddb: new DynamoDBClient({ ...opts, credentials }),
    wrongDdb: new DynamoDBClient({
      ...opts,
      credentials: { ...credentials, secretAccessKey: "not-the-secret" },
    }),
  };
}

afterAll(async () => {
  for (const ds of running) await ds.stop();
  try {
    execFileSync("ip", ["link", "del", bridge], { stdio: "ignore" });
  } catch {
    // already gone
  }
  rmSync(dir, { recursive: true, force: true });
});

describe("DataServices", () => {
  it("serves S3 and DynamoDB through one proxy port on the bridge address, for the injected key only", async () => {
    const { ds, env, s3, ddb, wrongDdb } = await start();
    try {
      expect(ds.endpoint).toMatch(
        new RegExp(`^http://${subnet.replace(/0\/24$/, "1").replaceAll(".", "\\.")}:\\d+$`),
      );
      expect(env.WORKER_AWS_ENDPOINT_URL_S3).toBe(ds.endpoint);
      expect(env.WORKER_AWS_ENDPOINT_URL_DYNAMODB).toBe(ds.endpoint);
      expect(statSync(join(dir, "data-services", "credentials")).mode & 0o777).toBe(0o600);

      await s3.send(new CreateBucketCommand({ Bucket: "kept" }));
      await s3.send(new PutObjectCommand({ Bucket: "kept", Key: "k", Body: "object body" }));
      await ddb.send(
        new CreateTableCommand({
          TableName: "kept",
          BillingMode: "PAY_PER_REQUEST",
          AttributeDefinitions: [{ AttributeName: "id", AttributeType: "S" }],
          KeySchema: [{ AttributeName: "id", KeyType: "HASH" }],
        }),
      );
      await ddb.send(new PutItemCommand({ TableName: "kept", Item: { id: { S: "1" }, v: { S: "item" } } }));

      // Dynoxide checks no signature: the proxy does, with DynamoDB's own error.
      await expect(wrongDdb.send(new ListTablesCommand({}))).rejects.toMatchObject({
        name: "InvalidSignatureException",
      });
      const figures = await ds.figures();
      expect(figures.map((f) => f.name)).toEqual(["versitygw", "dynoxide"]);
      for (const f of figures)
        process.stderr.write(`${f.name}: ready in ${f.startMs} ms, RSS ${f.rssKib} KiB\n`);
    } finally {
      for (const c of [s3, ddb, wrongDdb]) c.destroy();
      await ds.stop();
    }
  }, 60_000);

  it("keeps data and credentials across a restart", async () => {
    const { ds, s3, ddb } = await start();
    try {
      const obj = await s3.send(new GetObjectCommand({ Bucket: "kept", Key: "k" }));
      expect(await obj.Body!.transformToString()).toBe("object body");
      const item = await ddb.send(new GetItemCommand({ TableName: "kept", Key: { id: { S: "1" } } }));
      expect(item.Item?.v?.S).toBe("item");
    } finally {
      s3.destroy();
      ddb.destroy();
      await ds.stop();
    }
  }, 60_000);

  it("answers a service turned off with the service's own error, and starts nothing when both are elsewhere", async () => {
    const { ds, s3 } = await start("embedded", "off");
    const ddb = new DynamoDBClient({
      endpoint: ds.endpoint,
      region: "us-east-1",
      maxAttempts: 1,
      credentials: { accessKeyId: ds.agentEnv().env.WORKER_AWS_ACCESS_KEY_ID, secretAccessKey: "x" },
    });
    try {
      expect(ds.agentEnv().env.WORKER_AWS_ENDPOINT_URL_DYNAMODB).toBeUndefined();
      await expect(ddb.send(new ListTablesCommand({}))).rejects.toMatchObject({
        name: "ServiceUnavailable",
        message: expect.stringContaining("--dynamodb"),
      });
    } finally {
      s3.destroy();
      ddb.destroy();
      await ds.stop();
    }

    const external = new DataServices({
      stateDir: dir,
      bridge,
      subnet,
      s3: { url: "https://s3.eu-west-1.amazonaws.com" },
      dynamodb: "off",
      workerCredentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "secret", sessionToken: "token" },
      logger: log,
      progress: () => {},
    });
    await external.start();
    expect(external.endpoint).toBeUndefined();
    expect(await external.figures()).toEqual([]);
    expect(external.agentEnv()).toEqual({
      env: {
        WORKER_AWS_ENDPOINT_URL_S3: "https://s3.eu-west-1.amazonaws.com",
        WORKER_AWS_ACCESS_KEY_ID: "AKIDEXAMPLE",
        WORKER_AWS_SECRET_ACCESS_KEY: "secret",
        WORKER_AWS_SESSION_TOKEN: "token",
      },
      allowedDestination: undefined,
    });
    await external.stop();
    expect(
      () =>
        new DataServices({
          stateDir: dir,
          bridge,
          subnet,
          s3: "embedded",
          dynamodb: "off",
          workerCredentials: { accessKeyId: "a", secretAccessKey: "b" },
          logger: log,
          progress: () => {},
        }),
    ).toThrow("worker credentials are the local services' own");
  }, 60_000);
});
