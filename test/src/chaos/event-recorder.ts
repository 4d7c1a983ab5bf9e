import { createServer, type Server } from "node:http";

/**
 * The side effect outside the worker that proves an Event invocation ran: an
 * HTTP server on the worker bridge's host address (allowed through the worker
 * firewall by WORKER_ALLOWED_DESTINATIONS) to which the chaos function POSTs
 * the caller's token before it returns. It counts how often each token
 * arrived; it never answers for the function.
 */
export class EventRecorder {
  /** token → times it was recorded. */
  readonly seen = new Map<string, number>();
  /** token → performance.now() when it was first recorded. */
  readonly firstSeen = new Map<string, number>();
  private server: Server | undefined;

  /** Listens on `host:port`; throws when the address cannot be bound. */
  async listen(host: string, port: number): Promise<void> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const token = Buffer.concat(chunks).toString("utf8").trim();
        if (req.method === "POST" && /^[A-Za-z0-9_-]{1,64}$/.test(token)) {
          this.seen.set(token, (this.seen.get(token) ?? 0) + 1);
          if (!this.firstSeen.has(token)) this.firstSeen.set(token, performance.now());
          res.writeHead(204).end();
        } else {
          res.writeHead(400).end();
        }
      });
    });
    // A worker's connection must never wait on the recorder: no keep-alive bookkeeping needed.
    server.keepAliveTimeout = 1000;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
    this.server = server;
  }

  /** Stops listening and drops open connections. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
