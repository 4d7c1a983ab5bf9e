// The Lambda control-plane API through the real AWS SDK v3 against a real gateway in standalone
// mode: each call is checked in the functions folder (the manifests the controller reads) and
// through Invoke (the registry saw it). Workers are the LoopbackTestAgent's stand-ins; the
// end-to-end test with real workers and the real controller is test/src/e2e/control-api-e2e.test.ts.
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import {
  CreateFunctionCommand,
  DeleteFunctionCommand,
  DeleteFunctionConcurrencyCommand,
  GetFunctionCommand,
  GetFunctionConcurrencyCommand,
  GetFunctionConfigurationCommand,
  GetProvisionedConcurrencyConfigCommand,
  InvokeCommand,
  ListFunctionsCommand,
  ListTagsCommand,
  PutFunctionConcurrencyCommand,
  PutProvisionedConcurrencyConfigCommand,
  TagResourceCommand,
  UntagResourceCommand,
  UpdateFunctionCodeCommand,
  UpdateFunctionConfigurationCommand,
  type LambdaClient,
} from "@aws-sdk/client-lambda";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { parse, parseAllDocuments } from "yaml";
import { ControlApiTestGateway, TEST_KEYS, makeZip } from "./control-api-test-harness.js";
import { testFunctionManifest } from "./gateway-test-harness.js";

const gw = new ControlApiTestGateway();
let lambda: LambdaClient;

/** The error an SDK call failed with: its AWS type and HTTP status. */
async function failure(p: Promise<unknown>): Promise<{ name: string; status?: number; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as { name: string; message: string; $metadata?: { httpStatusCode?: number } };
    return { name: e.name, status: e.$metadata?.httpStatusCode, message: e.message };
  }
  throw new Error("the call succeeded");
}

const manifest = async (name: string) => parse(await readFile(join(gw.dir, `${name}.yaml`), "utf8"));
const codeDirs = async () => (await readdir(join(gw.dir, ".esb-code")).catch(() => [])).sort();
const create = async (name: string, zip: Buffer, extra: Record<string, unknown> = {}) =>
  lambda.send(
    new CreateFunctionCommand({
      FunctionName: name,
      Runtime: "nodejs24.x",
      Handler: "index.handler",
      Role: "arn:aws:iam::000000000000:role/test",
      Code: { ZipFile: zip },
      ...extra,
    }),
  );

beforeAll(async () => {
  await gw.start([testFunctionManifest("handmade"), testFunctionManifest("other")].join("\n---\n"));
  lambda = gw.lambda();
});

afterAll(async () => {
  await gw.stop();
});

