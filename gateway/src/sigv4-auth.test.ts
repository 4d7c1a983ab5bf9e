import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { GetFunctionCommand, InvokeCommand, LambdaClient } from "@aws-sdk/client-lambda";
import { Sha256 } from "@smithy/core/checksum";
import { SignatureV4 } from "@smithy/signature-v4";
import { GatewayTestHarness, testFunctionManifest } from "./gateway-test-harness.js";

// Gateway auth through the real AWS SDK for JavaScript v3 and the real AWS CLI
// (botocore's own signer), against real gateways (LoopbackTestAgent stand-in).
// Requests the SDKs cannot make (unsigned, presigned, signed for execute-api)
// are made with fetch, signed where needed by @smithy/signature-v4 itself.

const run = promisify(execFile);
const ADMIN = { accessKeyId: "ESBADMINKEY", secretAccessKey: "admin-secret-0123456789" };
const TEAM_A = { accessKeyId: "ESBTEAMAKEY", secretAccessKey: "team-a-secret-0123456789" };
const DEFAULT_ONLY = { accessKeyId: "ESBDEFAULTKEY", secretAccessKey: "default-secret-0123456789" };
const credentialsYaml = (extra = "") =>
  [
    "credentials:",
    `  - accessKeyId: ${ADMIN.accessKeyId}`,
    `    secretAccessKey: ${ADMIN.secretAccessKey}`,
    '    namespaces: ["*"]',
    `  - accessKeyId: ${TEAM_A.accessKeyId}`,
    `    secretAccessKey: ${TEAM_A.secretAccessKey}`,
    "    namespaces: [team-a]",
    "    name: team-a-ci",
    `  - accessKeyId: ${DEFAULT_ONLY.accessKeyId}`,
    `    secretAccessKey: ${DEFAULT_ONLY.secretAccessKey}`,
    "    namespaces: [default]",
    extra,
  ].join("\n");
const MANIFESTS = [
  testFunctionManifest("echo"),
  testFunctionManifest("echo", "", "team-a"),
  testFunctionManifest("items", ["  http:", "    routes:", "      - path: /items/{id}"].join("\n")),
].join("\n---\n");

let dir = "";
let credentialsFile = "";
const invokeScope = new GatewayTestHarness();
const allScope = new GatewayTestHarness();
const authOff = new GatewayTestHarness();
const clients: LambdaClient[] = [];

/** An SDK client without retries (each test asserts what one call gets). */
function client(endpoint: string, credentials = ADMIN, extra: Record<string, unknown> = {}): LambdaClient {
  const c = new LambdaClient({ endpoint, region: "eu-west-1", credentials, maxAttempts: 1, ...extra });
  clients.push(c);
  return c;
}

const payload = (v: unknown) => Buffer.from(JSON.stringify(v));
const json = (p: Uint8Array | undefined) =>
  JSON.parse(Buffer.from(p ?? new Uint8Array()).toString("utf8")) as Record<string, unknown>;
const invokePath = (name: string) => `/2015-03-31/functions/${encodeURIComponent(name)}/invocations`;

/** A fetch request signed by the SDK's signer (header auth, or presigned when `presign`). */
async function signedFetch(
  endpoint: string,
  path: string,
  options: {
    method?: string;
    body?: string;
    service?: string;
    credentials?: typeof ADMIN;
    presign?: boolean;
  } = {},
): Promise<Response> {
  const url = new URL(endpoint + path);
  const signer = new SignatureV4({
    service: options.service ?? "lambda",
    region: "us-east-1",
    credentials: options.credentials ?? ADMIN,
    sha256: Sha256,
  });
  const request = {
    method: options.method ?? "POST",
    protocol: "http:",
    hostname: url.hostname,
    port: Number(url.port),
    path: url.pathname,
    query: Object.fromEntries(url.searchParams),
    headers: { host: url.host, "content-type": "application/json" },
    body: options.body,
  };
  const signed = options.presign ? await signer.presign(request) : await signer.sign(request);
  const query = new URLSearchParams(signed.query as Record<string, string>).toString().replace(/\+/g, "%20");
  return fetch(`${endpoint}${signed.path}${query ? `?${query}` : ""}`, {
    method: signed.method,
    headers: Object.fromEntries(Object.entries(signed.headers).filter(([k]) => k !== "host")),
    body: signed.body as string | undefined,
  });
}

