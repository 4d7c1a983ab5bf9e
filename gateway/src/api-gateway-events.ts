/**
 * API Gateway Lambda proxy integration: turning an HTTP request into the event
 * (payload format 2.0 of HTTP APIs, or 1.0 as REST APIs send it) and the
 * function's result back into an HTTP response, following AWS's documented rules.
 */
import type { RouteMatch } from "@esb/common";

/** The parts of an HTTP request that go into a proxy event. */
export interface ProxyRequest {
  method: string;
  /** Path as received, without the query string (still URL-encoded). */
  rawPath: string;
  /** Query string without `?` ("" when none). */
  rawQueryString: string;
  /** `IncomingMessage.rawHeaders`: alternating names and values, in order. */
  rawHeaders: string[];
  body: Buffer;
  sourceIp: string;
  requestId: string;
  /** Host of the request, used as `domainName`. */
  domainName: string;
  protocol: string;
  now: Date;
  match: RouteMatch;
}

/** An HTTP response mapped from a function result. */
export interface ProxyResponse {
  statusCode: number;
  /** Header lines in order; `set-cookie` may repeat. */
  headers: [string, string][];
  body: Buffer;
}

const TEXT_TYPES = [
  /^text\//,
  /json/,
  /xml/,
  /^application\/x-www-form-urlencoded/,
  /^application\/javascript/,
  /^application\/graphql/,
  /^application\/ecmascript/,
];

/** True when a body of this content type is sent to the function base64-encoded. */
export function isBinaryContentType(contentType: string | undefined): boolean {
  if (!contentType) return false;
  const type = contentType.split(";")[0].trim().toLowerCase();
  return !TEXT_TYPES.some((re) => re.test(type));
}

function headerMaps(rawHeaders: string[]) {
  const multi: Record<string, string[]> = {};
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i].toLowerCase();
    (multi[name] ??= []).push(rawHeaders[i + 1]);
  }
  return multi;
}

function queryMaps(raw: string) {
  const multi: Record<string, string[]> = {};
  for (const [k, v] of new URLSearchParams(raw)) (multi[k] ??= []).push(v);
  return multi;
}

function bodyFields(body: Buffer, contentType: string | undefined) {
  if (body.length === 0) return { body: undefined, isBase64Encoded: false };
  return isBinaryContentType(contentType)
    ? { body: body.toString("base64"), isBase64Encoded: true }
    : { body: body.toString("utf8"), isBase64Encoded: false };
}

function decodePath(path: string): string {
  try {
    return decodeURIComponent(path);
  } catch {
    return path;
  }
}

