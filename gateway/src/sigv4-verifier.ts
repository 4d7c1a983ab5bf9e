import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import {
  ALGORITHM_IDENTIFIER,
  SignatureV4Base,
  getCanonicalHeaders,
  getSigningKey,
} from "@smithy/signature-v4";
import { LambdaApiError, type LambdaErrorType } from "./lambda-api-error.js";
import type { GatewayCredential } from "./sigv4-credentials.js";

/**
 * Why a request was refused, the `reason` label of `esb_gateway_auth_failures_total`
 * (a fixed set, so the metric's cardinality stays bounded).
 */
export type AuthFailureReason =
  "missing" | "incomplete" | "unknown_key" | "bad_signature" | "expired" | "access_denied";

/** A refused request: the AWS error the caller gets, and the reason for the metric. */
export class AuthFailure extends LambdaApiError {
  constructor(
    readonly reason: AuthFailureReason,
    type: LambdaErrorType,
    message: string,
    /** The access key id the request named, when it named one (never a secret). */
    readonly accessKeyId?: string,
  ) {
    super(type, message);
  }
}

/** The verified caller of a request. */
export interface Caller {
  credential: GatewayCredential;
  /** `arn:aws:iam::000000000000:user/<name>`, as AWS names the caller in AccessDenied messages. */
  userArn: string;
  /** Region of the Credential scope (ESB serves every region the same). */
  region: string;
}

/** What the verifier needs of a request; `body` is the whole body, already read. */
export interface SignedRequest {
  method: string;
  /** The request target as received (`req.url`): path and query still percent-encoded. */
  url: string;
  /** Every header with all its values (`req.headersDistinct`). */
  headers: Record<string, string[] | undefined> | IncomingHttpHeaders;
  body: Buffer;
}

/** Lambda refuses a signature dated more than 5 minutes from its clock (its own messages say "- 5 min."). */
export const MAX_CLOCK_SKEW_MS = 5 * 60_000;
const MAX_PRESIGNED_EXPIRES_S = 7 * 24 * 3600;
const AMZ_DATE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;
const HEX64 = /^[0-9a-f]{64}$/;
const REGION = /^[a-z0-9-]{1,32}$/;

/**
 * node:crypto as the ChecksumConstructor @smithy/signature-v4 derives signing
 * keys with (the gateway verifies with it; `esb invoke` signs with it).
 */
export class NodeSha256 {
  private hash;
  private readonly secret: Buffer | string | undefined;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.secret =
      secret === undefined || typeof secret === "string"
        ? secret
        : ArrayBuffer.isView(secret)
          ? Buffer.from(secret.buffer, secret.byteOffset, secret.byteLength)
          : Buffer.from(secret);
    this.hash = this.fresh();
  }
  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(this.hash.digest()));
  }
  reset(): void {
    this.hash = this.fresh();
  }
  private fresh() {
    return this.secret === undefined ? createHash("sha256") : createHmac("sha256", this.secret);
  }
}

/**
 * The canonical request and string to sign exactly as the AWS SDK for
 * JavaScript builds them (path normalised and URI-encoded once more, query
 * sorted and encoded, headers trimmed): the SDK's own signer code, reached
 * through its base class, so that ESB and the SDK cannot disagree on a detail.
 */
class Canonicalizer extends SignatureV4Base {
  constructor() {
    super({
      service: "lambda",
      region: "",
      credentials: { accessKeyId: "", secretAccessKey: "" },
      sha256: NodeSha256,
    });
  }
  canonicalRequest(
    method: string,
    path: string,
    query: Record<string, string | string[]>,
    headers: Record<string, string>,
    payloadHash: string,
  ): string {
    const request = { method, path, query, headers, protocol: "http:", hostname: "" };
    return this.createCanonicalRequest(request, headers, payloadHash);
  }
  stringToSign(longDate: string, scope: string, canonicalRequest: string): Promise<string> {
    return this.createStringToSign(longDate, scope, canonicalRequest, ALGORITHM_IDENTIFIER);
  }
}

const canonicalizer = new Canonicalizer();

/** The parts of an `Authorization` header or of presigned query parameters. */
interface SignatureParts {
  accessKeyId: string;
  scope: string[];
  signedHeaders: string[];
  signature: string;
  amzDate: string;
  /** Presigned URLs only: seconds the signature stays valid. */
  expires?: number;
}

/**
 * Verifies an AWS Signature Version 4 (`AWS4-HMAC-SHA256`, in the
 * `Authorization` header or in presigned query parameters) and returns the
 * caller, or throws an {@link AuthFailure} with the error AWS would answer.
 *
 * `service` is the service the Credential scope must name: `lambda` for the
 * Lambda API, `execute-api` for HTTP routes (as API Gateway's IAM auth). The
 * payload hash is always the body's: an `x-amz-content-sha256` header must
 * match it (`UNSIGNED-PAYLOAD` is refused), so a body cannot be swapped.
 */
