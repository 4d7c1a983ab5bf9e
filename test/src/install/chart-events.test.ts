// The chart's events values: by default a NATS with JetStream (StatefulSet,
// token from a generated Secret, volume claim, only gateways may reach it) and
// the gateways pointed at it with that token; events.nats.url uses an existing
// NATS instead, events.store=memory deploys none.
import { describe, it, expect } from "@jest/globals";
import { findManifest, helm, renderChart, templateArgs, type Manifest } from "./chart-tools.js";

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string } };
}
interface PodSpec {
  containers: { name: string; image: string; args?: string[]; env?: EnvVar[] }[];
  volumes?: { name: string; emptyDir?: object; configMap?: { name: string } }[];
  securityContext?: { runAsNonRoot?: boolean };
}

const spec = (m: Manifest) => (m.spec as { template: { spec: PodSpec } }).template.spec;
const gatewayEnv = (manifests: Manifest[]) =>
  Object.fromEntries(
    (spec(findManifest(manifests, "Deployment", "esb-gateway")).containers[0].env ?? []).map((e) => [
      e.name,
      e,
    ]),
  );
const natsParts = (manifests: Manifest[]) =>
  manifests.filter((m) => (m.metadata as { name: string }).name.startsWith("esb-nats"));

describe("chart: events", () => {
  it("deploys NATS with JetStream, token auth and a volume, and gives the gateways its URL and token", async () => {
    const { manifests } = await renderChart();
    const sts = findManifest(manifests, "StatefulSet", "esb-nats");
    const pod = spec(sts);
    expect(pod.containers[0].image).toBe("esb/nats:2.15.3");
    expect(pod.securityContext?.runAsNonRoot).toBe(true);
    expect(pod.containers[0].env).toEqual([
      { name: "NATS_TOKEN", valueFrom: { secretKeyRef: { name: "esb-nats-token", key: "token" } } },
    ]);
    const claims = (sts.spec as { volumeClaimTemplates?: { metadata: { name: string } }[] })
      .volumeClaimTemplates;
    expect(claims?.map((c) => c.metadata.name)).toEqual(["data"]);
    const conf = (findManifest(manifests, "ConfigMap", "esb-nats").data as Record<string, string>)[
      "nats.conf"
    ];
    expect(conf).toMatch(/jetstream \{\s*store_dir: \/data/);
    expect(conf).toContain("sync_interval: always");
    expect(conf).toContain("token: $NATS_TOKEN");
    const secret = findManifest(manifests, "Secret", "esb-nats-token");
    expect(Buffer.from((secret.data as { token: string }).token, "base64").toString()).toMatch(
      /^[A-Za-z0-9]{40}$/,
    );
    const policy = findManifest(manifests, "NetworkPolicy", "esb-nats");
    expect(JSON.stringify(policy.spec)).toContain('"app.kubernetes.io/component":"gateway"');
    expect(findManifest(manifests, "Service", "esb-nats")).toBeDefined();
    const env = gatewayEnv(manifests);
    // The Service's variable, expanded by the kubelet (no cluster DNS needed).
    expect(env.GATEWAY_EVENT_STORE.value).toBe("nats://$(ESB_NATS_SERVICE_HOST):4222");
    expect(env.GATEWAY_EVENT_NATS_TOKEN.valueFrom).toEqual({
      secretKeyRef: { name: "esb-nats-token", key: "token" },
    });
    expect(env.GATEWAY_EVENT_ACK_WAIT_SECONDS.value).toBe("30");
  });

  it("persistence off puts JetStream's store on an emptyDir", async () => {
    const { manifests } = await renderChart({ set: ["events.nats.persistence.enabled=false"] });
    const sts = findManifest(manifests, "StatefulSet", "esb-nats");
    expect((sts.spec as { volumeClaimTemplates?: unknown }).volumeClaimTemplates).toBeUndefined();
    expect(spec(sts).volumes?.find((v) => v.name === "data")?.emptyDir).toEqual({ sizeLimit: "1Gi" });
  });

  it("events.nats.url uses an existing NATS (its token from existingSecret) and deploys none", async () => {
    const { manifests } = await renderChart({
      set: ["events.nats.url=nats://nats.infra:4222", "events.nats.existingSecret=infra-nats"],
    });
    expect(natsParts(manifests)).toEqual([]);
    const env = gatewayEnv(manifests);
    expect(env.GATEWAY_EVENT_STORE.value).toBe("nats://nats.infra:4222");
    expect(env.GATEWAY_EVENT_NATS_TOKEN.valueFrom).toEqual({
      secretKeyRef: { name: "infra-nats", key: "token" },
    });
  });

  it("events.store=memory deploys no NATS and keeps the gateways' events in memory", async () => {
    const { manifests } = await renderChart({ set: ["events.store=memory"] });
    expect(natsParts(manifests)).toEqual([]);
    expect(gatewayEnv(manifests).GATEWAY_EVENT_STORE).toBeUndefined();
  });

  it("refuses an unknown store and a URL that is not nats://", async () => {
    const store = await helm(templateArgs({ set: ["events.store=redis"] }));
    expect(store.code).not.toBe(0);
    expect(store.stderr).toContain("/events/store");
    const url = await helm(templateArgs({ set: ["events.nats.url=http://nats:4222"] }));
    expect(url.code).not.toBe(0);
    expect(url.stderr).toContain("/events/nats/url");
  });
});