describe("CreateFunction (PackageType Zip) and reads", () => {
  it("writes a manifest naming the unpacked code, answers Pending, and Invoke finds the function at once", async () => {
    const zip = await makeZip({
      "index.mjs": "export const handler = async () => 1;",
      "lib/util.mjs": "export const x = 1;",
      bootstrap: ["#!/bin/sh\n", 0o100755],
    });
    const out = await create("hello", zip, { Description: "first", Tags: { team: "a" }, Timeout: 10 });
    expect(out).toMatchObject({
      FunctionName: "hello",
      Runtime: "nodejs24.x",
      Handler: "index.handler",
      Description: "first",
      Timeout: 10,
      MemorySize: 128,
      PackageType: "Zip",
      CodeSize: zip.length,
      State: "Pending",
      LastUpdateStatus: "InProgress",
      Version: "$LATEST",
    });
    expect(out.FunctionArn).toBe("arn:aws:lambda:us-east-1:000000000000:function:default/hello");
    const m = await manifest("hello");
    expect(m).toMatchObject({ kind: "LambdaFunction", metadata: { name: "hello" }, spec: { timeout: 10 } });
    const codePath = m.spec.code.path as string;
    expect(codePath).toMatch(/^\.esb-code\/[0-9a-f]{32}$/);
    expect(await readFile(join(gw.dir, codePath, "lib/util.mjs"), "utf8")).toBe("export const x = 1;");
    expect((await stat(join(gw.dir, codePath, "bootstrap"))).mode & 0o777).toBe(0o755);
    expect((await stat(join(gw.dir, codePath, "index.mjs"))).mode & 0o777).toBe(0o644);
    const inv = await lambda.send(new InvokeCommand({ FunctionName: "hello", Payload: Buffer.from("{}") }));
    expect(inv.StatusCode).toBe(200);
  });

  it("GetFunction, GetFunctionConfiguration and ListFunctions (with paging) show API and hand-written functions", async () => {
    const got = await lambda.send(new GetFunctionCommand({ FunctionName: "hello" }));
    expect(got.Configuration).toMatchObject({ FunctionName: "hello", Description: "first" });
    expect(got.Tags).toEqual({ team: "a" });
    const conf = await lambda.send(new GetFunctionConfigurationCommand({ FunctionName: "handmade" }));
    expect(conf).toMatchObject({ FunctionName: "handmade", Runtime: "nodejs22.x", PackageType: "Zip" });
    const names: string[] = [];
    let marker: string | undefined;
    let pages = 0;
    do {
      const page = await lambda.send(new ListFunctionsCommand({ MaxItems: 2, Marker: marker }));
      expect(page.Functions!.length).toBeLessThanOrEqual(2);
      names.push(...page.Functions!.map((f) => f.FunctionName!));
      marker = page.NextMarker;
      pages++;
    } while (marker);
    expect(names).toEqual(["handmade", "hello", "other"]);
    expect(pages).toBe(2);
  });

  it("PackageType Image: the image becomes spec.image", async () => {
    const out = await lambda.send(
      new CreateFunctionCommand({
        FunctionName: "img",
        PackageType: "Image",
        Role: "arn:aws:iam::000000000000:role/test",
        Code: { ImageUri: "registry.example/fn:1" },
        ImageConfig: { Command: ["app.handler"] },
      }),
    );
    expect(out).toMatchObject({ PackageType: "Image", State: "Pending" });
    expect((await manifest("img")).spec).toMatchObject({
      image: "registry.example/fn:1",
      imageConfig: { command: ["app.handler"] },
    });
    const got = await lambda.send(new GetFunctionCommand({ FunctionName: "img" }));
    expect(got.Code?.ImageUri).toBe("registry.example/fn:1");
  });
});

