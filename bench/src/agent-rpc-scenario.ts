import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { Http2SessionManager } from "@connectrpc/connect-node";
import { agentSessionManager, agentTransport, staticTokenSource } from "@esb/common/agent-credentials";
import {
  AcquireWorkerRequestSchema,
  AcquireWorkerResponseSchema,
  AgentService,
  GetNodeStatsRequestSchema,
} from "@esb/common/gen/esb/agent/v1/agent_pb";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { BENCH_HOLDER } from "./agent-measurements.js";
import { BENCH_NAMESPACE } from "./bench-environment.js";
import { connect as http2Connect, type ClientHttp2Session } from "node:http2";
import { connect as netConnect } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { summarize } from "./bench-results.js";
import type { BenchScenario } from "./bench-scenario.js";

/** Calls per client in the `agent-rpc` rows (interleaved, one client after the other). */
const CALLS = { full: 500, quick: 100 };

/** Pause between rounds: the gateway's calls come one by one, not back to back. */
const GAP_MS = 2;

/**
 * One unary GetNodeStats over a bare `node:http2` session, framed as gRPC by hand
 * (5-byte prefix + protobuf): the floor the connect client is compared with.
 */
async function bareCall(
  session: ClientHttp2Session,
  method: string,
  token: string,
  body: Uint8Array,
): Promise<Buffer> {
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  frame.set(body, 5);
  const stream = session.request({
    ":method": "POST",
    ":path": `/${AgentService.typeName}/${method}`,
    "content-type": "application/grpc+proto",
    te: "trailers",
    authorization: `Bearer ${token}`,
  });
  stream.end(frame);
  const chunks: Buffer[] = [];
  stream.on("data", (c: Buffer) => chunks.push(c));
  const status = await new Promise<string>((resolve, reject) => {
    let s = "";
    stream.on("response", (h) => (s = String(h["grpc-status"] ?? s)));
    stream.on("trailers", (t) => (s = String(t["grpc-status"] ?? s)));
    stream.on("close", () => resolve(s));
    stream.on("error", reject);
  });
  if (status !== "0") throw new Error(`bare http2 ${method}: grpc-status ${status}`);
  return Buffer.concat(chunks).subarray(5);
}

const FN = "bench-rpc";

/** The agent ping interval, scaled down from 10 s so that the idle rows take seconds. */
const IDLE_PING_MS = 100;
/** Gap before each idle-row call: longer than {@link IDLE_PING_MS}. */
const IDLE_GAP_MS = 250;

/**
 * A call after the connection sat idle longer than the ping interval: with the
 * connect-node session pinging only open connections (the gateway's settings
 * before agentSessionManager) the call first waits for a PING round trip; with
 * agentSessionManager's idle pings it does not. Interleaved, n / 10 calls each.
 */
async function afterIdle(url: string, token: string, n: number, samples: Map<string, number[]>) {
  const before = new Http2SessionManager(url, { pingIntervalMs: IDLE_PING_MS, pingTimeoutMs: 5_000 });
  const after = agentSessionManager(url, IDLE_PING_MS);
  const rows: [string, Http2SessionManager][] = [
    ["agent-rpc-after-idle-verify", before],
    ["agent-rpc-after-idle-pinged", after],
  ];
  const tokens = staticTokenSource(token);
  const clients = rows.map(([name, s]) => {
    samples.set(name, []);
    return [name, createClient(AgentService, agentTransport(url, tokens, s))] as const;
  });
  try {
    for (const [, c] of clients) await c.getNodeStats({});
    for (let i = 0; i < Math.max(20, n / 10); i++) {
      for (const [name, c] of i % 2 ? [...clients].reverse() : clients) {
        await sleep(IDLE_GAP_MS);
        const t0 = performance.now();
        await c.getNodeStats({});
        samples.get(name)!.push(performance.now() - t0);
      }
    }
  } finally {
    before.abort();
    after.abort();
  }
}

/**
 * Agent RPC round trip: unary GetNodeStats on the bench's real AgentServer
 * (bearer token checked, readiness interceptor), the same call through each
 * client in turn in the same rounds: the connect-es client as every ESB
 * component makes it (`agentTransport`), the same with a session manager whose
 * socket has Nagle off, and a bare `node:http2` client (with Nagle on and off).
 * `thaw-acquire` (thaw scenario) is the in-process figure to compare with.
 */
