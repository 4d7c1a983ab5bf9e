// The Helm chart on its own: helm lint, what `helm template` renders for the
// default and the optional features, the values schema refusing bad values
// with clear messages, and the chart's CRDs being the repository's.
import { describe, it, expect } from "@jest/globals";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import {
  chartDir,
  expectSuccess,
  findManifest,
  helm,
  renderChart,
  repoRoot,
  run,
  templateArgs,
  type Manifest,
} from "./chart-tools.js";

interface Container {
  name: string;
  image: string;
  env?: { name: string; value?: string; valueFrom?: unknown }[];
  securityContext?: Record<string, unknown>;
  volumeMounts?: { name: string; mountPath: string; mountPropagation?: string; readOnly?: boolean }[];
  livenessProbe?: unknown;
  readinessProbe?: unknown;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
}

interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  hostNetwork?: boolean;
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
  tolerations?: unknown[];
  volumes?: { name: string; hostPath?: { path: string } }[];
}

function podSpec(workload: Manifest): PodSpec {
  return (workload.spec as { template: { spec: PodSpec } }).template.spec;
}

function envOf(container: Container): Record<string, string> {
  return Object.fromEntries(
    (container.env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value ?? ""]),
  );
}

/** A PolicyRule: resource rules, or nonResourceURLs (then no apiGroups/resources). */
type Rule = { apiGroups?: string[]; resources?: string[]; nonResourceURLs?: string[]; verbs: string[] };

function rulesOf(role: Manifest): Rule[] {
  return role.rules as Rule[];
}

