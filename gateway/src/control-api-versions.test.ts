// Versions and aliases through the real AWS SDK v3 against a real gateway (standalone): a published
// version is a LambdaFunction of its own in the functions folder, Invoke with a version or alias
// runs that object (the LoopbackTestAgent's workers echo which), and X-Amz-Executed-Version says so.
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import {
  CreateAliasCommand,
  CreateFunctionCommand,
  DeleteAliasCommand,
  DeleteFunctionCommand,
  GetAliasCommand,
  GetFunctionConfigurationCommand,
  InvokeCommand,
  ListAliasesCommand,
  ListFunctionsCommand,
  ListVersionsByFunctionCommand,
  PublishVersionCommand,
  PutProvisionedConcurrencyConfigCommand,
  UpdateAliasCommand,
  UpdateFunctionCodeCommand,
  type LambdaClient,
} from "@aws-sdk/client-lambda";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { parse } from "yaml";
import { ControlApiTestGateway, makeZip } from "./control-api-test-harness.js";

const gw = new ControlApiTestGateway();
let lambda: LambdaClient;

async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as Error).name;
  }
  throw new Error("the call succeeded");
}

/** Invokes `hello` with `qualifier`: which LambdaFunction ran, and the executed version. */
async function invoke(qualifier?: string): Promise<{ ran: string; version?: string }> {
  const out = await lambda.send(
    new InvokeCommand({ FunctionName: "hello", Qualifier: qualifier, Payload: Buffer.from("{}") }),
  );
  const body = JSON.parse(Buffer.from(out.Payload!).toString()) as { functionName: string };
  return { ran: body.functionName, version: out.ExecutedVersion };
}

beforeAll(async () => {
  await gw.start("");
  lambda = gw.lambda();
  await lambda.send(
    new CreateFunctionCommand({
      FunctionName: "hello",
      Runtime: "nodejs24.x",
      Handler: "index.handler",
      Role: "arn:aws:iam::000000000000:role/test",
      Code: { ZipFile: await makeZip({ "index.mjs": "// one" }) },
    }),
  );
});

afterAll(async () => {
  await gw.stop();
});

describe("versions", () => {
  it("PublishVersion copies the function into hello.v1 (again unchanged: the same version), then v2 after a code update", async () => {
    const v1 = await lambda.send(new PublishVersionCommand({ FunctionName: "hello", Description: "first" }));
    expect(v1).toMatchObject({ FunctionName: "hello", Version: "1", Description: "first" });
    expect(v1.FunctionArn).toBe("arn:aws:lambda:us-east-1:000000000000:function:default/hello:1");
    expect((await lambda.send(new PublishVersionCommand({ FunctionName: "hello" }))).Version).toBe("1");
    const m = parse(await readFile(join(gw.dir, "hello.v1.yaml"), "utf8"));
    expect(m.metadata.annotations["lambda.esb.dev/version-of"]).toBe("hello");
    await lambda.send(
      new UpdateFunctionCodeCommand({
        FunctionName: "hello",
        ZipFile: await makeZip({ "index.mjs": "// two" }),
      }),
    );
    expect((await lambda.send(new PublishVersionCommand({ FunctionName: "hello" }))).Version).toBe("2");
    // Both versions' code is kept; the function and its versions name different folders.
    expect(await readdir(join(gw.dir, ".esb-code"))).toHaveLength(2);
    const versions = await lambda.send(new ListVersionsByFunctionCommand({ FunctionName: "hello" }));
    expect(versions.Versions?.map((v) => v.Version)).toEqual(["$LATEST", "1", "2"]);
    // Versions are not functions of their own in ListFunctions.
    const list = await lambda.send(new ListFunctionsCommand({}));
    expect(list.Functions?.map((f) => f.FunctionName)).toEqual(["hello"]);
    const conf = await lambda.send(
      new GetFunctionConfigurationCommand({ FunctionName: "hello", Qualifier: "1" }),
    );
    expect(conf).toMatchObject({ Version: "1", Description: "first" });
  });

  it("Invoke with a version runs that version's LambdaFunction and says so", async () => {
    expect(await invoke()).toEqual({ ran: "hello", version: "$LATEST" });
    expect(await invoke("1")).toEqual({ ran: "hello.v1", version: "1" });
    expect(await invoke("2")).toEqual({ ran: "hello.v2", version: "2" });
    expect(await failure(invoke("9"))).toBe("ResourceNotFoundException");
  });

  it("UpdateFunctionCode with Publish: true publishes version 3 and answers it", async () => {
    const out = await lambda.send(
      new UpdateFunctionCodeCommand({
        FunctionName: "hello",
        ZipFile: await makeZip({ "index.mjs": "// three" }),
        Publish: true,
      }),
    );
    expect(out.Version).toBe("3");
    expect(await invoke("3")).toEqual({ ran: "hello.v3", version: "3" });
    await lambda.send(new DeleteFunctionCommand({ FunctionName: "hello", Qualifier: "3" }));
  });
});

