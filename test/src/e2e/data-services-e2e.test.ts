// The data services of `esb up`, real end to end: versitygw (S3) and Dynoxide (DynamoDB) on
// loopback, the proxy on the worker bridge's gateway address, the agent injecting the endpoints
// and credentials, containerd workers whose firewall allows that one port. The functions use
// nothing but the AWS SDK the nodejs runtime image carries.
import { createServer, type Server } from "node:net";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "@jest/globals";
import { InvokeCommand, type LambdaClient } from "@aws-sdk/client-lambda";
import { GetObjectCommand, ListBucketsCommand, S3Client } from "@aws-sdk/client-s3";
import { DynamoDBClient, GetItemCommand } from "@aws-sdk/client-dynamodb";
import { parseDestinations } from "@esb/agent/network/worker-firewall-rules";
import { loadWorkerAwsEnv } from "@esb/agent/worker-aws-env";
import { DataServices, localCredentials } from "@esb/cli/data-services/data-services";
import { createLogger } from "@esb/common";
import { parse } from "yaml";
import { E2eStack, type E2eFunction } from "./e2e-stack.js";
import { SANDBOX_PROBE_CODE } from "./sandbox-probe.js";

/** ESM handler: bare imports of the runtime's SDK, no client options (endpoints and keys from the environment). */
const ESM_CODE = `
import { S3Client, CreateBucketCommand, PutObjectCommand, GetObjectCommand } from "@aws-sdk/client-s3";
import { DynamoDBClient, CreateTableCommand, PutItemCommand, GetItemCommand, waitUntilTableExists } from "@aws-sdk/client-dynamodb";
const s3 = new S3Client({});
const ddb = new DynamoDBClient({});
export const handler = async (event) => {
  const env = { s3: process.env.AWS_ENDPOINT_URL_S3, dynamodb: process.env.AWS_ENDPOINT_URL_DYNAMODB, key: process.env.AWS_ACCESS_KEY_ID };
  await s3.send(new CreateBucketCommand({ Bucket: event.bucket }));
  await s3.send(new PutObjectCommand({ Bucket: event.bucket, Key: "hello.txt", Body: event.text }));
  const got = await s3.send(new GetObjectCommand({ Bucket: event.bucket, Key: "hello.txt" }));
  const object = await got.Body.transformToString();
  await ddb.send(new CreateTableCommand({ TableName: event.table, BillingMode: "PAY_PER_REQUEST",
    AttributeDefinitions: [{ AttributeName: "id", AttributeType: "S" }], KeySchema: [{ AttributeName: "id", KeyType: "HASH" }] }));
  await waitUntilTableExists({ client: ddb, maxWaitTime: 30 }, { TableName: event.table });
  await ddb.send(new PutItemCommand({ TableName: event.table, Item: { id: { S: "1" }, text: { S: event.text } } }));
  const item = await ddb.send(new GetItemCommand({ TableName: event.table, Key: { id: { S: "1" } } }));
  return { env, object, item: item.Item.text.S };
};
`;

/** CommonJS handler: require() of the runtime's SDK (the document client too). */
const CJS_CODE = `
const { DynamoDBClient } = require("@aws-sdk/client-dynamodb");
const { DynamoDBDocumentClient, GetCommand } = require("@aws-sdk/lib-dynamodb");
const doc = DynamoDBDocumentClient.from(new DynamoDBClient({}));
exports.handler = async (event) => {
  const out = await doc.send(new GetCommand({ TableName: event.table, Key: { id: "1" } }));
  return { text: out.Item.text, sdk: require.resolve("@aws-sdk/client-dynamodb"), tslib: require.resolve("tslib") };
};
`;

/**
 * A function that bundles its own copy of a package the runtime's SDK layer also has (tslib; inline
 * file names cannot hold the "@" of "@aws-sdk/..."): its copy must win, as on AWS.
 */
const OWN_SDK_FILES = {
  "index.mjs": `import tslib from "tslib"; export const handler = async () => ({ own: tslib.marker === "bundled" });`,
  "node_modules/tslib/package.json": `{"name":"tslib","version":"0.0.0-own","main":"index.js"}`,
  "node_modules/tslib/index.js": `exports.marker = "bundled";`,
};