describe("updates", () => {
  it("UpdateFunctionConfiguration edits the spec; a stale RevisionId is PreconditionFailedException", async () => {
    const before = await lambda.send(new GetFunctionConfigurationCommand({ FunctionName: "hello" }));
    const out = await lambda.send(
      new UpdateFunctionConfigurationCommand({
        FunctionName: "hello",
        MemorySize: 256,
        Environment: { Variables: { GREETING: "hi" } },
        RevisionId: before.RevisionId,
      }),
    );
    expect(out).toMatchObject({ MemorySize: 256, Environment: { Variables: { GREETING: "hi" } } });
    expect(out.RevisionId).not.toBe(before.RevisionId);
    expect((await manifest("hello")).spec).toMatchObject({
      memorySize: 256,
      environment: { variables: { GREETING: "hi" } },
    });
    const stale = await failure(
      lambda.send(
        new UpdateFunctionConfigurationCommand({
          FunctionName: "hello",
          Timeout: 5,
          RevisionId: before.RevisionId,
        }),
      ),
    );
    expect(stale).toMatchObject({ name: "PreconditionFailedException", status: 412 });
  });

  it("a hand-written function is updatable, edited in place in its multi-document file", async () => {
    await lambda.send(new UpdateFunctionConfigurationCommand({ FunctionName: "handmade", Timeout: 42 }));
    const docs = parseAllDocuments(await readFile(join(gw.dir, "functions.yaml"), "utf8")).map((d) =>
      d.toJS(),
    );
    expect(docs.map((d: { metadata: { name: string } }) => d.metadata.name)).toEqual(["handmade", "other"]);
    expect(docs[0].spec.timeout).toBe(42);
    expect(docs[1].spec.timeout).toBeUndefined();
  });

  it("UpdateFunctionCode points the spec at the new code and removes the old", async () => {
    const old = (await manifest("hello")).spec.code.path as string;
    const zip = await makeZip({ "index.mjs": "export const handler = async () => 2;" });
    const out = await lambda.send(new UpdateFunctionCodeCommand({ FunctionName: "hello", ZipFile: zip }));
    expect(out.CodeSize).toBe(zip.length);
    const now = (await manifest("hello")).spec.code.path as string;
    expect(now).not.toBe(old);
    expect(await codeDirs()).toEqual([now.split("/")[1]]);
    const zipped = await failure(
      lambda.send(new UpdateFunctionCodeCommand({ FunctionName: "img", ZipFile: zip })),
    );
    expect(zipped.name).toBe("InvalidParameterValueException");
  });

  it("concurrency, provisioned concurrency and tags map onto the spec and annotations", async () => {
    await lambda.send(
      new PutFunctionConcurrencyCommand({ FunctionName: "hello", ReservedConcurrentExecutions: 5 }),
    );
    expect((await manifest("hello")).spec.reservedConcurrency).toBe(5);
    expect(await lambda.send(new GetFunctionConcurrencyCommand({ FunctionName: "hello" }))).toMatchObject({
      ReservedConcurrentExecutions: 5,
    });
    const pc = await lambda.send(
      new PutProvisionedConcurrencyConfigCommand({
        FunctionName: "hello",
        Qualifier: "$LATEST",
        ProvisionedConcurrentExecutions: 2,
      }),
    );
    expect(pc).toMatchObject({ RequestedProvisionedConcurrentExecutions: 2, Status: "IN_PROGRESS" });
    expect((await manifest("hello")).spec.provisionedConcurrency).toBe(2);
    expect(
      await lambda.send(
        new GetProvisionedConcurrencyConfigCommand({ FunctionName: "hello", Qualifier: "$LATEST" }),
      ),
    ).toMatchObject({ RequestedProvisionedConcurrentExecutions: 2 });
    // Provisioned over reserved: the validator's rule, before anything is written.
    const over = await failure(
      lambda.send(
        new PutFunctionConcurrencyCommand({ FunctionName: "hello", ReservedConcurrentExecutions: 1 }),
      ),
    );
    expect(over.name).toBe("InvalidParameterValueException");
    expect((await manifest("hello")).spec.reservedConcurrency).toBe(5);
    await lambda.send(new DeleteFunctionConcurrencyCommand({ FunctionName: "hello" }));
    expect((await manifest("hello")).spec.reservedConcurrency).toBeUndefined();

    const arn = "arn:aws:lambda:us-east-1:000000000000:function:hello";
    await lambda.send(new TagResourceCommand({ Resource: arn, Tags: { env: "dev", owner: "me" } }));
    expect((await lambda.send(new ListTagsCommand({ Resource: arn }))).Tags).toEqual({
      team: "a",
      env: "dev",
      owner: "me",
    });
    await lambda.send(new UntagResourceCommand({ Resource: arn, TagKeys: ["team", "owner"] }));
    expect((await lambda.send(new ListTagsCommand({ Resource: arn }))).Tags).toEqual({ env: "dev" });
  });
});