/** `aws lambda invoke` (AWS CLI, botocore's signer) against `endpoint`. */
async function awsCliInvoke(endpoint: string, name: string, credentials: typeof ADMIN, event: unknown) {
  const out = join(dir, `cli-${Date.now()}-${Math.random()}.json`);
  const env = {
    PATH: process.env.PATH ?? "",
    HOME: dir,
    AWS_ACCESS_KEY_ID: credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
    AWS_DEFAULT_REGION: "us-east-1",
    AWS_CONFIG_FILE: join(dir, "no-config"),
    AWS_SHARED_CREDENTIALS_FILE: join(dir, "no-credentials"),
    AWS_MAX_ATTEMPTS: "1",
  };
  const args = ["lambda", "invoke", "--endpoint-url", endpoint, "--function-name", name];
  // Version 2 reads --payload as base64 unless told otherwise; version 1 has no such option.
  if (awsCliVersion.startsWith("aws-cli/2")) args.push("--cli-binary-format", "raw-in-base64-out");
  args.push("--payload", JSON.stringify(event), out);
  try {
    const { stdout } = await run("aws", args, { env, timeout: 60_000 });
    return { ok: true, stdout, result: JSON.parse(await readFile(out, "utf8")) as Record<string, unknown> };
  } catch (err) {
    return { ok: false, stderr: String((err as { stderr?: string }).stderr) };
  }
}

/** `aws --version`'s answer, or "" when the AWS CLI is not installed. */
let awsCliVersion = "";

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "esb-sigv4-test-"));
  credentialsFile = join(dir, "credentials.yaml");
  await writeFile(credentialsFile, credentialsYaml(), { mode: 0o600 });
  const auth = { GATEWAY_CREDENTIALS_FILE: credentialsFile, GATEWAY_CREDENTIALS_RELOAD_MS: "100" };
  await invokeScope.start(MANIFESTS, auth);
  await allScope.start(MANIFESTS, { ...auth, GATEWAY_AUTH_SCOPE: "all" });
  await authOff.start(MANIFESTS);
  awsCliVersion = await run("aws", ["--version"]).then(
    ({ stdout, stderr }) => (stdout || stderr).trim(),
    () => "",
  );
});

