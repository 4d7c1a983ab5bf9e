/**
 * Benchmark (not a test): the gateway's warm-invocation overhead over a direct
 * POST to the worker, p50/p99 in the same run.
 *
 *   [GATEWAY_WARM_HOLD_MS=50] node gateway/dist/bench/warm-overhead-bench.js [iterations]
 *
 * Three processes on loopback: the agent stand-in ({@link LoopbackTestAgent},
 * whose workers are HTTP servers honouring the worker contract), the real
 * gateway (`dist/main.js`), and this client. Requests alternate between the
 * gateway and the worker directly, both over keep-alive connections, so both
 * see the same machine conditions. Until the real agent exists this measures
 * the gateway's own cost (AcquireWorker round trip + proxying), which is what
 * the "warm invoke overhead" target is about.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AgentService } from "@esb/common/gen/esb/agent/v1/agent_pb";
import { Pool } from "undici";
import { LoopbackTestAgent } from "../loopback-test-agent.js";

const here = fileURLToPath(new URL(".", import.meta.url));

async function runAgent(): Promise<void> {
  const agent = new LoopbackTestAgent();
  const url = await agent.listen();
  process.stdout.write(`AGENT ${url}\n`);
  process.once("SIGTERM", () => void agent.close().then(() => process.exit(0)));
}

function agentUrlOf(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.on("line", (line) => {
      if (line.startsWith("AGENT ")) resolve(line.slice("AGENT ".length).trim());
    });
    child.once("exit", (code) => reject(new Error(`agent exited with ${code}`)));
  });
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function timed(pool: Pool, path: string, body: string): Promise<number> {
  const t0 = performance.now();
  const res = await pool.request({
    path,
    method: "POST",
    body,
    headers: { "content-type": "application/json" },
  });
  await res.body.arrayBuffer();
  if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode} from ${path}`);
  return performance.now() - t0;
}

async function main(): Promise<void> {
  if (process.argv[2] === "--agent") return runAgent();
  const iterations = Number(process.argv[2] ?? 2000);
  const dir = await mkdtemp(join(tmpdir(), "esb-gateway-bench-"));
  await writeFile(
    join(dir, "noop.yaml"),
    "apiVersion: esb.dev/v1alpha1\nkind: LambdaFunction\nmetadata:\n  name: noop\nspec:\n  runtime: nodejs22.x\n  handler: index.handler\n  code:\n    inline:\n      index.mjs: export const handler = async () => ({});\n",
  );
  const agentProc = spawn(process.execPath, [fileURLToPath(import.meta.url), "--agent"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const agentUrl = await agentUrlOf(agentProc);
  const port = 19000 + Math.floor(Math.random() * 1000);
  const gatewayProc = spawn(process.execPath, [join(here, "..", "main.js")], {
    stdio: ["ignore", "ignore", "inherit"],
    env: {
      ...process.env,
      GATEWAY_WARM_HOLD_MS: process.env.GATEWAY_WARM_HOLD_MS ?? "0",
      GATEWAY_PORT: String(port),
      GATEWAY_HOST: "127.0.0.1",
      AGENT_URLS: agentUrl,
      FUNCTIONS_DIR: dir,
      ESB_LOG_LEVEL: "warn",
    },
  });
  // Wait until the gateway is ready (functions listed, agent answering).
  const gateway = new Pool(`http://127.0.0.1:${port}`, { connections: 1 });
  for (let i = 0; ; i++) {
    try {
      const r = await gateway.request({ path: "/readyz", method: "GET" });
      await r.body.arrayBuffer();
      if (r.statusCode === 200) break;
    } catch {
      // not listening yet
    }
    if (i > 200) throw new Error("gateway did not become ready");
    await new Promise((r) => setTimeout(r, 50));
  }
  const invokePath = "/2015-03-31/functions/noop/invocations";
  const body = JSON.stringify({ bench: true });
  await timed(gateway, invokePath, body); // cold start
  const agentClient = createClient(AgentService, createGrpcTransport({ baseUrl: agentUrl }));
  const { workers } = await agentClient.listWorkers({});
  const workerAddress = workers[0].address;
  const worker = new Pool(`http://${workerAddress}`, { connections: 1 });
  const workerPath = "/2015-03-31/functions/function/invocations";
  for (let i = 0; i < 200; i++) {
    await timed(gateway, invokePath, body);
    await timed(worker, workerPath, body);
  }
  const viaGateway: number[] = [];
  const direct: number[] = [];
  for (let i = 0; i < iterations; i++) {
    direct.push(await timed(worker, workerPath, body));
    viaGateway.push(await timed(gateway, invokePath, body));
  }
  viaGateway.sort((a, b) => a - b);
  direct.sort((a, b) => a - b);
  const fmt = (n: number) => n.toFixed(3);
  const report = {
    iterations,
    warmHoldMs: Number(process.env.GATEWAY_WARM_HOLD_MS ?? 0),
    direct_ms: { p50: fmt(percentile(direct, 50)), p99: fmt(percentile(direct, 99)) },
    gateway_ms: { p50: fmt(percentile(viaGateway, 50)), p99: fmt(percentile(viaGateway, 99)) },
    overhead_ms: {
      p50: fmt(percentile(viaGateway, 50) - percentile(direct, 50)),
      p99: fmt(percentile(viaGateway, 99) - percentile(direct, 99)),
    },
  };
  process.stdout.write(JSON.stringify(report, null, 2) + "\n");
  await gateway.close();
  await worker.close();
  gatewayProc.kill("SIGTERM");
  agentProc.kill("SIGTERM");
  await rm(dir, { recursive: true, force: true });
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${String(err)}\n`);
  process.exit(1);
});
