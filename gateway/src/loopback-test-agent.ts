import { createServer, type Http2Server } from "node:http2";
import type { AddressInfo } from "node:net";
import { randomUUID } from "node:crypto";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { AgentService, InvocationOutcome, StartKind } from "@esb/common/gen/esb/agent/v1/agent_pb";
import { TestWorkerServer } from "./test-worker-server.js";

interface TestWorker {
  id: string;
  functionKey: string;
  address: string;
  server: TestWorkerServer;
  state: "idle" | "busy" | "paused";
  leaseId: string;
}

/**
 * TEST STAND-IN for the ESB agent, used only by the gateway's tests and its
 * benchmark until they run against the real agent: a real AgentService server
 * (gRPC over HTTP/2 on loopback, Connect) whose workers are real HTTP servers on
 * loopback ({@link TestWorkerServer}). It implements AcquireWorker (idle worker →
 * WARM, paused → THAWED, else a new one → COLD, over the function's limit →
 * RESOURCE_EXHAUSTED, unknown function → NOT_FOUND), ReleaseWorker (records the
 * outcome; WORKER_FAILED destroys the worker), Heartbeat (reports pools and
 * records the leases the gateway lists) and ListWorkers. Like the real agent, an
 * acquire its caller cancels during a cold start hands nothing out (the new worker
 * stays idle).
 * It has no containers, freezing or leases expiry.
 */
export class LoopbackTestAgent {
  private readonly server: Http2Server;
  private readonly workers = new Map<string, TestWorker>();
  private readonly limits = new Map<string, number>();
  /** Functions this agent knows (`namespace/name`); empty = every function. */
  readonly knownFunctions = new Set<string>();
  /** Every ReleaseWorker received, in order. */
  readonly releases: { workerId: string; outcome: InvocationOutcome }[] = [];
  /** Number of AcquireWorker and Heartbeat calls received. */
  acquireCalls = 0;
  heartbeatCalls = 0;
  /** Lease ids listed by the last Heartbeat (undefined when it listed none, as old gateways do). */
  lastListedLeases: string[] | undefined;
  /** AcquireWorker calls whose caller cancelled before a worker was handed out. */
  cancelledAcquires = 0;
  /** How long a cold start takes (a real one boots a container and a runtime). */
  coldStartDelayMs = 0;
  url = "";

  constructor(readonly nodeName = "test-node") {
    const routes = (router: ConnectRouter) =>
      router.service(AgentService, {
        acquireWorker: async (req, ctx) => {
          this.acquireCalls++;
          const key = `${req.function?.namespace}/${req.function?.name}`;
          if (this.knownFunctions.size > 0 && !this.knownFunctions.has(key)) {
            throw new ConnectError(`function ${key} is not prepared on this node`, Code.NotFound);
          }
          const mine = [...this.workers.values()].filter((w) => w.functionKey === key);
          const idle = mine.find((w) => w.state === "idle") ?? mine.find((w) => w.state === "paused");
          let worker = idle;
          let startKind = idle?.state === "paused" ? StartKind.THAWED : StartKind.WARM;
          if (!worker) {
            const limit = this.limits.get(key);
            if (limit !== undefined && mine.length >= limit) {
              throw new ConnectError(
                `function ${key} is at its concurrency limit (${limit})`,
                Code.ResourceExhausted,
              );
            }
            if (this.coldStartDelayMs > 0) await new Promise((r) => setTimeout(r, this.coldStartDelayMs));
            const server = new TestWorkerServer(req.function?.name ?? "unknown");
            const address = await server.listen();
            worker = { id: randomUUID(), functionKey: key, address, server, state: "idle", leaseId: "" };
            this.workers.set(worker.id, worker);
            startKind = StartKind.COLD;
            if (ctx.signal.aborted) {
              // The caller gave up during the cold start: the worker stays idle for the next one.
              this.cancelledAcquires++;
              throw new ConnectError("the caller cancelled the acquire", Code.Canceled);
            }
          }
          worker.state = "busy";
          worker.leaseId = randomUUID();
          return {
            workerId: worker.id,
            address: worker.address,
            leaseId: worker.leaseId,
            startKind,
            generation: 1n,
            revision: "r1",
          };
        },
        releaseWorker: async (req) => {
          this.releases.push({ workerId: req.workerId, outcome: req.outcome });
          const worker = this.workers.get(req.workerId);
          if (!worker || worker.leaseId !== req.leaseId)
            throw new ConnectError("unknown lease", Code.NotFound);
          if (req.outcome === InvocationOutcome.WORKER_FAILED || req.outcome === InvocationOutcome.TIMEOUT) {
            this.workers.delete(worker.id);
            await worker.server.close();
          } else {
            worker.state = "idle";
          }
          return {};
        },
        listWorkers: async () => ({
          workers: [...this.workers.values()].map((w) => {
            const [namespace, name] = w.functionKey.split("/");
            return {
              workerId: w.id,
              function: { namespace, name },
              address: w.address,
              state: w.state === "busy" ? 3 : w.state === "idle" ? 2 : 4,
            };
          }),
        }),
        heartbeat: async (req) => {
          this.heartbeatCalls++;
          this.lastListedLeases = req.leasesListed ? [...req.leaseIds] : undefined;
          const pools = new Map<string, { idle: number; paused: number; busy: number }>();
          for (const w of this.workers.values()) {
            const p = pools.get(w.functionKey) ?? { idle: 0, paused: 0, busy: 0 };
            p[w.state]++;
            pools.set(w.functionKey, p);
          }
          return {
            nodeName: this.nodeName,
            activeLeases: [...this.workers.values()].filter((w) => w.state === "busy").length,
            pools: [...pools].map(([key, p]) => {
              const [namespace, name] = key.split("/");
              return {
                function: { namespace, name },
                idleWorkers: p.idle,
                pausedWorkers: p.paused,
                busyWorkers: p.busy,
                generation: 1n,
                revision: "r1",
              };
            }),
          };
        },
      });
    this.server = createServer(connectNodeAdapter({ routes }));
  }

  /** Most workers of `namespace/name` at once (like reservedConcurrency). */
  setConcurrencyLimit(functionKey: string, limit: number): void {
    this.limits.set(functionKey, limit);
  }

  /** Marks every idle worker as paused (as the real agent does after pauseAfterMs). */
  pauseIdleWorkers(): void {
    for (const w of this.workers.values()) if (w.state === "idle") w.state = "paused";
  }

  /** Lease ids of the busy workers (the ones the gateway should list in its heartbeats). */
  busyLeases(): string[] {
    return [...this.workers.values()].filter((w) => w.state === "busy").map((w) => w.leaseId);
  }

  /** Workers now, by function. */
  workerCount(functionKey?: string): number {
    return [...this.workers.values()].filter((w) => !functionKey || w.functionKey === functionKey).length;
  }

  /** Address of one idle worker of the function, for direct (gateway-less) requests. */
  idleWorkerAddress(functionKey: string): string | undefined {
    return [...this.workers.values()].find((w) => w.functionKey === functionKey && w.state === "idle")
      ?.address;
  }

  async listen(port = 0): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(port, "127.0.0.1", () => resolve()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  async close(): Promise<void> {
    await Promise.all([...this.workers.values()].map((w) => w.server.close()));
    this.workers.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