afterAll(async () => {
  for (const c of clients) c.destroy();
  await Promise.all([invokeScope.stop(), allScope.stop(), authOff.stop()]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("SigV4 on the Invoke API (AWS SDK v3)", () => {
  it("a valid signature gets 200 and the function's answer", async () => {
    const out = await client(invokeScope.endpoint).send(
      new InvokeCommand({ FunctionName: "echo", Payload: payload({ hello: "signed" }) }),
    );
    expect(out.StatusCode).toBe(200);
    expect(json(out.Payload).event).toEqual({ hello: "signed" });
  });

  it("a key scoped to team-a invokes team-a/echo (namespace/name, encoded in the signed path)", async () => {
    const out = await client(invokeScope.endpoint, TEAM_A).send(
      new InvokeCommand({ FunctionName: "team-a/echo", Payload: payload({ n: 1 }) }),
    );
    expect(out.StatusCode).toBe(200);
    expect(json(out.Payload).event).toEqual({ n: 1 });
  });

  it("a wrong secret gets InvalidSignatureException", async () => {
    const wrong = { ...ADMIN, secretAccessKey: "not-the-secret-0123456789" };
    await expect(
      client(invokeScope.endpoint, wrong).send(
        new InvokeCommand({ FunctionName: "echo", Payload: payload({}) }),
      ),
    ).rejects.toMatchObject({
      name: "InvalidSignatureException",
      message: expect.stringContaining(
        "The request signature we calculated does not match the signature you provided.",
      ),
      $metadata: { httpStatusCode: 403 },
    });
  });

  it("an unknown access key gets UnrecognizedClientException", async () => {
    const unknown = { accessKeyId: "ESBNOSUCHKEY", secretAccessKey: ADMIN.secretAccessKey };
    await expect(
      client(invokeScope.endpoint, unknown).send(
        new InvokeCommand({ FunctionName: "echo", Payload: payload({}) }),
      ),
    ).rejects.toMatchObject({
      name: "UnrecognizedClientException",
      message: "The security token included in the request is invalid.",
      $metadata: { httpStatusCode: 403 },
    });
  });

  it("a function in a namespace the key does not cover gets AccessDeniedException, existing or not", async () => {
    const teamA = client(invokeScope.endpoint, TEAM_A);
    for (const FunctionName of ["echo", "no-such-function"]) {
      await expect(
        teamA.send(new InvokeCommand({ FunctionName, Payload: payload({}) })),
      ).rejects.toMatchObject({
        name: "AccessDeniedException",
        message:
          "User: arn:aws:iam::000000000000:user/team-a-ci is not authorized to perform: lambda:InvokeFunction " +
          `on resource: arn:aws:lambda:eu-west-1:000000000000:function:default/${FunctionName} ` +
          "because no identity-based policy allows the lambda:InvokeFunction action",
        $metadata: { httpStatusCode: 403 },
      });
    }
    await expect(teamA.send(new GetFunctionCommand({ FunctionName: "echo" }))).rejects.toMatchObject({
      name: "AccessDeniedException",
    });
    const own = await teamA.send(new GetFunctionCommand({ FunctionName: "team-a/echo" }));
    expect(own.Configuration?.FunctionName).toBe("echo");
  });

  it("a body changed after signing gets InvalidSignatureException", async () => {
    const c = client(invokeScope.endpoint);
    // After the signer: changes the request as it will be sent.
    const tamper = (next: (args: unknown) => Promise<unknown>) => async (args: unknown) => {
      // Same length, other content: only the payload hash can tell.
      (args as { request: { body: unknown } }).request.body = payload({ n: 2 });
      return next(args);
    };
    c.middlewareStack.addRelativeTo(tamper as never, {
      relation: "after",
      toMiddleware: "httpSigningMiddleware",
      name: "tamperAfterSigning",
    });
    await expect(
      c.send(new InvokeCommand({ FunctionName: "echo", Payload: payload({ n: 1 }) })),
    ).rejects.toMatchObject({
      name: "InvalidSignatureException",
      $metadata: { httpStatusCode: 403 },
    });
  });

  it("a signature dated more than 5 minutes ago gets InvalidSignatureException 'Signature expired'", async () => {
    const late = client(invokeScope.endpoint, ADMIN, { systemClockOffset: -10 * 60_000 });
    await expect(
      late.send(new InvokeCommand({ FunctionName: "echo", Payload: payload({}) })),
    ).rejects.toMatchObject({
      name: "InvalidSignatureException",
      message: expect.stringMatching(
        /^Signature expired: \d{8}T\d{6}Z is now earlier than \d{8}T\d{6}Z \(\d{8}T\d{6}Z - 5 min\.\)$/,
      ),
    });
  });
});

describe("SigV4 without the SDK", () => {
  it("an unsigned request (curl-like) gets 403 MissingAuthenticationTokenException", async () => {
    const res = await fetch(invokeScope.endpoint + invokePath("echo"), { method: "POST", body: "{}" });
    expect(res.status).toBe(403);
    expect(res.headers.get("x-amzn-errortype")).toBe("MissingAuthenticationTokenException");
    expect(await res.json()).toEqual({ Type: "User", message: "Missing Authentication Token" });
  });

  it("a presigned URL (query-string auth) is accepted; changed, it is refused", async () => {
    const ok = await signedFetch(invokeScope.endpoint, invokePath("echo"), {
      body: '{"p":1}',
      presign: true,
    });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as Record<string, unknown>).event).toEqual({ p: 1 });
    const url = new URL(ok.url);
    const other = await fetch(url.href.replace("/functions/echo/", "/functions/other/"), {
      method: "POST",
      body: '{"p":1}',
    });
    expect(other.status).toBe(403);
    expect(other.headers.get("x-amzn-errortype")).toBe("InvalidSignatureException");
  });

  it("/healthz, /readyz and /metrics stay unsigned; refusals are counted by reason", async () => {
    expect((await fetch(`${invokeScope.endpoint}/healthz`)).status).toBe(200);
    const metrics = await (await fetch(`${invokeScope.endpoint}/metrics`)).text();
    expect(metrics).toMatch(/esb_gateway_auth_failures_total\{api="invoke",reason="missing"\} [1-9]/);
    expect(metrics).toMatch(/esb_gateway_auth_failures_total\{api="invoke",reason="bad_signature"\} [1-9]/);
    expect(metrics).toMatch(/esb_gateway_auth_failures_total\{api="invoke",reason="access_denied"\} [1-9]/);
    expect(metrics).not.toContain(ADMIN.secretAccessKey);
    // A denied caller chose that name: no series of its own (labels stay bounded).
    expect(metrics).not.toContain('function="default/no-such-function"');
  });

  it("HTTP routes stay open with scope invokeApi", async () => {
    const res = await fetch(`${invokeScope.endpoint}/items/1`);
    expect(res.status).toBe(200);
  });

  it("with scope all, routes need a signature for execute-api and the route's namespace", async () => {
    const unsigned = await fetch(`${allScope.endpoint}/items/1`);
    expect(unsigned.status).toBe(403);
    expect(unsigned.headers.get("x-amzn-errortype")).toBe("MissingAuthenticationTokenException");
    expect(await unsigned.json()).toEqual({ message: "Missing Authentication Token" });

    const ok = await signedFetch(allScope.endpoint, "/items/1?x=a%20b", {
      method: "GET",
      service: "execute-api",
    });
    expect(ok.status).toBe(200);
    const wrongService = await signedFetch(allScope.endpoint, "/items/1", { method: "GET" });
    expect(wrongService.status).toBe(403);
    expect(((await wrongService.json()) as { message: string }).message).toContain("'execute-api'");

    const denied = await signedFetch(allScope.endpoint, "/items/1", {
      method: "GET",
      service: "execute-api",
      credentials: TEAM_A,
    });
    expect(denied.status).toBe(403);
    expect(denied.headers.get("x-amzn-errortype")).toBe("AccessDeniedException");
    expect(((await denied.json()) as { message: string }).message).toContain("execute-api:Invoke");
    const own = await signedFetch(allScope.endpoint, "/items/1", {
      method: "GET",
      service: "execute-api",
      credentials: DEFAULT_ONLY,
    });
    expect(own.status).toBe(200);
    expect((await fetch(`${allScope.endpoint}/readyz`)).status).toBe(200);
  });

  it("auth off: unsigned calls work as before", async () => {
    const res = await fetch(authOff.endpoint + invokePath("team-a/echo"), {
      method: "POST",
      body: '{"a":1}',
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as Record<string, unknown>).event).toEqual({ a: 1 });
  });

  it("a changed credentials file is picked up; an invalid one is ignored", async () => {
    const added = { accessKeyId: "ESBADDEDKEY", secretAccessKey: "added-secret-0123456789" };
    const extra = [
      `  - accessKeyId: ${added.accessKeyId}`,
      `    secretAccessKey: ${added.secretAccessKey}`,
      '    namespaces: ["default"]',
    ].join("\n");
    await writeFile(credentialsFile, credentialsYaml(extra));
    const c = client(invokeScope.endpoint, added);
    const call = () => c.send(new InvokeCommand({ FunctionName: "echo", Payload: payload({}) }));
    const deadline = Date.now() + 10_000;
    while (
      Date.now() < deadline &&
      !(await call().then(
        () => true,
        () => false,
      ))
    )
      await new Promise((r) => setTimeout(r, 100));
    expect((await call()).StatusCode).toBe(200);

    await writeFile(credentialsFile, "credentials: [{accessKeyId: broken}]");
    await new Promise((r) => setTimeout(r, 500));
    expect((await call()).StatusCode).toBe(200);
  });
});

describe("SigV4 with the AWS CLI (botocore's signer)", () => {
  it("signed with the right key: the function's answer; wrong secret: InvalidSignatureException", async () => {
    if (!awsCliVersion) {
      throw new Error("the AWS CLI (aws) is not on PATH: install it (pip install awscli) to run this test");
    }
    const ok = await awsCliInvoke(invokeScope.endpoint, "team-a/echo", TEAM_A, { cli: true });
    expect(ok).toMatchObject({ ok: true, result: { event: { cli: true } } });
    const wrong = await awsCliInvoke(
      invokeScope.endpoint,
      "echo",
      { ...ADMIN, secretAccessKey: "not-the-secret-0123456789" },
      {},
    );
    expect(wrong.ok).toBe(false);
    expect(wrong.stderr).toContain("InvalidSignatureException");
    const denied = await awsCliInvoke(invokeScope.endpoint, "echo", TEAM_A, {});
    expect(denied.stderr).toContain("AccessDeniedException");
  });
});
