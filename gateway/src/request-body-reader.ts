import type { IncomingMessage } from "node:http";

/** A request body, or the fact that it was larger than allowed. */
export type RequestBody = { tooLarge: false; body: Buffer } | { tooLarge: true };

/**
 * Reads a request body of at most `limit` bytes. A body announced (Content-Length)
 * or found to be larger is not buffered beyond the limit: the rest is discarded
 * as it arrives so the connection stays usable and the caller can still be sent
 * a 413 response.
 */
export function readRequestBody(req: IncomingMessage, limit: number): Promise<RequestBody> {
  const announced = Number(req.headers["content-length"] ?? NaN);
  if (Number.isFinite(announced) && announced > limit) {
    req.resume();
    return Promise.resolve({ tooLarge: true });
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on("data", (chunk: Buffer) => {
      if (over) return;
      size += chunk.length;
      if (size > limit) {
        over = true;
        chunks.length = 0;
        resolve({ tooLarge: true });
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (!over)
        resolve({ tooLarge: false, body: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size) });
    });
    req.on("error", reject);
  });
}
