import { request } from "node:http";
import { Pool } from "undici";

/** Path of the invoke endpoint of the worker contract (AWS Runtime Interface Emulator). */
export const WORKER_INVOKE_PATH = "/2015-03-31/functions/function/invocations";

/** Body every bench invocation sends. */
export const BENCH_EVENT = JSON.stringify({ bench: true });

/** Errors that mean "nothing listens yet" while a new worker boots. */
const NOT_YET = new Set(["ECONNREFUSED", "ECONNRESET", "EHOSTUNREACH", "EPIPE"]);

/**
 * POSTs {@link BENCH_EVENT} to the worker at `address` (host:port) on a NEW
 * connection and resolves with the ms from `t0` (a `performance.now()` value)
 * to the first byte of the response (the response head), after checking the
 * status is 200 and reading the body. With `waitListening`, a refused
 * connection (worker still booting) is retried every `retryMs` until
 * `deadlineMs` passes — the client-side view of a cold start.
 */
export async function postFirstByte(
  address: string,
  t0: number,
  opts: { waitListening?: boolean; retryMs?: number; deadlineMs?: number } = {},
): Promise<{ ms: number; body: string }> {
  const deadline = performance.now() + (opts.deadlineMs ?? 30_000);
  const [host, port] = splitAddress(address);
  for (;;) {
    try {
      return await new Promise((resolve, reject) => {
        const req = request(
          {
            host,
            port,
            method: "POST",
            path: WORKER_INVOKE_PATH,
            agent: false,
            headers: { "content-type": "application/json", "content-length": Buffer.byteLength(BENCH_EVENT) },
            timeout: 30_000,
          },
          (res) => {
            const ms = performance.now() - t0;
            const chunks: Buffer[] = [];
            res.on("data", (c: Buffer) => chunks.push(c));
            res.on("end", () => {
              const body = Buffer.concat(chunks).toString("utf8");
              if (res.statusCode !== 200)
                reject(new Error(`worker ${address}: HTTP ${res.statusCode}: ${body.slice(0, 200)}`));
              else resolve({ ms, body });
            });
            res.on("error", reject);
          },
        );
        req.on("timeout", () => req.destroy(new Error(`worker ${address}: no answer within 30 s`)));
        req.on("error", reject);
        req.end(BENCH_EVENT);
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? "";
      if (!opts.waitListening || !NOT_YET.has(code) || performance.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, opts.retryMs ?? 2));
    }
  }
}

/** A keep-alive connection to one HTTP endpoint, for warm (sequential) invocations. */
export class KeepAliveTarget {
  private readonly pool: Pool;

  /** @param origin e.g. `http://10.1.2.3:8080`; `path` is POSTed by {@link timedPost}. */
  constructor(
    origin: string,
    private readonly path: string,
  ) {
    this.pool = new Pool(origin, { connections: 1, pipelining: 1, keepAliveTimeout: 60_000 });
  }

  /** One POST of {@link BENCH_EVENT}; resolves with ms to the response head; throws on non-200. */
  async timedPost(): Promise<number> {
    const t0 = performance.now();
    const res = await this.pool.request({
      path: this.path,
      method: "POST",
      body: BENCH_EVENT,
      headers: { "content-type": "application/json" },
    });
    const ms = performance.now() - t0;
    const body = await res.body.text();
    if (res.statusCode !== 200)
      throw new Error(`POST ${this.path}: HTTP ${res.statusCode}: ${body.slice(0, 200)}`);
    return ms;
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}

/** "host:port" → [host, port]. */
export function splitAddress(address: string): [string, number] {
  const i = address.lastIndexOf(":");
  return [address.slice(0, i), Number(address.slice(i + 1))];
}