export async function verifySigV4(
  req: SignedRequest,
  lookup: (accessKeyId: string) => GatewayCredential | undefined,
  service: string,
  now: Date = new Date(),
): Promise<Caller> {
  const q = req.url.indexOf("?");
  const path = q >= 0 ? req.url.slice(0, q) : req.url;
  const query = parseQuery(q >= 0 ? req.url.slice(q + 1) : "");
  const header = (name: string) => {
    const v = req.headers[name];
    return Array.isArray(v) ? v.join(",") : v;
  };
  const parts =
    header("authorization") !== undefined
      ? parseAuthorization(header("authorization")!, header("x-amz-date"))
      : parsePresigned(query);
  const { accessKeyId, scope, signedHeaders, signature, amzDate } = parts;
  const fail = (reason: AuthFailureReason, type: LambdaErrorType, message: string) =>
    new AuthFailure(reason, type, message, accessKeyId);

  const credential = lookup(accessKeyId);
  // ESB keys are long-term: a session token means credentials meant for somewhere else.
  if (
    !credential ||
    header("x-amz-security-token") !== undefined ||
    query["X-Amz-Security-Token"] !== undefined
  )
    throw fail(
      "unknown_key",
      "UnrecognizedClientException",
      "The security token included in the request is invalid.",
    );

  const [scopeDate, region, scopeService, terminator] = scope;
  if (scopeDate !== amzDate.slice(0, 8))
    throw fail(
      "bad_signature",
      "InvalidSignatureException",
      `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '${scopeDate}' != '${amzDate.slice(0, 8)}', from '${amzDate}'.`,
    );
  if (!REGION.test(region))
    throw fail(
      "bad_signature",
      "InvalidSignatureException",
      `Credential should be scoped to a valid region, not '${region}'. `,
    );
  if (scopeService !== service)
    throw fail(
      "bad_signature",
      "InvalidSignatureException",
      `Credential should be scoped to correct service: '${service}'. `,
    );
  if (terminator !== "aws4_request")
    throw fail(
      "bad_signature",
      "InvalidSignatureException",
      `Credential should be scoped with a valid terminator: 'aws4_request', not '${terminator}'. `,
    );
  checkTime(amzDate, parts.expires, now, (message) => fail("expired", "InvalidSignatureException", message));

  const bodyHash = createHash("sha256").update(req.body).digest("hex");
  const claimed = header("x-amz-content-sha256");
  if (claimed !== undefined && claimed !== bodyHash)
    throw fail(
      "bad_signature",
      "InvalidSignatureException",
      "The provided 'x-amz-content-sha256' header does not match what was computed.",
    );

  const headerValues: Record<string, string> = {};
  for (const name of signedHeaders) {
    const v = req.headers[name];
    if (v !== undefined) headerValues[name] = (Array.isArray(v) ? v : [v]).map((s) => s.trim()).join(",");
  }
  // With every signed header declared signable, the SDK's rules only normalise values.
  const canonicalHeaders = getCanonicalHeaders(
    { headers: headerValues } as unknown as Parameters<typeof getCanonicalHeaders>[0],
    undefined,
    new Set(signedHeaders),
  );
  const canonicalRequest = canonicalizer.canonicalRequest(
    req.method,
    path,
    query,
    canonicalHeaders,
    bodyHash,
  );
  const credentialScope = scope.join("/");
  const stringToSign = await canonicalizer.stringToSign(amzDate, credentialScope, canonicalRequest);
  const key = await getSigningKey(NodeSha256, credential, scopeDate, region, scopeService);
  const expected = createHmac("sha256", key).update(stringToSign).digest("hex");
  if (!HEX64.test(signature) || !timingSafeEqual(Buffer.from(signature), Buffer.from(expected)))
    throw fail(
      "bad_signature",
      "InvalidSignatureException",
      "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\n" +
        `The Canonical String for this request should have been\n'${canonicalRequest}'\n\n` +
        `The String-to-Sign should have been\n'${stringToSign}'\n`,
    );
  return { credential, userArn: `arn:aws:iam::000000000000:user/${credential.name}`, region };
}

function incomplete(message: string): AuthFailure {
  return new AuthFailure("incomplete", "IncompleteSignatureException", message);
}

