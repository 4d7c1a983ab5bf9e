// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect } from "@jest/globals";
import { Sha256 } from "@smithy/core/checksum";
import { SignatureV4 } from "@smithy/signature-v4";
import { CredentialsFileError, parseCredentials } from "./sigv4-credentials.js";
import { AuthFailure, verifySigV4, type SignedRequest } from "./sigv4-verifier.js";

// The verifier and the credentials file on their own: requests signed by the
// SDK's signer (@smithy/signature-v4), then verified or altered field by field.

const KEY = { accessKeyId: "ESBKEY", secretAccessKey: "secret-0123456789abcdef" };
const credential = { ...KEY, namespaces: ["*"], name: "ESBKEY" };
const lookup = (id: string) => (id === KEY.accessKeyId ? credential : undefined);
const NOW = new Date("2026-03-01T12:00:00Z");

/** A request as the gateway receives it, signed at `at` by the SDK's signer. */
async function signed(at = NOW, body = '{"a":1}'): Promise<SignedRequest> {
  const signer = new SignatureV4({
    service: "lambda",
    region: "us-east-1",
    credentials: KEY,
    sha256: Sha256,
  });
  const out = await signer.sign(
    {
      method: "POST",
      protocol: "http:",
      hostname: "gw",
      path: "/2015-03-31/functions/ns%2Fhello/invocations",
      query: { Qualifier: "$LATEST" },
      headers: { host: "gw:9000", "content-type": "application/json", "x-amz-invocation-type": "Event" },
      body,
    },
    { signingDate: at },
  );
  const headers: Record<string, string[]> = {};
  for (const [k, v] of Object.entries(out.headers)) headers[k.toLowerCase()] = [v];
  return { method: "POST", url: `${out.path}?Qualifier=%24LATEST`, headers, body: Buffer.from(body) };
}

/** The AuthFailure a verification throws (fails the test when it succeeds). */
async function failure(req: SignedRequest, now = NOW): Promise<AuthFailure> {
  const err = await verifySigV4(req, lookup, "lambda", now).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AuthFailure);
  return err as AuthFailure;
}

describe("verifySigV4", () => {
  it("accepts the SDK's signature and names the caller", async () => {
    const caller = await verifySigV4(await signed(), lookup, "lambda", NOW);
    expect(caller).toMatchObject({ userArn: "arn:aws:iam::000000000000:user/ESBKEY", region: "us-east-1" });
  });

  it("refuses a changed signed header, method, query or body", async () => {
    const cases: ((r: SignedRequest) => void)[] = [
      (r) => (r.headers["x-amz-invocation-type"] = ["RequestResponse"]),
      (r) => (r.method = "PUT"),
      (r) => (r.url = r.url.replace("%24LATEST", "1")),
      (r) => (r.body = Buffer.from('{"a":2}')),
    ];
    for (const change of cases) {
      const req = await signed();
      change(req);
      expect(await failure(req)).toMatchObject({
        reason: "bad_signature",
        type: "InvalidSignatureException",
      });
    }
  });

  it("an x-amz-content-sha256 that is not the body's hash (or UNSIGNED-PAYLOAD) is refused", async () => {
    const req = await signed();
    req.headers["x-amz-content-sha256"] = ["UNSIGNED-PAYLOAD"];
    expect((await failure(req)).message).toContain("x-amz-content-sha256");
  });

  it("checks the time: 5 minutes either way", async () => {
    const at = (min: number) => new Date(NOW.getTime() + min * 60_000);
    await expect(verifySigV4(await signed(at(-4)), lookup, "lambda", NOW)).resolves.toBeDefined();
    expect(await failure(await signed(at(-6)))).toMatchObject({
      reason: "expired",
      message:
        "Signature expired: 20260301T115400Z is now earlier than 20260301T115500Z (20260301T120000Z - 5 min.)",
    });
    expect((await failure(await signed(at(6)))).message).toBe(
      "Signature not yet current: 20260301T120600Z is still later than 20260301T120500Z (20260301T120000Z + 5 min.)",
    );
  });

  it("answers malformed or missing auth as AWS does", async () => {
    const bare: SignedRequest = { method: "POST", url: "/x", headers: {}, body: Buffer.alloc(0) };
    expect(await failure(bare)).toMatchObject({
      reason: "missing",
      type: "MissingAuthenticationTokenException",
      message: "Missing Authentication Token",
    });
    expect(await failure({ ...bare, headers: { authorization: ["Bearer abc"] } })).toMatchObject({
      reason: "incomplete",
      type: "IncompleteSignatureException",
    });
    const noDate = await signed();
    delete noDate.headers["x-amz-date"];
    expect((await failure(noDate)).type).toBe("IncompleteSignatureException");
    const session = await signed();
    session.headers["x-amz-security-token"] = ["token"];
    expect((await failure(session)).type).toBe("UnrecognizedClientException");
  });

  it("the Credential scope must name the service, a valid region and the request's date", async () => {
    const req = await signed();
    expect(
      (await verifySigV4(req, lookup, "execute-api", NOW).catch((e: Error) => e)) as Error,
    ).toHaveProperty("message", "Credential should be scoped to correct service: 'execute-api'. ");
    const region = await signed();
    region.headers.authorization = [region.headers.authorization![0].replace("/us-east-1/", "/Bad_Region/")];
    expect((await failure(region)).message).toBe(
      "Credential should be scoped to a valid region, not 'Bad_Region'. ",
    );
    const other = await signed();
    other.headers["x-amz-date"] = ["20260301T120001Z"];
    expect((await failure(other)).type).toBe("InvalidSignatureException");
    const day = await signed();
    day.headers.authorization = [day.headers.authorization![0].replace("/20260301/", "/20260302/")];
    expect((await failure(day)).message).toContain("Date in Credential scope does not match");
  });
});

