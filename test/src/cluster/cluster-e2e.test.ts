// ESB on a real Kubernetes cluster, as a user runs it: `hack/cluster.sh up` (etcd,
// kube-apiserver, controller-manager, scheduler, kubelet, kube-proxy, a containerd
// of the cluster's own, Skipper as the ingress controller), the component images
// built by the project's builder and imported into the node, `helm install --wait`,
// then `kubectl apply` of the examples and invocations through the ingress with curl
// and the AWS SDK; failures of the agent and of the leader controller; `helm
// uninstall` and `hack/cluster.sh down` leaving nothing behind. Traffic goes only to
// loopback (the ingress) and to the cluster's own bridge.
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InvokeCommand, LambdaClient } from "@aws-sdk/client-lambda";
import { parse, stringify } from "yaml";
import type { LambdaFunction } from "@esb/common";
import { expectSuccess, helm, kubectl, repoRoot, run } from "../install/chart-tools.js";
import {
  buildAndLoadImages,
  clusterDown,
  helmInstall,
  clusterUp,
  hostState,
  mountsUnder,
  taskIds,
  type LocalCluster,
} from "./local-cluster.js";
import { eventually } from "@esb/controller/kube-test-support";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { agentTransport, staticTokenSource } from "@esb/common/agent-credentials";
import { AgentService } from "@esb/common/gen/esb/agent/v1/agent_pb";
import { SANDBOX_PROBE_CODE } from "../e2e/sandbox-probe.js";
import { eventsSurviveGatewayDeletion } from "./cluster-events.js";

const NS = "esb-system";
const MINUTE = 60_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Pod {
  metadata: { name: string; labels?: Record<string, string> };
  status: { phase?: string; podIP?: string; conditions?: { type: string; status: string }[] };
}