function parseAuthorization(value: string, amzDate: string | undefined): SignatureParts {
  const space = value.indexOf(" ");
  const algorithm = space >= 0 ? value.slice(0, space) : value;
  if (algorithm !== ALGORITHM_IDENTIFIER)
    throw incomplete(
      `Unsupported authorization type ${JSON.stringify(algorithm)}: ESB verifies ${ALGORITHM_IDENTIFIER} (AWS Signature Version 4).`,
    );
  const fields = new Map<string, string>();
  for (const part of value.slice(space + 1).split(",")) {
    const eq = part.indexOf("=");
    if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  const missing = ["Credential", "Signature", "SignedHeaders"].filter((f) => !fields.get(f));
  if (missing.length > 0)
    throw incomplete(missing.map((f) => `Authorization header requires '${f}' parameter.`).join(" "));
  if (amzDate === undefined)
    throw incomplete(
      "Authorization header requires existence of a 'X-Amz-Date' header (ESB does not accept 'Date').",
    );
  return checkParts(
    fields.get("Credential")!,
    fields.get("SignedHeaders")!,
    fields.get("Signature")!,
    amzDate,
    true,
  );
}

function parsePresigned(query: Record<string, string | string[]>): SignatureParts {
  const get = (name: string) => {
    const v = query[name];
    return Array.isArray(v) ? undefined : v;
  };
  const algorithm = get("X-Amz-Algorithm");
  if (algorithm === undefined)
    throw new AuthFailure("missing", "MissingAuthenticationTokenException", "Missing Authentication Token");
  if (algorithm !== ALGORITHM_IDENTIFIER)
    throw incomplete(
      `Unsupported X-Amz-Algorithm ${JSON.stringify(algorithm)}: ESB verifies ${ALGORITHM_IDENTIFIER}.`,
    );
  const missing = [
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
  ].filter((p) => !get(p));
  if (missing.length > 0)
    throw incomplete(missing.map((p) => `AWS query-string parameters must include '${p}'.`).join(" "));
  const expires = Number(get("X-Amz-Expires"));
  if (!Number.isInteger(expires) || expires < 1 || expires > MAX_PRESIGNED_EXPIRES_S)
    throw incomplete(`X-Amz-Expires must be an integer from 1 to ${MAX_PRESIGNED_EXPIRES_S}.`);
  const parts = checkParts(
    get("X-Amz-Credential")!,
    get("X-Amz-SignedHeaders")!,
    get("X-Amz-Signature")!,
    get("X-Amz-Date")!,
    false,
  );
  return { ...parts, expires };
}

function checkParts(
  credential: string,
  signedHeaderList: string,
  signature: string,
  amzDate: string,
  dateIsHeader: boolean,
): SignatureParts {
  const [accessKeyId, ...scope] = credential.split("/");
  if (!accessKeyId || scope.length !== 4)
    throw incomplete(
      `Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '${credential}'`,
    );
  if (!AMZ_DATE.test(amzDate)) throw incomplete(`Date must be in ISO-8601 'basic format'. Got '${amzDate}'.`);
  const signedHeaders = signedHeaderList.split(";");
  // Unsigned, the request could be replayed to another host or (header auth) at another time.
  if (!signedHeaders.includes("host"))
    throw incomplete("'Host' must be a 'SignedHeader' in the AWS Authorization.");
  if (dateIsHeader && !signedHeaders.includes("x-amz-date"))
    throw incomplete("'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.");
  return { accessKeyId, scope, signedHeaders, signature, amzDate };
}

function checkTime(
  amzDate: string,
  expires: number | undefined,
  now: Date,
  fail: (message: string) => AuthFailure,
): void {
  const [, y, mo, d, h, mi, s] = AMZ_DATE.exec(amzDate)!;
  const signed = Date.UTC(+y, +mo - 1, +d, +h, +mi, +s);
  const nowMs = now.getTime();
  if (signed > nowMs + MAX_CLOCK_SKEW_MS)
    throw fail(
      `Signature not yet current: ${amzDate} is still later than ${basic(nowMs + MAX_CLOCK_SKEW_MS)} (${basic(nowMs)} + 5 min.)`,
    );
  if (expires !== undefined) {
    if (nowMs > signed + expires * 1000)
      throw fail(
        `Signature expired: ${amzDate} is now earlier than ${basic(nowMs - expires * 1000)} (${basic(nowMs)} - ${expires} sec.)`,
      );
  } else if (signed < nowMs - MAX_CLOCK_SKEW_MS) {
    throw fail(
      `Signature expired: ${amzDate} is now earlier than ${basic(nowMs - MAX_CLOCK_SKEW_MS)} (${basic(nowMs)} - 5 min.)`,
    );
  }
}

/** A time in ISO-8601 basic format, as in `x-amz-date`. */
function basic(ms: number): string {
  return new Date(ms)
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d{3}/, "");
}

/**
 * The query as the signer saw it: names and values percent-decoded ('+' stays
 * '+': SigV4 clients encode a space as %20), repeated names as lists.
 */
function parseQuery(raw: string): Record<string, string | string[]> {
  const query: Record<string, string | string[]> = Object.create(null);
  for (const pair of raw.split("&")) {
    if (pair === "") continue;
    const eq = pair.indexOf("=");
    const name = decode(eq >= 0 ? pair.slice(0, eq) : pair);
    const value = eq >= 0 ? decode(pair.slice(eq + 1)) : "";
    const prev = query[name];
    query[name] = prev === undefined ? value : [...(Array.isArray(prev) ? prev : [prev]), value];
  }
  return query;
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