/** examples/functions/items-store.yaml as the README serves it. */
async function itemsStoreExample(): Promise<E2eFunction> {
  const path = join(import.meta.dirname, "../../../examples/functions/items-store.yaml");
  const doc = parse(await readFile(path, "utf8")) as {
    metadata: { name: string };
    spec: E2eFunction["spec"];
  };
  return { name: doc.metadata.name, spec: doc.spec };
}

async function invoke(lambda: LambdaClient, name: string, event: unknown): Promise<Record<string, unknown>> {
  const out = await lambda.send(
    new InvokeCommand({ FunctionName: name, Payload: new TextEncoder().encode(JSON.stringify(event)) }),
  );
  const text = new TextDecoder().decode(out.Payload ?? new Uint8Array());
  if (out.FunctionError) throw new Error(`${name} failed: ${text}`);
  return JSON.parse(text) as Record<string, unknown>;
}

describe("data services end to end (runtime SDK in a containerd worker → bridge proxy → versitygw, Dynoxide)", () => {
  const stack = new E2eStack();
  let dir = "";
  let data: DataServices;
  let lambda: LambdaClient;
  let proxy: { host: string; port: number };
  /** A listener on the bridge address at another port: workers must not reach it. */
  let decoy: Server;
  let decoyPort = 0;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "esb-data-e2e-"));
    const progress: string[] = [];
    data = new DataServices({
      stateDir: dir,
      bridge: stack.bridge,
      subnet: stack.subnet,
      s3: "embedded",
      dynamodb: "embedded",
      proxyPort: 0,
      logger: createLogger("data-e2e", { level: process.env.ESB_LOG_LEVEL ?? "warn" }),
      progress: (line) => progress.push(line),
    });
    await data.start();
    const { env, allowedDestination } = data.agentEnv();
    const [host, port] = new URL(data.endpoint!).host.split(":");
    proxy = { host, port: Number(port) };
    expect(allowedDestination).toBe(`${host}/32:${port}`);
    for (const f of await data.figures())
      process.stderr.write(`data service ${f.name}: ready in ${f.startMs} ms, RSS ${f.rssKib} KiB\n`);
    decoy = createServer((s) => s.end("reached"));
    await new Promise<void>((r) => decoy.listen(0, host, r));
    decoyPort = (decoy.address() as { port: number }).port;

    stack.agentOverrides = {
      workerAws: loadWorkerAwsEnv(env),
      workerNetwork: {
        egress: "deny",
        allowedDestinations: parseDestinations(allowedDestination!, "test"),
        deniedDestinations: [],
      },
    };
    await stack.start(
      [
        await itemsStoreExample(),
        {
          name: "data-esm",
          spec: {
            runtime: "nodejs24.x",
            handler: "index.handler",
            timeout: 60,
            code: { inline: { "index.mjs": ESM_CODE } },
          },
        },
        {
          name: "data-cjs",
          spec: {
            runtime: "nodejs22.x",
            handler: "index.handler",
            timeout: 30,
            code: { inline: { "index.js": CJS_CODE } },
          },
        },
        {
          name: "own-sdk",
          spec: { runtime: "nodejs24.x", handler: "index.handler", code: { inline: OWN_SDK_FILES } },
        },
        {
          name: "probe",
          spec: {
            runtime: "nodejs24.x",
            handler: "index.handler",
            timeout: 20,
            code: { inline: { "index.mjs": SANDBOX_PROBE_CODE } },
          },
        },
      ],
      300_000,
    );
    lambda = stack.lambda();
  }, 900_000);

  afterAll(async () => {
    lambda?.destroy();
    await new Promise((r) => (decoy ? decoy.close(r) : r(undefined)));
    try {
      await stack.stop();
      await data?.stop();
    } finally {
      await stack.cleanup();
      await rm(dir, { recursive: true, force: true });
    }
  }, 300_000);

  it("an ESM function puts and gets an S3 object and a DynamoDB item with the runtime's SDK and injected settings", async () => {
    const out = await invoke(lambda, "data-esm", {
      bucket: "e2e-bucket",
      table: "e2e-items",
      text: "hello from a worker",
    });
    const keys = localCredentials(join(dir, "data-services", "credentials"));
    expect(out).toEqual({
      env: { s3: data.endpoint, dynamodb: data.endpoint, key: keys.accessKeyId },
      object: "hello from a worker",
      item: "hello from a worker",
    });
    // The data is in the real servers: read back from this machine through the same proxy.
    const credentials = { accessKeyId: keys.accessKeyId, secretAccessKey: keys.secretAccessKey };
    const s3 = new S3Client({
      endpoint: data.endpoint,
      region: "us-east-1",
      credentials,
      forcePathStyle: true,
    });
    const ddb = new DynamoDBClient({ endpoint: data.endpoint, region: "us-east-1", credentials });
    try {
      const obj = await s3.send(new GetObjectCommand({ Bucket: "e2e-bucket", Key: "hello.txt" }));
      expect(await obj.Body!.transformToString()).toBe("hello from a worker");
      const item = await ddb.send(new GetItemCommand({ TableName: "e2e-items", Key: { id: { S: "1" } } }));
      expect(item.Item?.text?.S).toBe("hello from a worker");
    } finally {
      s3.destroy();
      ddb.destroy();
    }
  });

  it("examples/functions/items-store.yaml stores an item in DynamoDB and its attachment in S3", async () => {
    const created = await fetch(`${stack.endpoint}/store/items`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "pen" }),
    });
    expect(created.status).toBe(201);
    const item = (await created.json()) as { id: string; name: string };
    expect(item.name).toBe("pen");
    const put = await fetch(`${stack.endpoint}/store/items/${item.id}/attachment`, {
      method: "PUT",
      headers: { "content-type": "text/plain" },
      body: "attached text",
    });
    expect(put.status).toBe(200);
    const got = await fetch(`${stack.endpoint}/store/items/${item.id}/attachment`);
    expect(got.status).toBe(200);
    expect(got.headers.get("content-type")).toBe("text/plain");
    expect(await got.text()).toBe("attached text");
    const read = await fetch(`${stack.endpoint}/store/items/${item.id}`);
    expect(await read.json()).toEqual({
      id: item.id,
      name: "pen",
      attachment: { bucket: "item-attachments", key: item.id, contentType: "text/plain" },
    });
    expect((await fetch(`${stack.endpoint}/store/items/no-such-id`)).status).toBe(404);
  });

  it("a CommonJS function requires the runtime's SDK (document client) from /var/runtime/node_modules", async () => {
    // After the ESM test: the table and item exist.
    const out = await invoke(lambda, "data-cjs", { table: "e2e-items" });
    // /var/node_modules is the image's link to /var/runtime/node_modules: the same files. With the
    // runtime client pre-booted in a generic sandbox, require.resolve reports the link's path (why is
    // not understood yet: fs.realpathSync in that process gives the target); a fresh one the target.
    expect(out).toEqual({
      text: "hello from a worker",
      sdk: expect.stringMatching(
        /^\/var\/(runtime\/)?node_modules\/@aws-sdk\/client-dynamodb\/dist-cjs\/index\.js$/,
      ),
      tslib: expect.stringMatching(/^\/var\/(runtime\/)?node_modules\/tslib\/tslib\.js$/),
    });
  });

  it("a function's own node_modules wins over the runtime's SDK layer (which has tslib too, see above)", async () => {
    expect(await invoke(lambda, "own-sdk", {})).toEqual({ own: true });
  });

  it("the S3 server refuses a caller without the local credentials", async () => {
    const s3 = new S3Client({
      endpoint: data.endpoint,
      region: "us-east-1",
      credentials: { accessKeyId: "ESBLNOTAKEY000000000", secretAccessKey: "wrong" },
      forcePathStyle: true,
      maxAttempts: 1,
    });
    try {
      // versitygw names an unknown key XAdminUserNotFound (HTTP 404).
      await expect(s3.send(new ListBucketsCommand({}))).rejects.toMatchObject({
        name: expect.stringMatching(
          /InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|XAdminUserNotFound/,
        ),
      });
    } finally {
      s3.destroy();
    }
  });

  it("a worker reaches the proxy's port on the bridge address and no other port there", async () => {
    const out = await invoke(lambda, "probe", {
      targets: [
        { name: "proxy", host: proxy.host, port: proxy.port },
        { name: "decoy", host: proxy.host, port: decoyPort },
      ],
    });
    const connects = out.connects as Record<string, string>;
    expect(connects.proxy).toBe("connected");
    // The decoy accepts anyone who reaches it: only the worker's firewall keeps this from "connected".
    expect(connects.decoy).not.toBe("connected");
    expect(connects.decoy).toMatch(/EHOSTUNREACH|ECONNREFUSED|EACCES|EPERM|timeout/);
  });
});
