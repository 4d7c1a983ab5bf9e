// The chart's data-service settings (docs/data-services.md): what the agent is told to inject into
// workers, rendered by helm, and the schema refusing an endpoint that is not a URL.
import { describe, expect, it } from "@jest/globals";
import { findManifest, renderChart } from "./chart-tools.js";

type Env = {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string; optional?: boolean } };
};

async function agentEnv(set: string[]): Promise<Env[]> {
  const { manifests } = await renderChart({ release: "esb", namespace: "esb-system", set });
  const agent = findManifest(manifests, "DaemonSet", "esb-agent");
  const spec = (agent.spec as { template: { spec: { containers: { name: string; env: Env[] }[] } } }).template
    .spec;
  return spec.containers.find((c) => c.name === "agent")!.env;
}

describe("helm chart: data services", () => {
  it("gives the agent the endpoints and the Secret's keys for workers, and nothing by default", async () => {
    expect((await agentEnv([])).filter((e) => e.name.startsWith("WORKER_AWS_"))).toEqual([]);
    const env = await agentEnv([
      "dataServices.s3.endpoint=http://10.0.5.20:7070",
      "dataServices.dynamodb.endpoint=https://dynamodb.eu-west-1.amazonaws.com",
      "dataServices.credentialsSecret=function-keys",
    ]);
    const byName = Object.fromEntries(env.map((e) => [e.name, e]));
    expect(byName.WORKER_AWS_ENDPOINT_URL_S3.value).toBe("http://10.0.5.20:7070");
    expect(byName.WORKER_AWS_ENDPOINT_URL_DYNAMODB.value).toBe("https://dynamodb.eu-west-1.amazonaws.com");
    expect(byName.WORKER_AWS_ACCESS_KEY_ID.valueFrom?.secretKeyRef).toEqual({
      name: "function-keys",
      key: "accessKeyId",
    });
    expect(byName.WORKER_AWS_SECRET_ACCESS_KEY.valueFrom?.secretKeyRef).toEqual({
      name: "function-keys",
      key: "secretAccessKey",
    });
    expect(byName.WORKER_AWS_SESSION_TOKEN.valueFrom?.secretKeyRef).toEqual({
      name: "function-keys",
      key: "sessionToken",
      optional: true,
    });
  });

  it("refuses an endpoint that is not an http(s) URL, or one carrying credentials", async () => {
    for (const bad of ["s3.internal:7070", "http://key:secret@10.0.5.20:7070"])
      await expect(renderChart({ set: [`dataServices.s3.endpoint=${bad}`] })).rejects.toThrow(
        "/dataServices/s3/endpoint",
      );
  });
});
