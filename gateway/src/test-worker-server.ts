import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * TEST STAND-IN for a worker (a function's execution environment): a real HTTP
 * server on loopback honouring the worker contract
 * (`POST /2015-03-31/functions/function/invocations`, one invocation at a time,
 * `X-Amz-Function-Error: Unhandled` on failure, `X-Amz-Log-Result` with START /
 * END / REPORT lines when asked with `X-Amz-Log-Type: Tail`). Its "function"
 * is driven by the event, so tests can exercise every path:
 *
 * - `{"fail": "message"}` → the function throws (Unhandled error)
 * - `{"crash": true}` → the worker dies mid-invocation (connection dropped, port closed)
 * - `{"sleepMs": n}` → answers after n ms
 * - (for API Gateway events the same keys are read from the JSON request body)
 * - an API Gateway event whose JSON body has `respond` → returns `respond` as is
 * - another API Gateway event → `{statusCode: 200, headers, cookies, body: <the event as JSON>}`
 * - anything else → `{functionName, requestId, clientContext, event, worker}`
 */
export class TestWorkerServer {
  /**
   * Every invocation any test worker started, in order: a record outside the
   * workers (they come and go), so tests can count what ran.
   */
  static readonly calls: { functionName: string; requestId: string; event: unknown }[] = [];
  private readonly server: Server;
  private busy = false;
  /** Invocations served. */
  invocations = 0;

  constructor(readonly functionName: string) {
    this.server = createServer((req, res) => void this.handle(req, res));
  }

  /** Listens on 127.0.0.1 (port 0 = any); resolves with `host:port`. */
  async listen(port = 0): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(port, "127.0.0.1", () => resolve()));
    return `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== "POST" || req.url !== "/2015-03-31/functions/function/invocations") {
      res.writeHead(404).end();
      return;
    }
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    if (this.busy) {
      res
        .writeHead(409, { "content-type": "application/json" })
        .end(JSON.stringify({ errorMessage: "worker busy" }));
      return;
    }
    this.busy = true;
    this.invocations++;
    const started = performance.now();
    const requestId = String(req.headers["x-amz-request-id"] ?? "unknown");
    const event = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}") as Record<string, unknown>;
    TestWorkerServer.calls.push({ functionName: this.functionName, requestId, event });
    const headers: Record<string, string> = { "content-type": "application/json" };
    let result: unknown;
    // For API Gateway events the test drives the function through the JSON request body.
    const isProxyEvent = typeof event.requestContext === "object";
    let driver: Record<string, unknown> = event;
    if (isProxyEvent) {
      try {
        const body = typeof event.body === "string" && !event.isBase64Encoded ? event.body : "";
        const parsed = body ? (JSON.parse(body) as unknown) : undefined;
        driver = typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>) : {};
      } catch {
        driver = {};
      }
    }
    try {
      if (driver.crash) {
        // Die as a crashed runtime does: drop the connection and stop listening.
        this.busy = false;
        res.socket?.destroy();
        await this.close();
        return;
      }
      if (typeof driver.sleepMs === "number")
        await new Promise((r) => setTimeout(r, driver.sleepMs as number));
      if (typeof driver.fail === "string") {
        headers["x-amz-function-error"] = "Unhandled";
        result = {
          errorType: "Error",
          errorMessage: driver.fail,
          stackTrace: ["Error: " + driver.fail, "    at handler (index.js:1:1)"],
        };
      } else if (isProxyEvent) {
        result =
          "respond" in driver
            ? driver.respond
            : {
                statusCode: 200,
                headers: { "x-echo": "yes" },
                cookies: ["session=abc; Path=/", "theme=dark"],
                body: JSON.stringify(event),
              };
      } else {
        const cc = req.headers["x-amz-client-context"];
        result = {
          functionName: this.functionName,
          requestId,
          clientContext:
            typeof cc === "string" ? JSON.parse(Buffer.from(cc, "base64").toString("utf8")) : undefined,
          event,
          worker: (this.server.address() as AddressInfo).port,
        };
      }
      if (req.headers["x-amz-log-type"] === "Tail") {
        const ms = (performance.now() - started).toFixed(2);
        const log =
          `START RequestId: ${requestId} Version: $LATEST\n` +
          `test worker ${this.functionName} handled ${requestId}\n` +
          `END RequestId: ${requestId}\n` +
          `REPORT RequestId: ${requestId}\tDuration: ${ms} ms\tBilled Duration: ${Math.ceil(Number(ms))} ms\tMemory Size: 128 MB\tMax Memory Used: 40 MB\n`;
        headers["x-amz-log-result"] = Buffer.from(log.slice(-4096)).toString("base64");
      }
      const text = JSON.stringify(result);
      res.writeHead(200, headers).end(text);
    } finally {
      this.busy = false;
    }
  }
}
