import { Pool, type Dispatcher } from "undici";

/** What a worker answered. */
export interface WorkerResponse {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** The worker did not answer: connection refused or reset, or no answer in time. */
export class WorkerUnreachableError extends Error {
  override name = "WorkerUnreachableError";
  constructor(
    message: string,
    /** True when the worker stayed silent past the deadline (a timeout, not a crash). */
    readonly timedOut: boolean,
  ) {
    super(message);
  }
}

/** Path of the invoke endpoint of the worker contract (AWS Runtime Interface Emulator). */
export const WORKER_INVOKE_PATH = "/2015-03-31/functions/function/invocations";

/**
 * HTTP to workers: one keep-alive undici Pool per worker address, so a warm
 * invocation reuses an open connection. Pools unused for `idleMs` are closed
 * (workers come and go).
 */
export class WorkerHttpClient {
  private readonly pools = new Map<string, { pool: Pool; origin: string; lastUsed: number }>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly idleMs = 120_000) {
    this.sweeper = setInterval(() => this.sweep(), Math.min(idleMs, 60_000));
    this.sweeper.unref();
  }

  /**
   * POSTs `body` to the worker at `address` (`host:port`) and reads the whole
   * answer. Throws {@link WorkerUnreachableError} when the worker refuses or
   * drops the connection, or sends nothing within `timeoutMs`.
   */
  async invoke(
    address: string,
    body: Buffer,
    headers: Record<string, string>,
    timeoutMs: number,
  ): Promise<WorkerResponse> {
    const entry = this.pool(address);
    try {
      return await new Promise<WorkerResponse>((resolve, reject) => {
        // A bare dispatch handler: the whole answer is buffered anyway, so undici's
        // request() stream, async-resource scope and body mixins are per-request cost
        // with no use here.
        const chunks: Buffer[] = [];
        let size = 0;
        let statusCode = 0;
        let responseHeaders: WorkerResponse["headers"] = {};
        const handler: Dispatcher.DispatchHandler = {
          onRequestStart() {},
          onResponseStart(_controller, status, h) {
            if (status < 200) return; // informational (1xx): the answer follows
            statusCode = status;
            responseHeaders = h as WorkerResponse["headers"];
          },
          onResponseData(_controller, chunk) {
            chunks.push(chunk);
            size += chunk.length;
          },
          onResponseEnd() {
            resolve({
              statusCode,
              headers: responseHeaders,
              body: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size),
            });
          },
          onResponseError(_controller, err) {
            reject(err);
          },
        };
        entry.pool.dispatch(
          {
            origin: entry.origin,
            path: WORKER_INVOKE_PATH,
            method: "POST",
            headers,
            body,
            headersTimeout: timeoutMs,
            bodyTimeout: timeoutMs,
          },
          handler,
        );
      });
    } catch (err) {
      const code = (err as { code?: string }).code ?? "";
      const timedOut = code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT";
      // A worker that failed will not come back at this address: drop its connections.
      this.forget(address);
      throw new WorkerUnreachableError(`worker ${address}: ${code || (err as Error).message}`, timedOut);
    } finally {
      entry.lastUsed = Date.now();
    }
  }

  /** Closes the connections to one worker (e.g. after it was replaced). */
  forget(address: string): void {
    const entry = this.pools.get(address);
    if (!entry) return;
    this.pools.delete(address);
    void entry.pool.destroy().catch(() => {});
  }

  /** Closes every connection. */
  async close(): Promise<void> {
    clearInterval(this.sweeper);
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(pools.map((e) => e.pool.close().catch(() => {})));
  }

  private pool(address: string): { pool: Pool; origin: string; lastUsed: number } {
    let entry = this.pools.get(address);
    if (!entry) {
      const origin = address.includes("://") ? address : `http://${address}`;
      entry = {
        pool: new Pool(origin, { connections: 16, pipelining: 1, keepAliveTimeout: 60_000 }),
        origin,
        lastUsed: Date.now(),
      };
      this.pools.set(address, entry);
    }
    return entry;
  }

  private sweep(): void {
    const now = Date.now();
    for (const [address, entry] of this.pools) {
      if (now - entry.lastUsed > this.idleMs) this.forget(address);
    }
  }
}
