import {
  Agent,
  createServer,
  request,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "@esb/common";
import { AuthFailure, verifySigV4 } from "@esb/gateway/sigv4-verifier";

/** An upstream of the proxy: a server on this machine's loopback. */
export interface ProxyUpstream {
  host: string;
  port: number;
}

/** Options of {@link AwsRouteProxy}. */
export interface AwsRouteProxyOptions {
  /** Address to listen on: the worker bridge's gateway address (never 0.0.0.0). */
  host: string;
  /** Port (0: any free one). */
  port: number;
  /** Where S3 requests go; undefined = S3 is turned off (callers get an error saying so). */
  s3?: ProxyUpstream;
  /** Where DynamoDB requests go; undefined = turned off. */
  dynamodb?: ProxyUpstream;
  /**
   * The one key DynamoDB requests must be signed with (SigV4, checked here:
   * the DynamoDB server checks none). The S3 server checks its own.
   */
  credentials: { accessKeyId: string; secretAccessKey: string };
  logger: Logger;
}

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1) and `expect`, which the proxy answers
 * itself (Node sends `100 Continue`). None is part of an AWS signature: the
 * SDKs never sign them.
 */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "expect",
]);

/**
 * The one port workers reach the data services through (the seed's
 * `local-proxy` on the bridge gateway address): DynamoDB requests (the JSON
 * protocol names its operation in `X-Amz-Target: DynamoDB_20120810.<Op>`) go to
 * the DynamoDB server, every other request to the S3 server. Requests and
 * answers are streamed unchanged (the `Host` header too, so the callers' SigV4
 * signatures stay valid for the servers, which check them); only hop-by-hop
 * headers are dropped. DynamoDB requests are read whole (at most 16 MiB) and
 * their signature checked against `credentials` before they are forwarded.
 * Not a general proxy: absolute-form targets and CONNECT are refused.
 */
export class AwsRouteProxy {
  private server: Server | undefined;
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 64 });

  constructor(private readonly options: AwsRouteProxyOptions) {}

  /** Listens; resolves to the port. */
  async start(): Promise<number> {
    const server = createServer((req, res) => this.forward(req, res));
    // A worker cannot pin a socket forever, nor tunnel through the proxy.
    server.headersTimeout = 30_000;
    server.requestTimeout = 0; // large uploads and downloads take their time
    server.on("connect", (_req, socket) => socket.end("HTTP/1.1 405 Method Not Allowed\r\n\r\n"));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.options.port, this.options.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    return (server.address() as AddressInfo).port;
  }

  /** Stops listening and closes every connection. Idempotent. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.agent.destroy();
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private forward(req: IncomingMessage, res: ServerResponse): void {
    const target = headerValue(req.headers, "x-amz-target") ?? "";
    const isDynamo = target.startsWith("DynamoDB_") || target.startsWith("DynamoDBStreams_");
    const service = isDynamo ? "DynamoDB" : "S3";
    const upstream = isDynamo ? this.options.dynamodb : this.options.s3;
    const url = req.url ?? "/";
    if (!url.startsWith("/"))
      return sendError(res, service, 400, "InvalidRequest", "not a proxy for other hosts");
    if (!upstream)
      return sendError(
        res,
        service,
        503,
        "ServiceUnavailable",
        `${service} is turned off on this ESB (esb up --${isDynamo ? "dynamodb" : "s3"}); point AWS_ENDPOINT_URL_${isDynamo ? "DYNAMODB" : "S3"} at one`,
      );
    if (isDynamo) {
      void this.verifiedDynamo(req, res, upstream);
      return;
    }
    this.send(req, res, upstream, service);
  }

  /** Reads a DynamoDB request, checks its signature, forwards it (or answers the AWS error). */
  private async verifiedDynamo(req: IncomingMessage, res: ServerResponse, upstream: ProxyUpstream) {
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of req) {
        size += (chunk as Buffer).length;
        if (size > MAX_DYNAMODB_BODY)
          return sendError(
            res,
            "DynamoDB",
            413,
            "RequestEntityTooLarge",
            "Request body is larger than 16 MiB",
          );
        chunks.push(chunk as Buffer);
      }
    } catch {
      return; // the caller went away
    }
    const body = Buffer.concat(chunks);
    const { accessKeyId, secretAccessKey } = this.options.credentials;
    try {
      await verifySigV4(
        { method: req.method ?? "POST", url: req.url ?? "/", headers: req.headersDistinct, body },
        (id) =>
          id === accessKeyId ? { accessKeyId, secretAccessKey, namespaces: ["*"], name: id } : undefined,
        "dynamodb",
      );
    } catch (err) {
      if (err instanceof AuthFailure) return sendError(res, "DynamoDB", 400, err.type, err.message);
      throw err;
    }
    this.send(req, res, upstream, "DynamoDB", body);
  }

  private send(
    req: IncomingMessage,
    res: ServerResponse,
    upstream: ProxyUpstream,
    service: "S3" | "DynamoDB",
    body?: Buffer,
  ): void {
    const url = req.url ?? "/";
    const headers: IncomingHttpHeaders = {};
    for (const [name, value] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(name)) headers[name] = value;
    if (body) headers["content-length"] = String(body.length);
    const up = request(
      { host: upstream.host, port: upstream.port, method: req.method, path: url, headers, agent: this.agent },
      (upRes) => {
        const out: IncomingHttpHeaders = {};
        for (const [name, value] of Object.entries(upRes.headers))
          if (!HOP_BY_HOP.has(name)) out[name] = value;
        res.writeHead(upRes.statusCode ?? 502, out);
        upRes.pipe(res);
        upRes.once("error", () => res.destroy());
      },
    );
    up.once("error", (err) => {
      this.options.logger.warn({ err: err.message, service }, "data-service proxy: upstream failed");
      if (!res.headersSent)
        sendError(res, service, 503, "ServiceUnavailable", `the local ${service} server is not answering`);
      else res.destroy();
    });
    // The caller went away: the upstream request goes too (a half-sent upload must not complete).
    res.once("close", () => {
      if (!res.writableFinished) up.destroy();
    });
    if (body) up.end(body);
    else req.pipe(up);
  }
}

/** DynamoDB's own limit on a request (BatchWriteItem, TransactWriteItems). */
const MAX_DYNAMODB_BODY = 16 * 1024 * 1024;

function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** An error in the service's own format, so the SDK surfaces its code and message. */
function sendError(
  res: ServerResponse,
  service: "S3" | "DynamoDB",
  status: number,
  code: string,
  message: string,
): void {
  if (service === "DynamoDB") {
    const body = JSON.stringify({ __type: `com.amazonaws.dynamodb.v20120810#${code}`, message });
    res.writeHead(status, {
      "content-type": "application/x-amz-json-1.0",
      "content-length": Buffer.byteLength(body),
    });
    res.end(body);
    return;
  }
  const escaped = message.replace(/[<>&]/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;" })[c]!);
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${escaped}</Message></Error>`;
  res.writeHead(status, { "content-type": "application/xml", "content-length": Buffer.byteLength(body) });
  res.end(body);
}
