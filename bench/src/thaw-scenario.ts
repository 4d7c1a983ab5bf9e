import { join } from "node:path";
import { summarize } from "./bench-results.js";
import type { BenchScenario } from "./bench-scenario.js";
import { measureThawPaths } from "./thaw-measurements.js";

/** Target of `thaw` (DESIGN.md, issue 15): p50 ≤ 5 ms, beside the direct-freezer limit of the same run. */
const THAW_TARGET_MS = 5;

/**
 * Thaw: a paused (frozen) Node worker, acquired from the agent and POSTed, until
 * the first response byte; beside it, in the same rounds, its parts, the same
 * on a kept-alive connection, the limit (a direct freezer write) and the old
 * path (containerd `Tasks.Pause`/`Resume`).
 */
export const thawScenario: BenchScenario = {
  id: "thaw",
  rows: [
    "thaw",
    "thaw-acquire",
    "thaw-first-byte",
    "thaw-grpc",
    "thaw-grpc-acquire",
    "thaw-keepalive",
    "thaw-freezer-limit",
    "thaw-containerd-resume",
    "thaw-running-post",
    "ratio-thaw-vs-freezer-limit",
    "ratio-containerd-resume-vs-thaw",
  ],
  async run({ env, results, sizes }) {
    await env.prepareFunction({ name: "bench-thaw", runtime: "nodejs24.x", pauseAfterMs: 10 });
    const s = await measureThawPaths(
      env.agent!,
      "bench-thaw",
      {
        socketPath: env.env.ESB_TEST_CONTAINERD_SOCKET,
        namespace: env.namespace,
        cgroupParent: `/${env.namespace}`,
        agentUrl: env.agentUrl,
        tokenFile: join(env.dir, "gateway.token"),
      },
      sizes.thaws,
      sizes.warmup,
    );
    const thaw = summarize("thaw", "ms", s.thaw);
    const met = thaw.p50 <= THAW_TARGET_MS ? "met" : "MISSED";
    thaw.note = `paused -> acquire (agent thaws the cgroup freezer) + POST -> first byte; target p50 <= ${THAW_TARGET_MS} ms: ${met}`;
    results.add(thaw);
    results.add(
      summarize("thaw-acquire", "ms", s.acquire, {
        note: "the acquire part of thaw (agent: pool + freezer write)",
      }),
    );
    results.add(
      summarize("thaw-first-byte", "ms", s.firstByte, {
        note: "the rest of thaw: POST on a new connection -> first byte",
      }),
    );
    results.add(
      summarize("thaw-grpc", "ms", s.grpc, {
        note: "thaw with AcquireWorker over the agent's gRPC API (as the gateway asks) + POST -> first byte",
      }),
    );
    results.add(
      summarize("thaw-grpc-acquire", "ms", s.grpcAcquire, { note: "the AcquireWorker part of thaw-grpc" }),
    );
    results.add(
      summarize("thaw-keepalive", "ms", s.keepAlive, {
        note: "thaw with the POST on a keep-alive connection opened before the pause (as the gateway's)",
      }),
    );
    results.add(
      summarize("thaw-freezer-limit", "ms", s.freezerLimit, {
        note: "direct write of THAWED + POST -> first byte (the limit)",
      }),
    );
    results.add(
      summarize("thaw-containerd-resume", "ms", s.containerdResume, {
        note: "old path: containerd Tasks.Resume (runc) + POST -> first byte",
      }),
    );
    results.add(
      summarize("thaw-running-post", "ms", s.running, {
        note: "POST on a new connection -> first byte to the same worker while it runs (no thaw)",
      }),
    );
    results.ratio("ratio-thaw-vs-freezer-limit", "thaw", "thaw-freezer-limit");
    results.ratio("ratio-containerd-resume-vs-thaw", "thaw-containerd-resume", "thaw");
    await env.destroyFunction("bench-thaw");
  },
};