describe("bad input gets AWS's errors and changes nothing", () => {
  it("unknown runtime, existing name, missing function, not a zip, a path outside the root", async () => {
    const files = (await readdir(gw.dir)).sort();
    const zip = await makeZip({ "index.mjs": "x" });
    expect(await failure(create("bad-runtime", zip, { Runtime: "cobol85" }))).toMatchObject({
      name: "InvalidParameterValueException",
      status: 400,
    });
    expect(await failure(create("hello", zip))).toMatchObject({
      name: "ResourceConflictException",
      status: 409,
    });
    expect(await failure(create("handmade", zip))).toMatchObject({ name: "ResourceConflictException" });
    expect(await failure(lambda.send(new GetFunctionCommand({ FunctionName: "nope" })))).toMatchObject({
      name: "ResourceNotFoundException",
      status: 404,
    });
    expect(
      await failure(
        lambda.send(new UpdateFunctionConfigurationCommand({ FunctionName: "nope", Timeout: 3 })),
      ),
    ).toMatchObject({ name: "ResourceNotFoundException" });
    expect(await failure(lambda.send(new DeleteFunctionCommand({ FunctionName: "nope" })))).toMatchObject({
      name: "ResourceNotFoundException",
    });
    const notZip = await failure(create("not-zip", Buffer.from("this is not a zip")));
    expect(notZip).toMatchObject({ name: "InvalidParameterValueException" });
    expect(notZip.message).toContain("Could not unzip uploaded file");
    // yazl refuses to write such names: the name is patched in the finished archive (same length).
    const evil = await makeZip({ "xx/xx/etc/evil": "x" });
    const patched = Buffer.from(
      evil.toString("latin1").replaceAll("xx/xx/etc/evil", "../../etc/evil"),
      "latin1",
    );
    const escape = await failure(create("escape", patched));
    expect(escape.name).toBe("InvalidParameterValueException");
    const link = await failure(create("link", await makeZip({ "index.mjs": ["/etc/passwd", 0o120777] })));
    expect(link.message).toContain("symbolic link");
    const bigName = await failure(create("Upper_Case", zip));
    expect(bigName.name).toBe("InvalidParameterValueException");
    const reserved = await failure(create("env", zip, { Environment: { Variables: { AWS_REGION: "x" } } }));
    expect(reserved.name).toBe("InvalidParameterValueException");
    expect((await readdir(gw.dir)).sort()).toEqual(files);
  });

  it("over 250 MB unzipped: InvalidParameterValueException; over the request limit: RequestEntityTooLargeException", async () => {
    const bomb = await makeZip({ "a.bin": Buffer.alloc(251 * 1024 * 1024) });
    const unzipped = await failure(create("bomb", bomb));
    expect(unzipped).toMatchObject({ name: "InvalidParameterValueException" });
    expect(unzipped.message).toContain("Unzipped size must be smaller than 262144000 bytes");
    const huge = await failure(create("huge", Buffer.alloc(53 * 1024 * 1024, 1)));
    expect(huge).toMatchObject({ name: "RequestEntityTooLargeException", status: 413 });
    expect(await codeDirs()).toHaveLength(1);
  }, 120_000);

  it("needs an allowed key: team-a's key may not write the gateway's namespace", async () => {
    const zip = await makeZip({ "index.mjs": "x" });
    const denied = await failure(
      gw.lambda(TEST_KEYS.teamA).send(
        new CreateFunctionCommand({
          FunctionName: "sneaky",
          Runtime: "nodejs24.x",
          Handler: "i.h",
          Role: "arn:aws:iam::000000000000:role/test",
          Code: { ZipFile: zip },
        }),
      ),
    );
    expect(denied).toMatchObject({ name: "AccessDeniedException", status: 403 });
    expect(
      await failure(gw.lambda(TEST_KEYS.teamA).send(new DeleteFunctionCommand({ FunctionName: "hello" }))),
    ).toMatchObject({
      name: "AccessDeniedException",
    });
  });
});

describe("DeleteFunction", () => {
  it("removes the manifest and its code; Invoke then answers ResourceNotFoundException", async () => {
    const out = await lambda.send(new DeleteFunctionCommand({ FunctionName: "hello" }));
    expect(out.$metadata.httpStatusCode).toBe(204);
    await expect(stat(join(gw.dir, "hello.yaml"))).rejects.toThrow();
    expect(await codeDirs()).toEqual([]);
    const inv = await failure(
      lambda.send(new InvokeCommand({ FunctionName: "hello", Payload: Buffer.from("{}") })),
    );
    expect(inv.name).toBe("ResourceNotFoundException");
  });
});
