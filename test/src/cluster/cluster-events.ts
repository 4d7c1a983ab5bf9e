import { spawn, type ChildProcess } from "node:child_process";
import { expect } from "@jest/globals";
import { eventually } from "@esb/controller/kube-test-support";
import { cachedTool, expectSuccess, kubectl } from "../install/chart-tools.js";

const MINUTE = 60_000;

/** A function that sleeps `ms` and returns: long enough to be running when its gateway goes. */
const SLOW_FUNCTION = `apiVersion: esb.dev/v1alpha1
kind: LambdaFunction
metadata:
  name: slow-events
spec:
  runtime: nodejs24.x
  handler: index.handler
  timeout: 60
  code:
    inline:
      index.mjs: |
        export const handler = async (e) => {
          await new Promise((r) => setTimeout(r, e.ms ?? 0));
          return { ok: true };
        };
`;

interface Pod {
  metadata: { name: string };
  status: { podIP?: string; phase?: string };
}

/**
 * Events accepted by one gateway pod right before it is deleted all run: 10
 * Event invocations that each take 15 s (longer than the gateway's 10 s stop
 * grace) are sent to one gateway pod, which is deleted at once; the other
 * replica (and the Deployment's replacement) must run every one. What ran is
 * counted outside the workers, from the gateways' own `invocation` log lines
 * (type Event, status ok), streamed from each gateway pod while the test runs
 * so the deleted pod's lines are kept. Returns how many events ran more than
 * once (at least once is the contract; duplicates are a figure, not a failure).
 * The function `slow-events` is left for the caller to delete.
 */
export async function eventsSurviveGatewayDeletion(kubeconfig: string, namespace: string): Promise<number> {
  const kOk = async (...args: string[]) =>
    expectSuccess(await kubectl(kubeconfig, args), `kubectl ${args.join(" ")}`);
  const gatewayPods = async () =>
    (
      JSON.parse(
        await kOk("-n", namespace, "get", "pods", "-l", "app.kubernetes.io/component=gateway", "-o", "json"),
      ) as { items: Pod[] }
    ).items.filter((p) => p.status.phase === "Running" && p.status.podIP);

  expectSuccess(await kubectl(kubeconfig, ["apply", "-f", "-"], SLOW_FUNCTION), "kubectl apply slow-events");
  await eventually(
    "slow-events Ready",
    async () => {
      const f = JSON.parse(await kOk("get", "lf", "slow-events", "-o", "json")) as {
        status?: { conditions?: { type: string; status: string }[] };
      };
      return f.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
    },
    5 * MINUTE,
  );

  const ran = new Map<string, number>();
  const streams = new Map<string, ChildProcess>();
  const follow = (pod: string) => {
    if (streams.has(pod)) return;
    const child = spawn(
      cachedTool("kubectl"),
      ["--kubeconfig", kubeconfig, "-n", namespace, "logs", "-f", pod],
      {
        stdio: ["ignore", "pipe", "ignore"],
      },
    );
    streams.set(pod, child);
    let rest = "";
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      const lines = (rest + chunk).split("\n");
      rest = lines.pop()!;
      for (const line of lines) {
        if (!line.includes('"msg":"invocation"')) continue;
        const r = JSON.parse(line) as { requestId: string; type: string; status: string };
        if (r.type === "Event" && r.status === "ok") ran.set(r.requestId, (ran.get(r.requestId) ?? 0) + 1);
      }
    });
  };
  try {
    const [victim] = await gatewayPods();
    for (const p of await gatewayPods()) follow(p.metadata.name);
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      const res = await fetch(
        `http://${victim.status.podIP}:9000/2015-03-31/functions/slow-events/invocations`,
        {
          method: "POST",
          headers: { "x-amz-invocation-type": "Event" },
          body: JSON.stringify({ ms: 15_000, i }),
          signal: AbortSignal.timeout(30_000),
        },
      );
      expect(res.status).toBe(202);
      ids.push(res.headers.get("x-amzn-requestid")!);
    }
    await kOk("-n", namespace, "delete", "pod", victim.metadata.name, "--wait=false");
    await eventually(
      "every accepted event ran",
      async () => {
        for (const p of await gatewayPods()) follow(p.metadata.name); // the replacement too
        return ids.every((id) => (ran.get(id) ?? 0) >= 1);
      },
      5 * MINUTE,
    );
    return ids.filter((id) => (ran.get(id) ?? 0) > 1).length;
  } finally {
    for (const child of streams.values()) child.kill();
  }
}