describe("helm chart charts/esb", () => {
  it("passes helm lint --strict with the defaults and with every optional feature on", async () => {
    expectSuccess(await helm(["lint", "--strict", chartDir]), "helm lint");
    const optional = [
      "gateway.ingress.enabled=true",
      "gateway.ingress.className=nginx",
      "gateway.ingress.host=esb.example.com",
      "gateway.ingress.tls.enabled=true",
      "gateway.ingress.tls.secretName=esb-tls",
      "serviceMonitor.enabled=true",
      "controller.watchNamespace=functions",
      "agent.runtime=docker",
    ];
    expectSuccess(
      await helm(["lint", "--strict", chartDir, ...optional.flatMap((s) => ["--set", s])]),
      "helm lint",
    );
  });

  it("renders the three components with the contract's environment by default", async () => {
    const { manifests } = await renderChart({ release: "esb", namespace: "esb-system" });
    const kinds = new Set(manifests.map((m) => m.kind));
    expect(kinds).not.toContain("Ingress");
    expect(kinds).not.toContain("ServiceMonitor");

    const controller = findManifest(manifests, "Deployment", "esb-controller");
    expect((controller.spec as { replicas: number }).replicas).toBe(2);
    const controllerPod = podSpec(controller);
    expect(controllerPod.serviceAccountName).toBe("esb-controller");
    const controllerEnv = envOf(controllerPod.containers[0]);
    expect(controllerEnv).toMatchObject({
      LEADER_ELECTION: "true",
      WATCH_NAMESPACE: "",
      GATEWAY_URL: "http://esb-gateway.esb-system.svc:9000",
      AGENT_SELECTOR:
        "app.kubernetes.io/name=esb,app.kubernetes.io/instance=esb,app.kubernetes.io/component=agent",
    });
    expect(controllerPod.containers[0].env?.map((e) => e.name)).toEqual(
      expect.arrayContaining(["POD_NAME", "POD_NAMESPACE"]),
    );
    expect(controllerPod.containers[0].image).toBe("esb/controller:0.1.0");
    expect(controllerPod.containers[0].securityContext).toMatchObject({ allowPrivilegeEscalation: false });
    expect(controllerPod.containers[0].livenessProbe).toBeDefined();
    expect(controllerPod.containers[0].resources?.limits?.memory).toBeDefined();

    const agent = findManifest(manifests, "DaemonSet", "esb-agent");
    const agentPod = podSpec(agent);
    // Its API token serves one call: TokenReview of the controller's and gateway's agent tokens.
    expect(agentPod.automountServiceAccountToken).toBe(true);
    expect(agentPod.hostNetwork).toBe(true);
    expect(agentPod.tolerations).toEqual([{ operator: "Exists" }]);
    const agentContainer = agentPod.containers.find((c) => c.name === "agent");
    expect(agentContainer?.securityContext).toMatchObject({ privileged: true });
    expect(envOf(agentContainer as Container)).toMatchObject({
      AGENT_RUNTIME: "containerd",
      CONTAINERD_SOCKET: "/run/containerd/containerd.sock",
      CONTAINERD_NAMESPACE: "esb",
      AGENT_PORT: "50051",
      AGENT_METRICS_PORT: "9090",
      AGENT_STATE_DIR: "/var/lib/esb",
      AGENT_RESYNC_SECONDS: "60",
      CNI_MODE: "bridge",
      CNI_BRIDGE: "esb-cni0",
      CNI_SUBNET: "10.88.0.0/16",
      AGENT_AUTH: "kubernetes",
      AGENT_CONTROLLER_USERS: "system:serviceaccount:esb-system:esb-controller",
      AGENT_GATEWAY_USERS: "system:serviceaccount:esb-system:esb-gateway",
    });
    expect(agentContainer?.env?.find((e) => e.name === "NODE_NAME")?.valueFrom).toEqual({
      fieldRef: { fieldPath: "spec.nodeName" },
    });
    const mounts = Object.fromEntries((agentContainer?.volumeMounts ?? []).map((m) => [m.mountPath, m]));
    expect(mounts["/run/netns"]?.mountPropagation).toBe("Bidirectional");
    for (const path of [
      "/run/containerd",
      "/var/lib/esb",
      "/opt/cni/bin",
      "/etc/cni/net.d",
      "/var/lib/cni",
      "/sys/fs/cgroup",
    ]) {
      expect(mounts[path]).toBeDefined();
    }
    const hostPaths = (agentPod.volumes ?? []).map((v) => v.hostPath?.path);
    expect(hostPaths).toEqual(
      expect.arrayContaining(["/run/containerd", "/run/netns", "/var/lib/esb", "/sys/fs/cgroup"]),
    );

    const gateway = findManifest(manifests, "Deployment", "esb-gateway");
    const gatewayEnv = envOf(podSpec(gateway).containers[0]);
    expect(gatewayEnv).toMatchObject({
      GATEWAY_PORT: "9000",
      GATEWAY_NAMESPACE: "esb-system",
      GATEWAY_PROCESSES: "auto",
    });
    expect(gatewayEnv.AGENT_SELECTOR).toBe(controllerEnv.AGENT_SELECTOR);
    expect(findManifest(manifests, "Service", "esb-gateway").spec).toMatchObject({ ports: [{ port: 9000 }] });

    for (const name of ["esb-controller", "esb-gateway"]) {
      expect(findManifest(manifests, "PodDisruptionBudget", name).spec).toMatchObject({ minAvailable: 1 });
      // Their identity towards the agents: a token for the agents' audience only, rotated by the kubelet.
      const pod = podSpec(findManifest(manifests, "Deployment", name));
      expect(envOf(pod.containers[0]).AGENT_TOKEN_FILE).toBe("/var/run/secrets/esb.dev/agent-token/token");
      expect(JSON.stringify(pod.volumes)).toContain('"serviceAccountToken":{"audience":"esb-agent"');
    }
    for (const name of ["esb-controller", "esb-gateway", "esb-agent"])
      findManifest(manifests, "ServiceAccount", name);
  });

  it("lets only gateway and controller pods reach the agents' gRPC port", async () => {
    const { manifests } = await renderChart();
    const policy = findManifest(manifests, "NetworkPolicy", "esb-agent");
    const spec = policy.spec as {
      podSelector: { matchLabels: Record<string, string> };
      ingress: {
        from?: { podSelector: { matchLabels: Record<string, string> } }[];
        ports: { port: number }[];
      }[];
    };
    expect(spec.podSelector.matchLabels["app.kubernetes.io/component"]).toBe("agent");
    const grpc = spec.ingress.find((rule) => rule.ports.some((p) => p.port === 50051));
    expect(grpc?.from?.map((f) => f.podSelector.matchLabels["app.kubernetes.io/component"]).sort()).toEqual([
      "controller",
      "gateway",
    ]);
    // No other rule opens the gRPC port.
    expect(spec.ingress.filter((rule) => rule.ports.some((p) => p.port === 50051))).toHaveLength(1);
    const off = await renderChart({ set: ["networkPolicy.enabled=false"] });
    expect(off.manifests.some((m) => m.kind === "NetworkPolicy")).toBe(false);
  });

  it("grants each component only its own RBAC rules", async () => {
    const { manifests } = await renderChart();
    const controllerRules = rulesOf(findManifest(manifests, "ClusterRole", "esb-controller"));
    expect(controllerRules).toContainEqual({
      apiGroups: ["esb.dev"],
      resources: ["lambdafunctions/status"],
      verbs: ["update", "patch"],
    });
    const leases = rulesOf(findManifest(manifests, "Role", "esb-controller"));
    expect(leases).toContainEqual({
      apiGroups: ["coordination.k8s.io"],
      resources: ["leases"],
      verbs: ["get", "create", "update"],
    });
    const gatewayRules = rulesOf(findManifest(manifests, "ClusterRole", "esb-gateway"));
    expect(gatewayRules).toEqual([
      { apiGroups: ["esb.dev"], resources: ["lambdafunctions"], verbs: ["get", "list", "watch"] },
    ]);
    // The agent may only review tokens (to know who calls it); no Role in any namespace.
    expect(rulesOf(findManifest(manifests, "ClusterRole", "esb-agent"))).toEqual([
      { apiGroups: ["authentication.k8s.io"], resources: ["tokenreviews"], verbs: ["create"] },
    ]);
    expect(manifests.filter((m) => m.kind === "Role" && m.metadata.name.includes("agent"))).toEqual([]);
    // /metrics callers are reviewed by each component; readers are whoever is bound to metrics-reader.
    expect(rulesOf(findManifest(manifests, "ClusterRole", "esb-metrics-auth"))).toEqual([
      { apiGroups: ["authentication.k8s.io"], resources: ["tokenreviews"], verbs: ["create"] },
      { apiGroups: ["authorization.k8s.io"], resources: ["subjectaccessreviews"], verbs: ["create"] },
    ]);
    const metricsAuthBinding = findManifest(
      manifests,
      "ClusterRoleBinding",
      "esb-metrics-auth",
    ) as unknown as {
      subjects: { name: string }[];
    };
    expect(metricsAuthBinding.subjects.map((s) => s.name).sort()).toEqual([
      "esb-agent",
      "esb-controller",
      "esb-gateway",
    ]);
    expect(rulesOf(findManifest(manifests, "ClusterRole", "esb-metrics-reader"))).toEqual([
      { nonResourceURLs: ["/metrics"], verbs: ["get"] },
    ]);
    for (const role of manifests.filter((m) => m.kind === "ClusterRole" || m.kind === "Role")) {
      for (const rule of rulesOf(role)) {
        expect(rule.resources ?? []).not.toContain("secrets");
        expect(rule.verbs).not.toContain("*");
        expect(rule.resources ?? []).not.toContain("*");
      }
    }

    // Watching one namespace turns the controller's ClusterRole into a Role there.
    const scoped = await renderChart({ set: ["controller.watchNamespace=functions"] });
    expect(
      scoped.manifests.some((m) => m.kind === "ClusterRole" && m.metadata.name === "esb-controller"),
    ).toBe(false);
    expect(findManifest(scoped.manifests, "Role", "esb-controller").metadata.namespace).toBe("functions");
  });

  it("renders the Ingress with the configured class and host, and ServiceMonitors when enabled", async () => {
    const { manifests } = await renderChart({
      release: "edge",
      namespace: "serverless",
      set: [
        "gateway.ingress.enabled=true",
        "gateway.ingress.className=nginx",
        "gateway.ingress.host=lambda.example.com",
        "serviceMonitor.enabled=true",
        "serviceMonitor.labels.release=prometheus",
      ],
    });
    const ingress = findManifest(manifests, "Ingress", "edge-esb-gateway");
    expect(ingress.spec).toMatchObject({
      ingressClassName: "nginx",
      rules: [
        {
          host: "lambda.example.com",
          http: {
            paths: [{ path: "/", pathType: "Prefix", backend: { service: { name: "edge-esb-gateway" } } }],
          },
        },
      ],
    });
    const monitors = manifests.filter((m) => m.kind === "ServiceMonitor");
    expect(monitors.map((m) => m.metadata.name).sort()).toEqual([
      "edge-esb-agent",
      "edge-esb-controller",
      "edge-esb-gateway",
    ]);
    for (const monitor of monitors) {
      expect(monitor.apiVersion).toBe("monitoring.coreos.com/v1");
      expect(monitor.metadata.labels?.release).toBe("prometheus");
      const selector = (monitor.spec as { selector: { matchLabels: Record<string, string> } }).selector
        .matchLabels;
      // Each ServiceMonitor selects a Service the chart renders.
      const services = manifests.filter(
        (m) =>
          m.kind === "Service" && Object.entries(selector).every(([k, v]) => m.metadata.labels?.[k] === v),
      );
      expect(services.length).toBeGreaterThan(0);
    }
  });

  it("builds image references from registry, repository and tag", async () => {
    const { manifests } = await renderChart({
      set: [
        "image.registry=localhost:5001",
        "image.tag=dev",
        "agent.image.tag=fix1",
        "image.pullPolicy=Always",
      ],
    });
    const images = manifests
      .filter((m) => m.kind === "Deployment" || m.kind === "DaemonSet")
      .flatMap((m) => podSpec(m).containers.map((c) => [m.metadata.name, c.image]));
    expect(Object.fromEntries(images)).toEqual({
      "esb-controller": "localhost:5001/esb/controller:dev",
      "esb-gateway": "localhost:5001/esb/gateway:dev",
      "esb-agent": "localhost:5001/esb/agent:fix1",
    });
  });

  // helm validates values.schema.json before rendering; its message names the
  // offending value, and the schema's own words say what is allowed.
  const rejected: [string, string[], RegExp[]][] = [
    [
      "negative controller replicas",
      ["controller.replicas=-1"],
      [/controller/, /replicas/, /minimum|greater than or equal/i],
    ],
    ["an unknown agent runtime", ["agent.runtime=foo"], [/runtime/, /containerd/, /docker/]],
    ["a misspelt value", ["gateway.replicaz=3"], [/replicaz/, /additional ?propert/i]],
    ["a port out of range", ["gateway.port=70000"], [/port/, /maximum|less than or equal/i]],
    ["a bad CNI subnet", ["agent.cni.subnet=10.88.0.0"], [/subnet/]],
    ["an unknown pull policy", ["image.pullPolicy=Sometimes"], [/pullPolicy/, /IfNotPresent/]],
  ];
  it.each(rejected)("refuses %s at install time with a clear message", async (_what, set, patterns) => {
    const result = await helm(templateArgs({ set }));
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/values don't meet the specifications of the schema/);
    for (const pattern of patterns) expect(result.stderr).toMatch(pattern);
  });

  it("refuses combinations the schema cannot express with the chart's own message", async () => {
    const noElection = await helm(templateArgs({ set: ["controller.leaderElection=false"] }));
    expect(noElection.code).not.toBe(0);
    expect(noElection.stderr).toContain("controller.replicas > 1 needs controller.leaderElection=true");
    expectSuccess(
      await helm(templateArgs({ set: ["controller.leaderElection=false", "controller.replicas=1"] })),
      "helm template with one unelected controller",
    );
    const tlsWithoutHost = await helm(
      templateArgs({
        set: [
          "gateway.ingress.enabled=true",
          "gateway.ingress.tls.enabled=true",
          "gateway.ingress.tls.secretName=s",
        ],
      }),
    );
    expect(tlsWithoutHost.code).not.toBe(0);
    expect(tlsWithoutHost.stderr).toContain("gateway.ingress.tls.enabled needs gateway.ingress.host");
    const kubeletNamespace = await helm(templateArgs({ set: ["agent.containerd.namespace=k8s.io"] }));
    expect(kubeletNamespace.code).not.toBe(0);
    expect(kubeletNamespace.stderr).toContain("agent.containerd.namespace must not be k8s.io");
  });

  it("carries exactly the repository's CRDs (hack/sync-chart-crds.sh)", async () => {
    const source = readdirSync(join(repoRoot, "crds")).filter((f) => f.endsWith(".yaml"));
    expect(source).toContain("esb.dev_lambdafunctions.yaml");
    expect(readdirSync(join(chartDir, "crds")).sort()).toEqual(source.sort());
    for (const file of source) {
      const inChart = readFileSync(join(chartDir, "crds", file), "utf8");
      const original = readFileSync(join(repoRoot, "crds", file), "utf8");
      if (inChart !== original)
        throw new Error(`charts/esb/crds/${file} differs from crds/${file}: run hack/sync-chart-crds.sh`);
    }
    expectSuccess(
      await run(join(repoRoot, "hack", "sync-chart-crds.sh"), ["--check"]),
      "hack/sync-chart-crds.sh --check",
    );
  });
});
