// The chart's logs values: by default a VictoriaLogs (StatefulSet, HTTP Basic credentials from a
// generated Secret on every endpoint, volume claim, only the agents and allowedClients may reach
// it) and the agents shipping worker output to it with those credentials; logs.victoriaLogs.url
// uses an existing one instead, logs.enabled=false keeps no logs.
import { describe, it, expect } from "@jest/globals";
import { findManifest, helm, renderChart, templateArgs, type Manifest } from "./chart-tools.js";

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string } };
}
interface PodSpec {
  containers: {
    name: string;
    image: string;
    args?: string[];
    env?: EnvVar[];
    securityContext?: { readOnlyRootFilesystem?: boolean };
  }[];
  volumes?: { name: string; emptyDir?: object; secret?: { secretName: string } }[];
  securityContext?: { runAsNonRoot?: boolean };
}

const spec = (m: Manifest) => (m.spec as { template: { spec: PodSpec } }).template.spec;
const agentEnv = (manifests: Manifest[]) =>
  Object.fromEntries(
    (spec(findManifest(manifests, "DaemonSet", "esb-agent")).containers[0].env ?? []).map((e) => [e.name, e]),
  );
const logsParts = (manifests: Manifest[]) =>
  manifests.filter((m) => m.metadata.name.startsWith("esb-victoria-logs"));

describe("chart: logs", () => {
  it("deploys VictoriaLogs with Basic auth and a volume, and gives the agents its URL and credentials", async () => {
    const { manifests } = await renderChart();
    const sts = findManifest(manifests, "StatefulSet", "esb-victoria-logs");
    const pod = spec(sts);
    const c = pod.containers[0];
    expect(c.image).toBe("esb/victoria-logs:1.52.2");
    expect(pod.securityContext?.runAsNonRoot).toBe(true);
    expect(c.securityContext?.readOnlyRootFilesystem).toBe(true);
    expect(c.args).toEqual([
      "-storageDataPath=/data",
      "-httpListenAddr=:9428",
      "-retentionPeriod=7d",
      "-httpAuth.username=$(VL_USERNAME)",
      "-httpAuth.password=file:///etc/victoria-logs/auth/password",
    ]);
    expect(pod.volumes?.find((v) => v.name === "auth")?.secret?.secretName).toBe("esb-victoria-logs-auth");
    const claims = (sts.spec as { volumeClaimTemplates?: { metadata: { name: string } }[] })
      .volumeClaimTemplates;
    expect(claims?.map((x) => x.metadata.name)).toEqual(["data"]);
    const secret = findManifest(manifests, "Secret", "esb-victoria-logs-auth");
    const data = secret.data as { username: string; password: string };
    expect(Buffer.from(data.username, "base64").toString()).toBe("esb");
    expect(Buffer.from(data.password, "base64").toString()).toMatch(/^[A-Za-z0-9]{40}$/);
    const policy = findManifest(manifests, "NetworkPolicy", "esb-victoria-logs");
    const ingress = (policy.spec as { ingress: { from: object[]; ports: object[] }[] }).ingress;
    expect(ingress).toEqual([
      {
        from: [
          {
            podSelector: { matchLabels: expect.objectContaining({ "app.kubernetes.io/component": "agent" }) },
          },
        ],
        ports: [{ port: 9428, protocol: "TCP" }],
      },
    ]);
    expect(findManifest(manifests, "Service", "esb-victoria-logs")).toBeDefined();
    const env = agentEnv(manifests);
    expect(env.AGENT_LOGS_URL.value).toBe("http://$(ESB_VICTORIA_LOGS_SERVICE_HOST):9428");
    expect(env.AGENT_LOGS_BUFFER_LINES.value).toBe("20000");
    expect(env.AGENT_LOGS_USERNAME.valueFrom).toEqual({
      secretKeyRef: { name: "esb-victoria-logs-auth", key: "username" },
    });
    expect(env.AGENT_LOGS_PASSWORD.valueFrom).toEqual({
      secretKeyRef: { name: "esb-victoria-logs-auth", key: "password" },
    });
  });

  it("persistence off puts the store on an emptyDir; allowedClients join the agents in the policy", async () => {
    const { manifests } = await renderChart({
      set: [
        "logs.victoriaLogs.persistence.enabled=false",
        "logs.victoriaLogs.allowedClients[0].namespaceSelector.matchLabels.team=monitoring",
      ],
    });
    const sts = findManifest(manifests, "StatefulSet", "esb-victoria-logs");
    expect((sts.spec as { volumeClaimTemplates?: unknown }).volumeClaimTemplates).toBeUndefined();
    expect(spec(sts).volumes?.find((v) => v.name === "data")?.emptyDir).toEqual({ sizeLimit: "10Gi" });
    const policy = findManifest(manifests, "NetworkPolicy", "esb-victoria-logs");
    const from = (policy.spec as { ingress: { from: object[] }[] }).ingress[0].from;
    expect(from[1]).toEqual({ namespaceSelector: { matchLabels: { team: "monitoring" } } });
  });

  it("logs.victoriaLogs.url uses an existing VictoriaLogs (credentials from existingSecret) and deploys none", async () => {
    const { manifests } = await renderChart({
      set: ["logs.victoriaLogs.url=http://vl.monitoring:9428", "logs.victoriaLogs.existingSecret=vl-auth"],
    });
    expect(logsParts(manifests)).toEqual([]);
    const env = agentEnv(manifests);
    expect(env.AGENT_LOGS_URL.value).toBe("http://vl.monitoring:9428");
    expect(env.AGENT_LOGS_PASSWORD.valueFrom).toEqual({ secretKeyRef: { name: "vl-auth", key: "password" } });
    const open = await renderChart({ set: ["logs.victoriaLogs.url=http://vl.monitoring:9428"] });
    expect(agentEnv(open.manifests).AGENT_LOGS_USERNAME).toBeUndefined();
  });

  it("logs.enabled=false deploys no VictoriaLogs and ships nothing", async () => {
    const { manifests } = await renderChart({ set: ["logs.enabled=false"] });
    expect(logsParts(manifests)).toEqual([]);
    expect(Object.keys(agentEnv(manifests)).filter((k) => k.startsWith("AGENT_LOGS_"))).toEqual([]);
  });

  it("refuses a URL that is not http(s) and a retention VictoriaLogs does not read", async () => {
    const url = await helm(templateArgs({ set: ["logs.victoriaLogs.url=tcp://vl:9428"] }));
    expect(url.code).not.toBe(0);
    expect(url.stderr).toContain("/logs/victoriaLogs/url");
    const retention = await helm(templateArgs({ set: ["logs.victoriaLogs.retentionPeriod=7 days"] }));
    expect(retention.code).not.toBe(0);
    expect(retention.stderr).toContain("/logs/victoriaLogs/retentionPeriod");
  });
});
