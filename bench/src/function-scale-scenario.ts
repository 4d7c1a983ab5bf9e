import { setTimeout as sleep } from "node:timers/promises";
import { CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { createLogger } from "@esb/common";
import { staticTokenSource } from "@esb/common/agent-credentials";
import { Controller } from "@esb/controller/controller";
import { ControllerMetrics } from "@esb/controller/controller-metrics";
import { StaticAgentDirectory } from "@esb/controller/agent-directory";
import { KubernetesFunctionSource } from "@esb/controller/kubernetes-function-source";
import {
  createTestNamespace,
  deleteTestNamespace,
  installCrd,
  loadTestKubeConfig,
} from "@esb/controller/kube-test-support";
import { NODE_NOOP_CODE } from "./bench-environment.js";
import { summarize, type BenchResults } from "./bench-results.js";
import type { BenchScenario } from "./bench-scenario.js";

/** Issue 15's target: this many LambdaFunctions Ready within 60 s on a real apiserver. */
const TARGET_MS = 60_000;
const GROUP = "esb.dev";
const VERSION = "v1alpha1";
const PLURAL = "lambdafunctions";
/** Concurrent creates (as `kubectl apply -f dir/` of many files, or a CI pipeline, would send them). */
const CREATORS = 16;

interface Listed {
  metadata: { name: string };
  status?: { conditions?: { type: string; status: string }[] };
}

function isReady(item: Listed): boolean {
  return item.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
}

async function listFunctions(api: CustomObjectsApi, namespace: string): Promise<Listed[]> {
  const res = (await api.listNamespacedCustomObject({
    group: GROUP,
    version: VERSION,
    namespace,
    plural: PLURAL,
  })) as {
    items: Listed[];
  };
  return res.items;
}

/**
 * Polls the namespace's LambdaFunctions every `everyMs` and records, per name, when Ready=True
 * was first seen, until `until(list)` holds. The poll's period bounds the figures' resolution.
 */
async function watchUntil(
  api: CustomObjectsApi,
  namespace: string,
  readyAt: Map<string, number>,
  until: (items: Listed[]) => boolean,
  timeoutMs: number,
  everyMs = 200,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const items = await listFunctions(api, namespace);
    const now = Date.now();
    for (const item of items)
      if (isReady(item) && !readyAt.has(item.metadata.name)) readyAt.set(item.metadata.name, now);
    if (until(items)) return;
    if (now > deadline)
      throw new Error(`timed out after ${timeoutMs} ms (${readyAt.size} Ready of ${items.length})`);
    await sleep(everyMs);
  }
}

/** How many reconciles the set took, and their mean duration (from the controller's own metrics). */
async function reportReconciles(
  metrics: ControllerMetrics,
  count: number,
  results: BenchResults,
): Promise<void> {
  const counted = (await metrics.reconciles.get()).values.reduce((n, v) => n + v.value, 0);
  const hist = (await metrics.reconcileSeconds.get()).values;
  const sum = hist.find((v) => v.metricName?.endsWith("_sum"))?.value ?? NaN;
  results.add(
    summarize("function-scale-reconciles", "per fn", [counted / count], {
      note: `reconciles per function until all Ready (${counted} in all, mean ${((sum / counted) * 1000).toFixed(0)} ms each)`,
    }),
  );
}

/**
 * Many LambdaFunctions at once on a real kube-apiserver: the real Controller (informer, work
 * queue, reconciler, status writes) against the run's real agent, which stages each function's
 * code. Rows: the whole set created → every one Ready (issue 15's "1,000 LambdaFunctions to Ready
 * ≤ 60 s"), each function's create → Ready, and the deletion of the set (finalizers released,
 * agents told).
 */
export const functionScaleScenario: BenchScenario = {
  id: "function-scale",
  rows: ["functions-to-ready", "function-create-to-ready", "function-scale-reconciles", "functions-deleted"],
  needsKube: true,
  async run({ env, results, sizes }) {
    const count = sizes.scaleFunctions;
    process.env.ESB_TEST_KUBECONFIG ??= env.env.ESB_TEST_KUBECONFIG;
    const kc: KubeConfig = loadTestKubeConfig();
    await installCrd(kc);
    const namespace = await createTestNamespace(kc, "bench-scale");
    const api = kc.makeApiClient(CustomObjectsApi);
    const logger = createLogger("bench-controller", { level: process.env.ESB_LOG_LEVEL ?? "error" });
    const metrics = new ControllerMetrics();
    const controller = new Controller({
      metrics,
      // ESB_BENCH_RECONCILE_WORKERS compares settings in one session; unset, the controller's default.
      reconcileWorkers: Number(process.env.ESB_BENCH_RECONCILE_WORKERS) || undefined,
      source: new KubernetesFunctionSource(kc, { namespace, instance: "bench", logger }),
      agents: new StaticAgentDirectory([env.agentUrl]),
      agentToken: staticTokenSource(env.controllerToken),
      // Only written into status.url here: the scenario does not invoke.
      gatewayUrl: env.hasGateway ? env.gatewayUrl : "http://127.0.0.1:9000",
      logger,
    });
    await controller.start();
    try {
      const names = Array.from({ length: count }, (_, i) => `scale-${String(i).padStart(4, "0")}`);
      const createdAt = new Map<string, number>();
      const readyAt = new Map<string, number>();
      const queue = [...names];
      const t0 = Date.now();
      const creators = Array.from({ length: CREATORS }, async () => {
        for (let name = queue.shift(); name; name = queue.shift()) {
          await api.createNamespacedCustomObject({
            group: GROUP,
            version: VERSION,
            namespace,
            plural: PLURAL,
            body: {
              apiVersion: `${GROUP}/${VERSION}`,
              kind: "LambdaFunction",
              metadata: { name },
              spec: {
                runtime: "nodejs24.x",
                handler: "index.handler",
                code: { inline: { "index.mjs": NODE_NOOP_CODE } },
              },
            },
          });
          createdAt.set(name, Date.now());
        }
      });
      const watching = watchUntil(api, namespace, readyAt, () => readyAt.size >= count, 600_000);
      await Promise.all(creators);
      const allCreatedMs = Date.now() - t0;
      await watching;
      const allReadyMs = Math.max(...readyAt.values()) - t0;
      results.add(
        summarize("functions-to-ready", "ms", [allReadyMs], {
          note: `${count} LambdaFunctions created (${CREATORS} at a time, all sent in ${(allCreatedMs / 1000).toFixed(1)} s) -> every one Ready; target <= ${TARGET_MS / 1000} s: ${allReadyMs <= TARGET_MS ? "met" : "MISSED"}`,
        }),
      );
      results.add(
        summarize(
          "function-create-to-ready",
          "ms",
          names.map((n) => readyAt.get(n)! - createdAt.get(n)!),
          { note: `per function: create answered -> Ready seen (polled every 200 ms), N=${count}` },
        ),
      );
      await reportReconciles(metrics, count, results);
      const t1 = Date.now();
      await api.deleteCollectionNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace,
        plural: PLURAL,
      });
      await watchUntil(api, namespace, new Map(), (items) => items.length === 0, 600_000, 500);
      results.add(
        summarize("functions-deleted", "ms", [Date.now() - t1], {
          note: `${count} LambdaFunctions deleted -> all gone (the controller released their finalizers)`,
        }),
      );
    } finally {
      await controller.stop();
      await deleteTestNamespace(kc, namespace);
    }
  },
};