describe("aliases", () => {
  it("an alias with weighted routing runs both versions; updated, it runs one", async () => {
    const alias = await lambda.send(
      new CreateAliasCommand({
        FunctionName: "hello",
        Name: "live",
        FunctionVersion: "1",
        RoutingConfig: { AdditionalVersionWeights: { "2": 0.5 } },
      }),
    );
    expect(alias.AliasArn).toBe("arn:aws:lambda:us-east-1:000000000000:function:default/hello:live");
    const seen = new Set<string>();
    for (let i = 0; i < 40; i++) {
      const r = await invoke("live");
      expect(r.ran).toBe(`hello.v${r.version}`);
      seen.add(r.version!);
    }
    // 40 draws at 50 %: both appear unless the weight is ignored (chance of a false failure 2^-39).
    expect([...seen].sort()).toEqual(["1", "2"]);
    await lambda.send(
      new UpdateAliasCommand({
        FunctionName: "hello",
        Name: "live",
        FunctionVersion: "2",
        RoutingConfig: {},
      }),
    );
    const got = await lambda.send(new GetAliasCommand({ FunctionName: "hello", Name: "live" }));
    expect(got).toMatchObject({ FunctionVersion: "2" });
    for (let i = 0; i < 5; i++) expect(await invoke("live")).toEqual({ ran: "hello.v2", version: "2" });
    expect(
      (await lambda.send(new ListAliasesCommand({ FunctionName: "hello" }))).Aliases?.map((a) => a.Name),
    ).toEqual(["live"]);
  });

  it("provisioned concurrency on an alias lands on its version; errors are AWS's", async () => {
    await lambda.send(
      new PutProvisionedConcurrencyConfigCommand({
        FunctionName: "hello",
        Qualifier: "live",
        ProvisionedConcurrentExecutions: 1,
      }),
    );
    expect(parse(await readFile(join(gw.dir, "hello.v2.yaml"), "utf8")).spec.provisionedConcurrency).toBe(1);
    expect(
      await failure(
        lambda.send(new CreateAliasCommand({ FunctionName: "hello", Name: "live", FunctionVersion: "1" })),
      ),
    ).toBe("ResourceConflictException");
    expect(
      await failure(
        lambda.send(new CreateAliasCommand({ FunctionName: "hello", Name: "x", FunctionVersion: "7" })),
      ),
    ).toBe("ResourceNotFoundException");
    // A version an alias uses cannot be deleted; after DeleteAlias it can.
    expect(
      await failure(lambda.send(new DeleteFunctionCommand({ FunctionName: "hello", Qualifier: "2" }))),
    ).toBe("ResourceConflictException");
    await lambda.send(new DeleteAliasCommand({ FunctionName: "hello", Name: "live" }));
    await lambda.send(new DeleteFunctionCommand({ FunctionName: "hello", Qualifier: "2" }));
    expect(await failure(invoke("2"))).toBe("ResourceNotFoundException");
  });

  it("DeleteFunction removes the function, its versions and their code", async () => {
    await lambda.send(new DeleteFunctionCommand({ FunctionName: "hello" }));
    expect((await readdir(gw.dir)).filter((f) => f.endsWith(".yaml"))).toEqual(["functions.yaml"]);
    expect(await readdir(join(gw.dir, ".esb-code"))).toEqual([]);
  });
});