describe("ESB on a local Kubernetes cluster (kubelet, containerd, ingress)", () => {
  let dir = "";
  let cluster: LocalCluster;
  let lambda: LambdaClient;
  const figures: Record<string, number | undefined> = {};
  const k = async (...args: string[]) => kubectl(cluster.kubeconfig, args);
  const kOk = async (...args: string[]) => expectSuccess(await k(...args), `kubectl ${args.join(" ")}`);
  const pods = async (component: string): Promise<Pod[]> =>
    (
      JSON.parse(
        await kOk("-n", NS, "get", "pods", "-l", `app.kubernetes.io/component=${component}`, "-o", "json"),
      ) as { items: Pod[] }
    ).items;
  const ready = (p: Pod) =>
    p.status.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
  const lf = async (name: string) =>
    JSON.parse(await kOk("get", "lf", name, "-o", "json")) as {
      metadata: { generation: number; finalizers?: string[] };
      status?: {
        observedGeneration?: number;
        warmWorkers?: number;
        conditions?: { type: string; status: string }[];
      };
    };
  const lfReady = async (name: string, generation?: number) => {
    const f = await lf(name);
    const isReady = f.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
    const observed = generation === undefined || (f.status?.observedGeneration ?? 0) >= generation;
    return isReady && observed ? f : undefined;
  };
  const applyExample = async (file: string, edit?: (m: LambdaFunction) => void) => {
    const manifest = parse(
      await readFile(join(repoRoot, "examples", "functions", file), "utf8"),
    ) as LambdaFunction;
    edit?.(manifest);
    expectSuccess(
      await kubectl(cluster.kubeconfig, ["apply", "-f", "-"], stringify(manifest)),
      `kubectl apply ${file}`,
    );
  };
  const invoke = (name: string, payload: unknown, signal?: AbortSignal) =>
    fetch(`${cluster.ingress}/2015-03-31/functions/${name}/invocations`, {
      method: "POST",
      body: JSON.stringify(payload),
      signal: signal ?? AbortSignal.timeout(30_000),
    });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "esb-cluster-"));
    cluster = await clusterUp(join(dir, "cluster"));
    figures.clusterUpSeconds = cluster.upMs / 1000;
    figures.nodeReadySeconds = cluster.nodeReadySeconds;
    await buildAndLoadImages(cluster, join(dir, "images"));
    const t = Date.now();
    await helmInstall(cluster, NS);
    figures.helmInstallSeconds = (Date.now() - t) / 1000;
    lambda = new LambdaClient({
      endpoint: cluster.ingress,
      region: "us-east-1",
      credentials: { accessKeyId: "x", secretAccessKey: "x" },
      maxAttempts: 1,
    });
  }, 30 * MINUTE);

  afterAll(async () => {
    lambda?.destroy();
    console.log(`cluster figures: ${JSON.stringify(figures)}`);
    if (dir) {
      const down = await clusterDown(join(dir, "cluster"));
      await rm(dir, { recursive: true, force: true });
      if (down.code !== 0) throw new Error(`hack/cluster.sh down failed:\n${down.stderr}`);
    }
  }, 5 * MINUTE);

  it("hack/cluster.sh up again leaves the running cluster as it is and prints the same lines", async () => {
    const again = await clusterUp(cluster.dir);
    expect(again.kubeconfig).toBe(cluster.kubeconfig);
    expect(again.ingress).toBe(cluster.ingress);
    expect(await kOk("get", "nodes", "-o", "name")).toBe("node/esb-node\n");
  });

  it("helm install --wait: two controllers, the agent and two gateways Running and Ready", async () => {
    expect((await pods("controller")).filter(ready)).toHaveLength(2);
    expect((await pods("agent")).filter(ready)).toHaveLength(1);
    expect((await pods("gateway")).filter(ready)).toHaveLength(2);
    expect((await pods("victoria-logs")).filter(ready)).toHaveLength(1);
  });

  it(
    "kubectl apply: the examples become Ready, items-api with a warm (paused) worker",
    async () => {
      await applyExample("hello.yaml");
      await applyExample("items-api.yaml");
      await eventually("hello Ready", () => lfReady("hello"), 5 * MINUTE);
      const items = await eventually(
        "items-api Ready with a warm worker",
        async () => {
          const f = await lfReady("items-api");
          return f && (f.status?.warmWorkers ?? 0) >= 1 ? f : undefined;
        },
        5 * MINUTE,
      );
      expect(items.status?.warmWorkers).toBeGreaterThanOrEqual(1);
      expect(await taskIds(cluster)).not.toHaveLength(0);
    },
    11 * MINUTE,
  );

  it(
    "invokes through the ingress: curl, the AWS SDK's Invoke, and an HTTP route",
    async () => {
      const t = Date.now();
      const curl = await run("curl", [
        "-sS",
        "-X",
        "POST",
        "-w",
        "\n%{http_code}",
        `${cluster.ingress}/2015-03-31/functions/hello/invocations`,
        "-d",
        '{"name":"ESB"}',
      ]);
      figures.firstInvokeSeconds = (Date.now() - t) / 1000;
      const [body, status] = expectSuccess(curl, "curl").trimEnd().split("\n");
      expect(status).toBe("200");
      expect(JSON.parse(body)).toMatchObject({ ok: true, message: "hello ESB" });

      const out = await lambda.send(new InvokeCommand({ FunctionName: "hello", Payload: '{"name":"SDK"}' }));
      expect(out.StatusCode).toBe(200);
      expect(out.FunctionError).toBeUndefined();
      expect(JSON.parse(Buffer.from(out.Payload!).toString())).toMatchObject({ message: "hello SDK" });

      // An HTTP route (payload 2.0): the function's statusCode, headers and body come back.
      const created = await fetch(`${cluster.ingress}/items`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ name: "pen" }),
      });
      expect(created.status).toBe(201);
      expect(created.headers.get("content-type")).toBe("application/json");
      expect(await created.json()).toMatchObject({ name: "pen" });
      // Each worker keeps its own items: an id no worker has shows the path parameter reached it.
      const got = await fetch(`${cluster.ingress}/items/nope`);
      expect(got.status).toBe(404);
      expect(await got.json()).toEqual({ message: "no item nope" });

      const missing = await invoke("no-such-function", {});
      expect(missing.status).toBe(404);
      expect(missing.headers.get("x-amzn-errortype")).toBe("ResourceNotFoundException");
    },
    2 * MINUTE,
  );

  it(
    "ships the function's lines to the chart's VictoriaLogs, where esb logs finds them by request id",
    async () => {
      const out = await lambda.send(new InvokeCommand({ FunctionName: "hello", Payload: '{"name":"logs"}' }));
      const requestId = out.$metadata.requestId!;
      expect(requestId).toBeTruthy();
      // VictoriaLogs' pod on the cluster's bridge; its credentials from the chart's Secret.
      const url = `http://${(await pods("victoria-logs"))[0].status.podIP!}:9428`;
      const secret = JSON.parse(
        await kOk("-n", NS, "get", "secret", "esb-victoria-logs-auth", "-o", "json"),
      ) as { data: { username: string; password: string } };
      const creds = {
        ESB_LOGS_USERNAME: Buffer.from(secret.data.username, "base64").toString(),
        ESB_LOGS_PASSWORD: Buffer.from(secret.data.password, "base64").toString(),
      };
      const anonymous = await fetch(`${url}/select/logsql/query`, {
        method: "POST",
        body: new URLSearchParams({ query: "*" }),
      });
      expect(anonymous.status).toBe(401);
      await anonymous.arrayBuffer();
      const esbLogs = () =>
        run("env", [
          ...Object.entries(creds).map(([k, v]) => `${k}=${v}`),
          process.execPath,
          join(repoRoot, "cli", "dist", "main.js"),
          "logs",
          "hello",
          "--logs-url",
          url,
          "--request-id",
          requestId,
        ]);
      const printed = await eventually(
        "the invocation's REPORT line in VictoriaLogs",
        async () => {
          const r = await esbLogs();
          return r.code === 0 && r.stdout.includes(`REPORT RequestId: ${requestId}`) ? r.stdout : undefined;
        },
        MINUTE,
      );
      const lines = printed.trim().split("\n");
      expect(lines[0]).toContain(`START RequestId: ${requestId} Version: $LATEST`);
      expect(lines.some((l) => l.includes(`END RequestId: ${requestId}`))).toBe(true);
    },
    2 * MINUTE,
  );

  it(
    "only ESB's ServiceAccounts reach the agent; a function reaches neither the agent, the API server nor another worker",
    async () => {
      // The agent listens on the node's address (host network).
      const node = (await pods("agent"))[0].status.podIP!;
      const agentUrl = `http://${node}:50051`;
      const token = async (sa: string, ns: string) =>
        (await kOk("create", "token", sa, "-n", ns, "--audience", "esb-agent", "--duration", "10m")).trim();
      const agentAs = (t?: string) =>
        createClient(AgentService, agentTransport(agentUrl, t ? staticTokenSource(t) : undefined));
      const codeOf = (p: Promise<unknown>) =>
        p.then(
          () => "OK",
          (e: unknown) => Code[ConnectError.from(e).code],
        );
      expect(await codeOf(agentAs().listWorkers({}))).toBe("Unauthenticated");
      // A valid agent-audience token of a ServiceAccount that is not ESB's, and the gateway's on a controller method.
      expect(await codeOf(agentAs(await token("default", "default")).listWorkers({}))).toBe(
        "PermissionDenied",
      );
      expect(await codeOf(agentAs(await token("esb-gateway", NS)).listWorkers({}))).toBe("PermissionDenied");
      // A token for the Kubernetes API itself is not a token for the agent.
      const apiToken = (await kOk("create", "token", "esb-controller", "-n", NS, "--duration", "10m")).trim();
      expect(await codeOf(agentAs(apiToken).listWorkers({}))).toBe("Unauthenticated");
      const { workers } = await agentAs(await token("esb-controller", NS)).listWorkers({});
      const neighbour = workers.find((w) => w.function?.name === "items-api");
      expect(neighbour).toBeDefined();
      const [workerHost, workerPort] = neighbour!.address.split(":");

      expectSuccess(
        await kubectl(
          cluster.kubeconfig,
          ["apply", "-f", "-"],
          stringify({
            apiVersion: "esb.dev/v1alpha1",
            kind: "LambdaFunction",
            metadata: { name: "probe", namespace: "default" },
            spec: {
              runtime: "nodejs24.x",
              handler: "index.handler",
              timeout: 30,
              code: { inline: { "index.mjs": SANDBOX_PROBE_CODE } },
            },
          }),
        ),
        "kubectl apply probe",
      );
      await eventually("probe Ready", () => lfReady("probe"), 3 * MINUTE);
      const res = await invoke("probe", {
        targets: [
          { name: "agent", host: node, port: 50051 },
          { name: "apiServer", host: "10.96.0.1", port: 443 },
          { name: "otherWorker", host: workerHost, port: Number(workerPort) },
        ],
      });
      expect(res.status).toBe(200);
      const body = (await res.json()) as {
        status: Record<string, string>;
        writes: Record<string, string>;
        connects: Record<string, string>;
      };
      expect(body.status).toMatchObject({ Seccomp: "2", NoNewPrivs: "1", CapEff: "0000000000000000" });
      expect(body.status.Uid.split("\t")[0]).not.toBe("0");
      expect(body.writes).toEqual({ root: "EROFS", task: "EROFS", tmp: "written" });
      expect(body.connects).toEqual({
        agent: "EHOSTUNREACH",
        apiServer: "EHOSTUNREACH",
        otherWorker: "EHOSTUNREACH",
      });
      await kOk("delete", "lf", "probe", "--wait=true", "--timeout=120s");
    },
    5 * MINUTE,
  );

  it(
    "a spec change rolls out: the next invocation runs the new code",
    async () => {
      await applyExample("hello.yaml", (m) => {
        m.spec.code!.inline!["index.mjs"] =
          "export const handler = async (e) => ({ ok: true, message: `goodbye ${e?.name}` });\n";
      });
      const generation = (await lf("hello")).metadata.generation;
      await eventually("hello at its new generation", () => lfReady("hello", generation), 3 * MINUTE);
      const body = await eventually(
        "the new code answers",
        async () => {
          const r = await invoke("hello", { name: "v2" });
          const json = (await r.json()) as { message?: string };
          return json.message === "goodbye v2" ? json : undefined;
        },
        MINUTE,
      );
      expect(body.message).toBe("goodbye v2");
    },
    5 * MINUTE,
  );

  it(
    "the agent pod deleted under load: the DaemonSet brings it back, it re-adopts its workers, no call hangs",
    async () => {
      const [agent] = await pods("agent");
      const workersBefore = await taskIds(cluster);
      expect(workersBefore.length).toBeGreaterThan(0);
      let stop = false;
      const outcomes: { status: number; errorType: string | null }[] = [];
      const load = Array.from({ length: 4 }, async () => {
        while (!stop) {
          try {
            const r = await invoke("hello", { name: "load" }, AbortSignal.timeout(60_000));
            outcomes.push({ status: r.status, errorType: r.headers.get("x-amzn-errortype") });
            await r.arrayBuffer();
          } catch (err) {
            outcomes.push({ status: 0, errorType: (err as Error).name }); // a hang ends as TimeoutError
          }
        }
      });
      await sleep(1000);
      await kOk("-n", NS, "delete", "pod", agent.metadata.name, "--wait=false");
      const fresh = await eventually(
        "a new agent pod Ready",
        async () => {
          const p = (await pods("agent")).find((x) => x.metadata.name !== agent.metadata.name && ready(x));
          return p;
        },
        3 * MINUTE,
      );
      await sleep(3000);
      stop = true;
      await Promise.all(load);
      figures.callsDuringAgentRestart = outcomes.length;
      figures.failedCallsDuringAgentRestart = outcomes.filter((o) => o.status !== 200).length;
      expect(fresh.metadata.name).not.toBe(agent.metadata.name);
      expect(outcomes.filter((o) => o.status === 0)).toEqual([]);
      for (const o of outcomes.filter((x) => x.status !== 200)) expect(o.errorType).toMatch(/Exception$/);
      expect(outcomes.filter((o) => o.status === 200).length).toBeGreaterThan(0);
      // items-api's provisioned worker was adopted by the new agent, not replaced.
      const workersAfter = await taskIds(cluster);
      expect(workersAfter).toEqual(
        expect.arrayContaining(workersBefore.filter((id) => id.includes("items-api"))),
      );
      expect((await fetch(`${cluster.ingress}/items`)).status).toBe(200);
    },
    6 * MINUTE,
  );

  it(
    "the leader controller deleted: the other replica takes the lease and reconciles",
    async () => {
      const holder = async () =>
        (
          JSON.parse(await kOk("-n", NS, "get", "lease", "esb-controller", "-o", "json")) as {
            spec: { holderIdentity?: string };
          }
        ).spec.holderIdentity;
      const leader = await eventually("a leader", holder, MINUTE);
      await kOk("-n", NS, "delete", "pod", leader, "--wait=false");
      const next = await eventually(
        "another leader",
        async () => {
          const h = await holder();
          return h && h !== leader ? h : undefined;
        },
        2 * MINUTE,
      );
      expect(next).not.toBe(leader);
      await applyExample("shell-echo.yaml");
      await eventually("shell-echo Ready under the new leader", () => lfReady("shell-echo"), 3 * MINUTE);
      expect((await invoke("shell-echo", { say: "hi" })).status).toBe(200);
    },
    6 * MINUTE,
  );

  it(
    "Events accepted by a gateway pod just before its deletion all run on the other replicas (NATS JetStream)",
    async () => {
      figures.eventsRunTwice = await eventsSurviveGatewayDeletion(cluster.kubeconfig, NS);
    },
    12 * MINUTE,
  );

  it(
    "kubectl delete: the functions' workers are gone from containerd",
    async () => {
      await kOk("delete", "lf", "hello", "shell-echo", "slow-events", "--wait=true", "--timeout=120s");
      const left = await eventually(
        "no hello/shell-echo/slow-events task",
        async () => {
          const ids = await taskIds(cluster);
          return ids.some((id) => /hello|shell-echo|slow-events/.test(id)) ? undefined : ids;
        },
        2 * MINUTE,
      );
      expect(left.filter((id) => /hello|shell-echo|slow-events/.test(id))).toEqual([]);
    },
    4 * MINUTE,
  );

  it(
    "helm uninstall: no pod, task, network namespace or CNI allocation is left; functions stay",
    async () => {
      expect(await taskIds(cluster)).not.toHaveLength(0); // items-api's warm worker
      expectSuccess(
        await helm([
          "--kubeconfig",
          cluster.kubeconfig,
          "uninstall",
          "esb",
          "--namespace",
          NS,
          "--wait",
          "--timeout",
          "3m",
        ]),
        "helm uninstall",
      );
      await eventually(
        "no ESB pod",
        async () =>
          JSON.parse(await kOk("-n", NS, "get", "pods", "-o", "json")).items.length === 0 ? true : undefined,
        2 * MINUTE,
      );
      expect(await taskIds(cluster)).toEqual([]);
      expect(await readdir(join(cluster.dir, "netns")).catch(() => [])).toEqual([]);
      const allocations = (
        await readdir(join(cluster.dir, "cni", "ipam", "esb-local")).catch(() => [])
      ).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
      expect(allocations).toEqual([]);
      const items = await lf("items-api");
      expect(items.metadata.finalizers ?? []).toEqual([]);
    },
    5 * MINUTE,
  );

  it(
    "hack/cluster.sh down leaves the machine as it was",
    async () => {
      const down = await clusterDown(cluster.dir);
      expectSuccess(down, "hack/cluster.sh down");
      expectSuccess(await clusterDown(cluster.dir), "hack/cluster.sh down, a second time");
      expect(await hostState(cluster.dir)).toEqual(cluster.hostBefore);
      expect(await mountsUnder(cluster.dir)).toEqual([]);
      expect(await readdir(dir)).not.toContain("cluster");
    },
    5 * MINUTE,
  );
});
