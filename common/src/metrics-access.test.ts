// @esb-test unit: needs no test environment (`make test-unit` runs it).
// /metrics without Kubernetes (esb up, a component started by hand): local callers only.
// (Kubernetes mode, with TokenReview and SubjectAccessReview against the real API server and
// the chart's RBAC, is tested in test/src/install/components-under-chart-rbac.test.ts.)
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, it, expect } from "@jest/globals";
import { MetricsAccess, metricsAuthMode, serveMetrics } from "./metrics-access.js";

describe("MetricsAccess in local mode", () => {
  it("serves a loopback caller and refuses any other address with 403", async () => {
    const access = new MetricsAccess("local");
    const server = createServer((req, res) => {
      void serveMetrics(req, res, access, { contentType: "text/plain", metrics: async () => "up 1\n" });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`);
      expect([res.status, await res.text()]).toEqual([200, "up 1\n"]);
    } finally {
      await new Promise((r) => server.close(r));
    }
    // A caller on another address (a socket from the network), as the server would see it.
    const remote = { socket: { remoteAddress: "10.244.0.7" }, headers: {} } as unknown as IncomingMessage;
    expect(await access.check(remote)).toEqual({
      allowed: false,
      status: 403,
      message: "metrics are served to local callers only",
    });
    const mapped = {
      socket: { remoteAddress: "::ffff:127.0.0.1" },
      headers: {},
    } as unknown as IncomingMessage;
    expect(await access.check(mapped)).toEqual({ allowed: true });
  });

  it("reads ESB_METRICS_AUTH, local by default, and names the variable for a wrong value", () => {
    expect(metricsAuthMode({})).toBe("local");
    expect(metricsAuthMode({ ESB_METRICS_AUTH: "kubernetes" })).toBe("kubernetes");
    expect(() => metricsAuthMode({ ESB_METRICS_AUTH: "none" })).toThrow(
      'ESB_METRICS_AUTH="none" must be local or kubernetes',
    );
  });
});