export const agentRpcScenario: BenchScenario = {
  id: "agent-rpc",
  rows: [
    "agent-rpc-connect",
    "agent-rpc-connect-nodelay",
    "agent-rpc-http2",
    "agent-rpc-http2-nodelay",
    "agent-acquire-inprocess",
    "agent-acquire-connect",
    "agent-acquire-http2",
    "agent-rpc-after-idle-verify",
    "agent-rpc-after-idle-pinged",
    "ratio-agent-rpc-connect-vs-http2",
    "ratio-agent-acquire-connect-vs-http2",
  ],
  async run({ env, results, sizes }) {
    const n = sizes.warm >= 1000 ? CALLS.full : CALLS.quick;
    const token = env.controllerToken;
    const gwToken = readFileSync(join(env.dir, "gateway.token"), "utf8").trim();
    // Stays idle (warm) between acquires: the rows time the call, not a thaw or a start.
    await env.prepareFunction({ name: FN, runtime: "nodejs24.x", pauseAfterMs: 600_000 });
    const ref = { namespace: BENCH_NAMESPACE, name: FN };
    const acq = { holderId: BENCH_HOLDER, leaseMs: 60_000 };
    const first = await env.agent!.acquire(ref, acq);
    await env.agent!.release(first.workerId, first.leaseId, "success");
    const acquireBody = toBinary(
      AcquireWorkerRequestSchema,
      create(AcquireWorkerRequestSchema, { function: ref, ...acq }),
    );
    const gw = createClient(AgentService, agentTransport(env.agentUrl, staticTokenSource(gwToken)));
    // Each acquire hands back the one warm worker; released in process, untimed.
    const timedAcquire = async (get: () => Promise<{ workerId: string; leaseId: string }>) => {
      const t0 = performance.now();
      const w = await get();
      const ms = performance.now() - t0;
      await env.agent!.release(w.workerId, w.leaseId, "success");
      return ms;
    };
    const url = new URL(env.agentUrl);
    const noDelaySocket = () => netConnect({ host: url.hostname, port: Number(url.port), noDelay: true });
    const shipped = createClient(AgentService, agentTransport(env.agentUrl, staticTokenSource(token)));
    const tunedSession = new Http2SessionManager(env.agentUrl, undefined, {
      createConnection: noDelaySocket,
    });
    const tuned = createClient(
      AgentService,
      agentTransport(env.agentUrl, staticTokenSource(token), tunedSession),
    );
    const bare = http2Connect(env.agentUrl);
    const bareNoDelay = http2Connect(env.agentUrl, { createConnection: noDelaySocket });
    const body = toBinary(GetNodeStatsRequestSchema, create(GetNodeStatsRequestSchema, {}));
    const timed = (call: () => Promise<unknown>) => async () => {
      const t0 = performance.now();
      await call();
      return performance.now() - t0;
    };
    const clients: [string, () => Promise<number>][] = [
      ["agent-rpc-connect", timed(() => shipped.getNodeStats({}))],
      ["agent-rpc-connect-nodelay", timed(() => tuned.getNodeStats({}))],
      ["agent-rpc-http2", timed(() => bareCall(bare, "GetNodeStats", token, body))],
      ["agent-rpc-http2-nodelay", timed(() => bareCall(bareNoDelay, "GetNodeStats", token, body))],
      ["agent-acquire-inprocess", () => timedAcquire(() => env.agent!.acquire(ref, acq))],
      ["agent-acquire-connect", () => timedAcquire(() => gw.acquireWorker({ function: ref, ...acq }))],
      [
        "agent-acquire-http2",
        () =>
          timedAcquire(async () =>
            fromBinary(
              AcquireWorkerResponseSchema,
              await bareCall(bare, "AcquireWorker", gwToken, acquireBody),
            ),
          ),
      ],
    ];
    const samples = new Map<string, number[]>(clients.map(([name]) => [name, []]));
    try {
      for (let i = 0; i < sizes.warmup * 10 + n; i++) {
        // Rotate who goes first, so that no client always follows the same one.
        for (let k = 0; k < clients.length; k++) {
          const [name, call] = clients[(i + k) % clients.length];
          await sleep(GAP_MS);
          const ms = await call();
          if (i >= sizes.warmup * 10) samples.get(name)!.push(ms);
        }
      }
    } finally {
      bare.close();
      bareNoDelay.close();
      tunedSession.abort();
      await env.destroyFunction(FN);
    }
    const notes: Record<string, string | undefined> = {
      "agent-rpc-connect": "GetNodeStats via agentTransport (connect-es gRPC client, as gateway/controller)",
      "agent-rpc-connect-nodelay": "the same with the HTTP/2 socket's Nagle off (noDelay)",
      "agent-rpc-http2": "GetNodeStats as a bare node:http2 gRPC request (the floor)",
      "agent-rpc-http2-nodelay": "the same with the socket's Nagle off",
      "agent-acquire-inprocess": "acquire of a warm worker, agent.acquire in process (no RPC)",
      "agent-acquire-connect": "the same over AcquireWorker via agentTransport (as the gateway)",
      "agent-acquire-http2": "the same over AcquireWorker as a bare node:http2 gRPC request",
    };
    await afterIdle(env.agentUrl, token, n, samples);
    notes["agent-rpc-after-idle-verify"] =
      `GetNodeStats ${IDLE_GAP_MS} ms after the last call, session pinged only while open (the gateway before; interval scaled to ${IDLE_PING_MS} ms): PING round trip first`;
    notes["agent-rpc-after-idle-pinged"] =
      `the same with agentSessionManager (idle connection pinged every ${IDLE_PING_MS} ms): no PING before the call`;
    for (const name of samples.keys())
      results.add(summarize(name, "ms", samples.get(name)!, { note: notes[name] }));
    results.ratio("ratio-agent-rpc-connect-vs-http2", "agent-rpc-connect", "agent-rpc-http2");
    results.ratio("ratio-agent-acquire-connect-vs-http2", "agent-acquire-connect", "agent-acquire-http2");
  },
};
