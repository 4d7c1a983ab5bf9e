// ESB on a two-node cluster: `hack/cluster.sh up --nodes 2` adds a second kubelet
// with its own containerd, cgroup root and network namespace (its pods on a bridge of
// their own, 10.244.1.0/24, routed through this machine). The gateways are pinned to
// node 1; a function's workers are spread over both agents, so a worker on node 2
// answering proves the gateway reaches workers on another node (cluster CNI mode), and
// reservedConcurrency holds across both nodes. Traffic goes only to loopback and to
// the cluster's own bridge and namespace.
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { expectSuccess, kubectl } from "../install/chart-tools.js";
import {
  buildAndLoadImages,
  clusterDown,
  clusterUp,
  helmInstall,
  hostState,
  nodeSockets,
  taskIds,
  type LocalCluster,
} from "./local-cluster.js";
import { eventually } from "@esb/controller/kube-test-support";

const NS = "esb-system";
const MINUTE = 60_000;

/** Answers with the worker's own address after `ms` milliseconds. */
const WHERE = `import { networkInterfaces } from "node:os";
export const handler = async (event) => {
  await new Promise((r) => setTimeout(r, event.ms ?? 0));
  const ip = Object.values(networkInterfaces()).flat().find((a) => a.family === "IPv4" && !a.internal)?.address;
  return { ip };
};
`;

describe("ESB on a two-node local cluster", () => {
  let dir = "";
  let cluster: LocalCluster;
  const k = async (...args: string[]) =>
    expectSuccess(await kubectl(cluster.kubeconfig, args), `kubectl ${args[0]}`);
  const apply = async (name: string, spec: Record<string, unknown>) => {
    const manifest = {
      apiVersion: "esb.dev/v1alpha1",
      kind: "LambdaFunction",
      metadata: { name, namespace: "default" },
      spec: {
        runtime: "nodejs24.x",
        handler: "index.handler",
        timeout: 10,
        code: { inline: { "index.mjs": WHERE } },
        ...spec,
      },
    };
    expectSuccess(
      await kubectl(cluster.kubeconfig, ["apply", "-f", "-"], stringify(manifest)),
      `apply ${name}`,
    );
    await eventually(
      `${name} Ready`,
      async () => {
        const out = JSON.parse(await k("get", "lf", name, "-o", "json")) as {
          status?: { conditions?: { type: string; status: string }[] };
        };
        return out.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True")
          ? true
          : undefined;
      },
      3 * MINUTE,
    );
  };
  const invoke = async (name: string, ms: number) => {
    const r = await fetch(`${cluster.ingress}/2015-03-31/functions/${name}/invocations`, {
      method: "POST",
      body: JSON.stringify({ ms }),
      signal: AbortSignal.timeout(60_000),
    });
    return {
      status: r.status,
      errorType: r.headers.get("x-amzn-errortype"),
      body: (await r.json()) as { ip?: string },
    };
  };
  /** Worker task ids per node, of function `fn` or (undefined) of every function. */
  const workers = async (fn?: string) => {
    const perNode: string[][] = [];
    for (const socket of await nodeSockets(cluster))
      perNode.push(
        (await taskIds(cluster, "esb", socket)).filter(
          (id) => fn === undefined || id.startsWith(`default-${fn}-`),
        ),
      );
    return perNode;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "esb-cluster2-"));
    cluster = await clusterUp(join(dir, "cluster"), 2);
    await buildAndLoadImages(cluster, join(dir, "images"));
    // Gateways only on node 1: whatever node 2's workers answer crossed nodes.
    await helmInstall(cluster, NS, ["--set", "gateway.nodeSelector.kubernetes\\.io/hostname=esb-node"]);
  }, 30 * MINUTE);

  afterAll(async () => {
    if (!dir) return;
    const down = await clusterDown(join(dir, "cluster"));
    await rm(dir, { recursive: true, force: true });
    if (down.code !== 0) throw new Error(`hack/cluster.sh down failed:\n${down.stderr}`);
  }, 5 * MINUTE);

  it("runs two Ready nodes, an agent on each and the gateways on node 1", async () => {
    const nodes = JSON.parse(await k("get", "nodes", "-o", "json")) as {
      items: { metadata: { name: string }; status: { conditions: { type: string; status: string }[] } }[];
    };
    expect(nodes.items.map((n) => n.metadata.name).sort()).toEqual(["esb-node", "esb-node2"]);
    for (const n of nodes.items)
      expect(n.status.conditions.find((c) => c.type === "Ready")?.status).toBe("True");
    const pods = JSON.parse(await k("-n", NS, "get", "pods", "-o", "json")) as {
      items: { metadata: { labels: Record<string, string> }; spec: { nodeName: string } }[];
    };
    const on = (component: string) =>
      pods.items
        .filter((p) => p.metadata.labels["app.kubernetes.io/component"] === component)
        .map((p) => p.spec.nodeName)
        .sort();
    expect(on("agent")).toEqual(["esb-node", "esb-node2"]);
    expect(on("gateway")).toEqual(["esb-node", "esb-node"]);
  });

  it(
    "a gateway on node 1 invokes a worker on node 2 (pod network across nodes)",
    async () => {
      // Two provisioned workers: one per node (the controller splits them over the agents).
      await apply("where", { provisionedConcurrency: 2, reservedConcurrency: 2 });
      const placed = await eventually(
        "a warm worker on each node",
        async () => {
          const w = await workers("where");
          return w.every((ids) => ids.length === 1) ? w : undefined;
        },
        2 * MINUTE,
      );
      expect(placed).toHaveLength(2);
      // Two calls at once keep both workers busy: one of them is node 2's.
      const answers = await Promise.all([invoke("where", 1500), invoke("where", 1500)]);
      expect(answers.map((a) => a.status)).toEqual([200, 200]);
      const ips = answers.map((a) => a.body.ip ?? "").sort();
      expect(ips.some((ip) => ip.startsWith("10.244.0."))).toBe(true);
      expect(ips.some((ip) => ip.startsWith("10.244.1."))).toBe(true);
    },
    5 * MINUTE,
  );

  it(
    "reservedConcurrency holds across both nodes: one worker in all, the other calls get 429",
    async () => {
      await apply("only-one", { reservedConcurrency: 1 });
      const answers = await Promise.all(Array.from({ length: 4 }, () => invoke("only-one", 2000)));
      expect(answers.filter((a) => a.status === 200)).toHaveLength(1);
      for (const a of answers.filter((x) => x.status !== 200)) {
        expect(a.status).toBe(429);
        expect(a.errorType).toBe("TooManyRequestsException");
      }
      expect((await workers("only-one")).flat()).toHaveLength(1);
    },
    3 * MINUTE,
  );

  it(
    "helm uninstall and hack/cluster.sh down leave nothing on either node or the host",
    async () => {
      expectSuccess(
        await kubectl(cluster.kubeconfig, [
          "delete",
          "lf",
          "where",
          "only-one",
          "--wait=true",
          "--timeout=120s",
        ]),
        "kubectl delete",
      );
      const left = await eventually(
        "no worker on either node",
        async () => {
          const w = await workers();
          return w.every((ids) => ids.length === 0) ? w : undefined;
        },
        2 * MINUTE,
      );
      expect(left).toEqual([[], []]);
      expectSuccess(await clusterDown(cluster.dir), "hack/cluster.sh down");
      expect(await hostState(cluster.dir)).toEqual(cluster.hostBefore);
    },
    5 * MINUTE,
  );
});
