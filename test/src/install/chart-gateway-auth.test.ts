// The chart's gateway.auth.sigv4 values: off by default (nothing mounted), on
// they mount the named Secret as a directory (so the kubelet's updates reach
// the gateway, which re-reads the file) and set the gateway's variables; the
// schema refuses enabling it without a Secret and an unknown scope.
import { describe, it, expect } from "@jest/globals";
import { findManifest, helm, renderChart, templateArgs, type Manifest } from "./chart-tools.js";

interface GatewayPod {
  containers: {
    name: string;
    env?: { name: string; value?: string }[];
    volumeMounts?: { name: string; mountPath: string; subPath?: string; readOnly?: boolean }[];
  }[];
  volumes?: { name: string; secret?: { secretName: string; items?: { key: string; path: string }[] } }[];
}

async function gatewayPod(set: string[] = []): Promise<GatewayPod> {
  const { manifests } = await renderChart({ set });
  const deployment: Manifest = findManifest(manifests, "Deployment", "esb-gateway");
  return (deployment.spec as { template: { spec: GatewayPod } }).template.spec;
}

const env = (pod: GatewayPod) =>
  Object.fromEntries((pod.containers[0].env ?? []).map((e) => [e.name, e.value]));

describe("chart: gateway.auth.sigv4", () => {
  it("is off by default: no credentials variable, volume or mount", async () => {
    const pod = await gatewayPod();
    expect(env(pod).GATEWAY_CREDENTIALS_FILE).toBeUndefined();
    expect(pod.volumes?.find((v) => v.name === "gateway-credentials")).toBeUndefined();
  });

  it("on, mounts the Secret's key as a directory and points the gateway at it", async () => {
    const pod = await gatewayPod([
      "gateway.auth.sigv4.enabled=true",
      "gateway.auth.sigv4.existingSecret=esb-callers",
      "gateway.auth.sigv4.secretKey=keys.yaml",
      "gateway.auth.sigv4.scope=all",
    ]);
    expect(env(pod)).toMatchObject({
      GATEWAY_CREDENTIALS_FILE: "/etc/esb/gateway-credentials/keys.yaml",
      GATEWAY_AUTH_SCOPE: "all",
    });
    expect(pod.volumes?.find((v) => v.name === "gateway-credentials")).toEqual({
      name: "gateway-credentials",
      secret: { secretName: "esb-callers", items: [{ key: "keys.yaml", path: "keys.yaml" }] },
    });
    const mount = pod.containers[0].volumeMounts?.find((m) => m.name === "gateway-credentials");
    expect(mount).toEqual({
      name: "gateway-credentials",
      mountPath: "/etc/esb/gateway-credentials",
      readOnly: true,
    });
  });

  it("refuses enabling it without a Secret, and an unknown scope", async () => {
    const noSecret = await helm(templateArgs({ set: ["gateway.auth.sigv4.enabled=true"] }));
    expect(noSecret.code).not.toBe(0);
    expect(noSecret.stderr).toContain("existingSecret");
    const badScope = await helm(
      templateArgs({
        set: [
          "gateway.auth.sigv4.enabled=true",
          "gateway.auth.sigv4.existingSecret=s",
          "gateway.auth.sigv4.scope=everything",
        ],
      }),
    );
    expect(badScope.code).not.toBe(0);
    expect(badScope.stderr).toContain("scope");
  });
});