describe("parseCredentials", () => {
  const entry = (fields: string) => `credentials:\n  - ${fields}`;
  const ok = "accessKeyId: KEY1, secretAccessKey: 0123456789abcdef, namespaces: [a]";

  it("reads YAML and JSON; the name defaults to the access key id", () => {
    const yaml = parseCredentials(entry(`{${ok}, name: ci}`), "f");
    expect(yaml.get("KEY1")).toEqual({
      accessKeyId: "KEY1",
      secretAccessKey: "0123456789abcdef",
      namespaces: ["a"],
      name: "ci",
    });
    const json = parseCredentials(
      JSON.stringify({
        credentials: [{ accessKeyId: "KEY2", secretAccessKey: "x".repeat(16), namespaces: ["*"] }],
      }),
      "f",
    );
    expect(json.get("KEY2")?.name).toBe("KEY2");
  });

  it("refuses typos, short secrets, duplicates and bad namespaces, never quoting a secret", () => {
    const bad: [string, string][] = [
      [entry(`{${ok}, namespace: [b]}`), 'unknown field "namespace"'],
      [
        entry("{accessKeyId: KEY1, secretAccessKey: short-secret, namespaces: [a]}"),
        "at least 16 characters",
      ],
      [`${entry(`{${ok}}`)}\n  - {${ok}}`, "listed twice"],
      [
        entry("{accessKeyId: KEY1, secretAccessKey: 0123456789abcdef, namespaces: [Not_A_Namespace]}"),
        "namespaces",
      ],
      [entry("{accessKeyId: KEY1, secretAccessKey: 0123456789abcdef, namespaces: []}"), "namespaces"],
      [entry("{accessKeyId: K/1, secretAccessKey: 0123456789abcdef, namespaces: [a]}"), "accessKeyId"],
      ["keys: []", '"credentials:" list'],
    ];
    for (const [text, why] of bad) {
      expect(() => parseCredentials(text, "f")).toThrow(CredentialsFileError);
      expect(() => parseCredentials(text, "f")).toThrow(why);
      try {
        parseCredentials(text, "f");
      } catch (err) {
        expect((err as Error).message).not.toMatch(/0123456789abcdef|short-secret/);
      }
    }
  });
});
