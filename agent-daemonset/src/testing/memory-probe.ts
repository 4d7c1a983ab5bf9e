import { request } from "node:http";

/**
 * TEST AND BENCH SUPPORT: `index.mjs` of a Node function that probes its memory.
 * Events: `{op:"alloc", mb}` allocates and touches `mb` MiB (1 MiB Buffers) and
 * answers `{ok, mb}`; `{op:"tmp", mb}` writes `mb` MiB to /tmp/probe and answers
 * `{ok, size, mount}` (the /proc/mounts line of /tmp); anything else is echoed.
 */
export const MEMORY_PROBE_HANDLER = `
import { closeSync, openSync, readFileSync, statSync, writeSync } from "node:fs";
export const handler = async (event) => {
  if (event.op === "alloc") {
    const held = [];
    for (let i = 0; i < event.mb; i++) held.push(Buffer.alloc(1 << 20, i & 255));
    return { ok: true, mb: held.length };
  }
  if (event.op === "tmp") {
    const chunk = Buffer.alloc(1 << 20, 7);
    const fd = openSync("/tmp/probe", "w");
    for (let i = 0; i < event.mb; i++) writeSync(fd, chunk);
    closeSync(fd);
    const mount = readFileSync("/proc/mounts", "utf8").split("\\n").find((l) => l.split(" ")[1] === "/tmp");
    return { ok: true, size: statSync("/tmp/probe").size, mount };
  }
  return event;
};
`;

/** What a worker answered to one invocation. */
export interface WorkerInvocation {
  status: number;
  body: string;
  /** `X-Amz-Function-Error`, when set. */
  functionError: string | undefined;
  /** The decoded log tail (`X-Amz-Log-Result`), when asked for. */
  log: string;
}

/**
 * POSTs `event` (an object, or an already serialized string) to a worker's invoke
 * endpoint at `address` (host:port), on a new connection; with `tail` asks for the log tail.
 */
export function invokeWorker(
  address: string,
  event: unknown,
  opts: { tail?: boolean; timeoutMs?: number } = {},
): Promise<WorkerInvocation> {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.split(":").pop())];
  const body = Buffer.from(typeof event === "string" ? event : JSON.stringify(event));
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host,
        port,
        method: "POST",
        path: "/2015-03-31/functions/function/invocations",
        agent: false,
        timeout: opts.timeoutMs ?? 120_000,
        headers: {
          "content-type": "application/json",
          "content-length": body.length,
          ...(opts.tail ? { "x-amz-log-type": "Tail" } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const tail = res.headers["x-amz-log-result"];
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks).toString("utf8"),
            functionError: res.headers["x-amz-function-error"] as string | undefined,
            log: typeof tail === "string" ? Buffer.from(tail, "base64").toString("utf8") : "",
          });
        });
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`invocation of ${address} timed out`)));
    req.on("error", reject);
    req.end(body);
  });
}

/** The figures of the last REPORT line in `log`; throws when there is none. */
export function reportOf(log: string): { memorySizeMb: number; maxMemoryUsedMb: number } {
  const lines = log.split("\n").filter((l) => l.startsWith("REPORT "));
  const last = lines.at(-1);
  const size = /Memory Size: (\d+) MB/.exec(last ?? "");
  const used = /Max Memory Used: (\d+) MB/.exec(last ?? "");
  if (!size || !used) throw new Error(`no REPORT line in the log tail: ${JSON.stringify(log)}`);
  return { memorySizeMb: Number(size[1]), maxMemoryUsedMb: Number(used[1]) };
}
