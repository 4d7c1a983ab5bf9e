// Measures the warm overhead of the emulator + Node runtime client: p50/p90 of a no-op
// invocation through the Invoke endpoint, against the same handler called by a plain
// in-process HTTP server (the least any HTTP worker can do). Not a test: prints figures.
//   node runtime/dist/warm-overhead-bench.js [iterations]
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { Agent, createServer, request } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Emulator } from "./emulator.js";

const iterations = Number(process.argv[2] ?? 2000);
const agent = new Agent({ keepAlive: true, maxSockets: 1 });

function post(port: number, path: string, body: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path,
        method: "POST",
        agent,
        headers: { "Content-Length": Buffer.byteLength(body) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve(Buffer.concat(chunks).toString()));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

async function measure(port: number, path: string): Promise<number[]> {
  for (let i = 0; i < 200; i++) await post(port, path, '{"warm":true}');
  const times: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const t = process.hrtime.bigint();
    await post(port, path, '{"n":1}');
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return times.sort((a, b) => a - b);
}

const pct = (sorted: number[], p: number): string => sorted[Math.floor((sorted.length - 1) * p)].toFixed(3);

const dir = mkdtempSync(join(tmpdir(), "esb-bench-"));
writeFileSync(join(dir, "index.mjs"), "export const handler = async (event) => ({ ok: true, event });\n");
const handler = async (event: unknown): Promise<unknown> => ({ ok: true, event });

const direct = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    void handler(JSON.parse(Buffer.concat(chunks).toString())).then((r) => {
      const body = JSON.stringify(r);
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
      res.end(body);
    });
  });
});
await new Promise<void>((r) => direct.listen(0, "127.0.0.1", r));
const directTimes = await measure((direct.address() as AddressInfo).port, "/");
direct.close();

const emulator = new Emulator({
  invokeHost: "127.0.0.1",
  invokePort: 0,
  runtimeApiPort: 0,
  command: [process.execPath, fileURLToPath(new URL("./node-client-main.js", import.meta.url))],
  env: { ...process.env, LAMBDA_TASK_ROOT: dir, _HANDLER: "index.handler" },
  log: () => undefined,
  memorySource: "process",
});
const addr = await emulator.start();
const emuTimes = await measure(addr.invoke.port, "/2015-03-31/functions/function/invocations");
await emulator.close();
agent.destroy();
rmSync(dir, { recursive: true, force: true });

console.log(`iterations: ${iterations}`);
console.log(
  `direct in-process HTTP handler: p50 ${pct(directTimes, 0.5)} ms, p90 ${pct(directTimes, 0.9)} ms`,
);
console.log(`emulator + node runtime client: p50 ${pct(emuTimes, 0.5)} ms, p90 ${pct(emuTimes, 0.9)} ms`);
console.log(
  `added by emulator + Runtime API hop: p50 ${(Number(pct(emuTimes, 0.5)) - Number(pct(directTimes, 0.5))).toFixed(3)} ms`,
);