/** `12/Mar/2020:19:03:58 +0000`, API Gateway's request time format. */
function clfTime(d: Date): string {
  const months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const p = (n: number) => String(n).padStart(2, "0");
  return `${p(d.getUTCDate())}/${months[d.getUTCMonth()]}/${d.getUTCFullYear()}:${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

/**
 * Payload format 2.0 (HTTP API): lower-case headers with repeated values joined
 * by commas, cookies in `cookies` (not in headers), query values joined by
 * commas, `pathParameters` from the route's `{param}`s.
 */
export function buildHttpApiV2Event(r: ProxyRequest): Record<string, unknown> {
  const multi = headerMaps(r.rawHeaders);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(multi)) if (k !== "cookie") headers[k] = v.join(",");
  const cookies = (multi.cookie ?? [])
    .flatMap((c) => c.split(";"))
    .map((c) => c.trim())
    .filter((c) => c.length > 0);
  const query = queryMaps(r.rawQueryString);
  const queryStringParameters: Record<string, string> = {};
  for (const [k, v] of Object.entries(query)) queryStringParameters[k] = v.join(",");
  const path = decodePath(r.rawPath);
  return {
    version: "2.0",
    routeKey: r.match.route.routeKey,
    rawPath: r.rawPath,
    rawQueryString: r.rawQueryString,
    ...(cookies.length ? { cookies } : {}),
    headers,
    ...(Object.keys(queryStringParameters).length ? { queryStringParameters } : {}),
    requestContext: {
      accountId: "000000000000",
      apiId: "esb",
      domainName: r.domainName,
      domainPrefix: r.domainName.split(".")[0],
      http: {
        method: r.method,
        path,
        protocol: r.protocol,
        sourceIp: r.sourceIp,
        userAgent: headers["user-agent"] ?? "",
      },
      requestId: r.requestId,
      routeKey: r.match.route.routeKey,
      stage: "$default",
      time: clfTime(r.now),
      timeEpoch: r.now.getTime(),
    },
    ...(r.match.pathParameters ? { pathParameters: r.match.pathParameters } : {}),
    ...bodyFields(r.body, headers["content-type"]),
  };
}

/**
 * Payload format 1.0 (REST API style): `headers`/`queryStringParameters` with the
 * last value of each name, `multiValueHeaders`/`multiValueQueryStringParameters`
 * with all values, `null` for absent parts.
 */
export function buildRestApiV1Event(r: ProxyRequest): Record<string, unknown> {
  const multiValueHeaders = headerMaps(r.rawHeaders);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(multiValueHeaders)) headers[k] = v[v.length - 1];
  const multiQuery = queryMaps(r.rawQueryString);
  const query: Record<string, string> = {};
  for (const [k, v] of Object.entries(multiQuery)) query[k] = v[v.length - 1];
  const hasQuery = Object.keys(query).length > 0;
  const path = decodePath(r.rawPath);
  const body = bodyFields(r.body, headers["content-type"]);
  return {
    version: "1.0",
    resource: r.match.route.path,
    path,
    httpMethod: r.method,
    headers,
    multiValueHeaders,
    queryStringParameters: hasQuery ? query : null,
    multiValueQueryStringParameters: hasQuery ? multiQuery : null,
    requestContext: {
      accountId: "000000000000",
      apiId: "esb",
      domainName: r.domainName,
      domainPrefix: r.domainName.split(".")[0],
      extendedRequestId: r.requestId,
      httpMethod: r.method,
      identity: { sourceIp: r.sourceIp, userAgent: headers["user-agent"] ?? null },
      path,
      protocol: r.protocol,
      requestId: r.requestId,
      requestTime: clfTime(r.now),
      requestTimeEpoch: r.now.getTime(),
      resourcePath: r.match.route.path,
      stage: "$default",
    },
    pathParameters: r.match.pathParameters ?? null,
    stageVariables: null,
    body: body.body ?? null,
    isBase64Encoded: body.isBase64Encoded,
  };
}

/**
 * Maps a function result to an HTTP response; `undefined` when the result is
 * malformed (API Gateway then answers 502).
 *
 * A JSON object with `statusCode` is a structured response: statusCode,
 * headers, multiValueHeaders, cookies (→ `set-cookie`, 2.0), body,
 * isBase64Encoded. In format 2.0 any other valid JSON is inferred as
 * `200`, `content-type: application/json`, body = the result as returned.
 * Format 1.0 requires the structured form.
 */
export function mapProxyResponse(payload: Buffer, format: "1.0" | "2.0"): ProxyResponse | undefined {
  let value: unknown;
  const text = payload.toString("utf8");
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  const structured =
    typeof value === "object" && value !== null && !Array.isArray(value) && "statusCode" in value;
  if (!structured) {
    if (format === "1.0") return undefined;
    return { statusCode: 200, headers: [["content-type", "application/json"]], body: Buffer.from(text) };
  }
  const r = value as Record<string, unknown>;
  const statusCode = typeof r.statusCode === "string" ? Number(r.statusCode) : r.statusCode;
  if (typeof statusCode !== "number" || !Number.isInteger(statusCode) || statusCode < 100 || statusCode > 599)
    return undefined;
  const headers: [string, string][] = [];
  if (r.headers !== undefined && r.headers !== null) {
    if (typeof r.headers !== "object" || Array.isArray(r.headers)) return undefined;
    for (const [k, v] of Object.entries(r.headers)) {
      if (v === null || v === undefined) continue;
      headers.push([k.toLowerCase(), String(v)]);
    }
  }
  if (r.multiValueHeaders !== undefined && r.multiValueHeaders !== null) {
    if (typeof r.multiValueHeaders !== "object" || Array.isArray(r.multiValueHeaders)) return undefined;
    for (const [k, values] of Object.entries(r.multiValueHeaders)) {
      if (!Array.isArray(values)) return undefined;
      const name = k.toLowerCase();
      // multiValueHeaders win over headers of the same name, as in API Gateway.
      for (let i = headers.length - 1; i >= 0; i--) if (headers[i][0] === name) headers.splice(i, 1);
      for (const v of values) headers.push([name, String(v)]);
    }
  }
  if (r.cookies !== undefined && r.cookies !== null) {
    if (!Array.isArray(r.cookies)) return undefined;
    for (const c of r.cookies) headers.push(["set-cookie", String(c)]);
  }
  let body = Buffer.alloc(0);
  if (r.body !== undefined && r.body !== null) {
    if (typeof r.body !== "string") return undefined;
    body = r.isBase64Encoded === true ? Buffer.from(r.body, "base64") : Buffer.from(r.body, "utf8");
  }
  if (format === "2.0" && !headers.some(([k]) => k === "content-type") && body.length > 0) {
    headers.push(["content-type", "application/json"]);
  }
  return { statusCode, headers, body };
}
