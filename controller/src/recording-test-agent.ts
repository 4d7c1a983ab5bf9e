import { createServer, type Http2Server } from "node:http2";
import type { AddressInfo } from "node:net";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { AgentService, WorkerState, type FunctionSpec } from "@esb/common/gen/esb/agent/v1/agent_pb";

/** One recorded AgentService call. */
export type RecordedCall =
  | { method: "PrepareFunction"; key: string; spec: FunctionSpec }
  | { method: "DestroyFunction"; key: string }
  | { method: "ListWorkers"; key: string };

/**
 * TEST STAND-IN for the ESB agent: a real Connect AgentService server (gRPC over
 * HTTP/2 cleartext on 127.0.0.1) that records PrepareFunction and
 * DestroyFunction calls and answers like an agent whose provisioned workers are
 * all warm at once; ListWorkers lists one paused worker per provisioned worker
 * (at least one per prepared function). It exists so that the controller can be tested against the
 * real kube-apiserver without containerd; end-to-end tests with the real agent
 * (agent-daemonset) replace it there. Not for production use.
 */
export class RecordingTestAgent {
  readonly calls: RecordedCall[] = [];
  /** Functions prepared and not destroyed: key → last spec. */
  readonly functions = new Map<string, FunctionSpec>();
  /** When set, PrepareFunction fails with this error. */
  failPrepare?: ConnectError;
  /** When set, every call fails with this error (an agent that is listed but does not work). */
  failAll?: ConnectError;
  /**
   * When set, PrepareFunction takes this long before it answers (a slow image
   * pull); a call cancelled by its caller meanwhile ends at once and is listed
   * in {@link cancelled}.
   */
  prepareDelayMs?: number;
  /** Calls that their caller cancelled while they ran (see {@link prepareDelayMs}). */
  readonly cancelled: RecordedCall[] = [];
  private server?: Http2Server;
  private readonly sessions = new Set<import("node:http2").ServerHttp2Session>();
  url = "";

  /**
   * Starts listening on `host` (default 127.0.0.1) and `port` (default: a free
   * one); `url` is set afterwards.
   */
  async start(options: { host?: string; port?: number } = {}): Promise<this> {
    const host = options.host ?? "127.0.0.1";
    const routes = (router: ConnectRouter) =>
      router.service(AgentService, {
        prepareFunction: async (req, ctx) => {
          const spec = req.spec!;
          const key = `${spec.ref?.namespace}/${spec.ref?.name}`;
          const call: RecordedCall = { method: "PrepareFunction", key, spec };
          this.calls.push(call);
          if (this.failAll) throw this.failAll;
          if (this.failPrepare) throw this.failPrepare;
          if (this.prepareDelayMs) await this.delay(this.prepareDelayMs, ctx.signal, call);
          this.functions.set(key, spec);
          const n = spec.provisionedConcurrency;
          return { imageDigest: "sha256:" + "ab".repeat(32), readyWorkers: n, warmWorkers: n };
        },
        destroyFunction: async (req) => {
          const key = `${req.function?.namespace}/${req.function?.name}`;
          this.calls.push({ method: "DestroyFunction", key });
          if (this.failAll) throw this.failAll;
          const had = this.functions.get(key);
          this.functions.delete(key);
          return { destroyedWorkers: had?.provisionedConcurrency ?? 0 };
        },
        listWorkers: async (req) => {
          const only = req.function?.name ? `${req.function.namespace}/${req.function.name}` : "";
          this.calls.push({ method: "ListWorkers", key: only });
          if (this.failAll) throw this.failAll;
          const workers = [...this.functions]
            .filter(([key]) => !only || key === only)
            .flatMap(([key, spec]) =>
              Array.from({ length: Math.max(1, spec.provisionedConcurrency) }, (_, i) => ({
                workerId: `${key.replace("/", "-")}-${i}`,
                function: spec.ref,
                generation: spec.generation,
                revision: spec.revision,
                state: WorkerState.PAUSED,
              })),
            );
          return { workers };
        },
      });
    this.server = createServer(connectNodeAdapter({ routes }));
    this.server.on("session", (s) => {
      this.sessions.add(s);
      s.on("close", () => this.sessions.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once("error", reject);
      this.server!.listen(options.port ?? 0, host, resolve);
    });
    this.url = `http://${host}:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /**
   * Pretends that workers of `key` run here (as if prepared by an earlier
   * controller), without recording a call: for orphan and uninstall tests.
   */
  addFunction(key: string, provisionedConcurrency = 1): void {
    const [namespace, name] = key.split("/");
    // Only the fields this stand-in reads (ref, provisionedConcurrency) matter.
    this.functions.set(key, {
      ref: { namespace, name },
      provisionedConcurrency,
      generation: 1n,
      revision: "external",
    } as unknown as FunctionSpec);
  }

  /** Waits `ms`, or rejects as soon as the caller cancels (recording the call as cancelled). */
  private delay(ms: number, signal: AbortSignal, call: RecordedCall): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, ms);
      signal.addEventListener(
        "abort",
        () => {
          clearTimeout(timer);
          this.cancelled.push(call);
          reject(new ConnectError("cancelled by the caller", Code.Canceled));
        },
        { once: true },
      );
    });
  }

  /** Calls of one method for one function. */
  callsFor(method: RecordedCall["method"], key: string): RecordedCall[] {
    return this.calls.filter((c) => c.method === method && c.key === key);
  }

  async stop(): Promise<void> {
    for (const s of this.sessions) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
