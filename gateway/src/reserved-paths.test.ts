// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { GatewayTestHarness, testFunctionManifest } from "./gateway-test-harness.js";

// ESB's own paths are never a function's: a function that claims every path
// (`/{proxy+}`, any method) still cannot answer a mistyped Lambda API call or a
// POST to /metrics. Real gateway, LoopbackTestAgent stand-in for the agent; the
// test worker echoes the proxy event.
const harness = new GatewayTestHarness();

beforeAll(async () => {
  await harness.start(
    [
      testFunctionManifest("catch-all", ["  http:", "    routes:", "      - path: /{proxy+}"].join("\n")),
      testFunctionManifest("echo"),
    ].join("\n---\n"),
  );
});

afterAll(async () => {
  await harness.stop();
});

describe("reserved paths", () => {
  it("a catch-all route serves other paths", async () => {
    const res = await fetch(`${harness.endpoint}/anything/at/all`, { method: "PUT", body: "x" });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { routeKey: string }).routeKey).toBe("ANY /{proxy+}");
  });

  it.each([
    ["GET", "/2015-03-31/functions/echo/invocations"],
    ["PUT", "/2015-03-31/functions/echo/invocations"],
    ["POST", "/2015-03-31/functions//invocations"],
    ["POST", "/2015-03-31/functions/echo/invocations/extra"],
    ["PATCH", "/2015-03-31/functions"],
    ["GET", "/2018-10-31/layers"],
    ["DELETE", "/2021-10-31/functions/echo/url"],
  ])("%s %s is AWS's UnknownOperationException, not the catch-all function", async (method, path) => {
    const res = await fetch(`${harness.endpoint}${path}`, {
      method,
      body: method === "GET" ? undefined : "{}",
    });
    expect(res.status).toBe(404);
    expect(res.headers.get("x-amzn-errortype")).toBe("UnknownOperationException");
    expect(res.headers.get("x-amzn-requestid")).toMatch(/^[0-9a-f-]{36}$/);
    const body = (await res.json()) as { Type: string; message: string };
    expect(body.Type).toBe("User");
    expect(body.message).toContain(`${method} ${path}`);
  });

  it.each([
    ["POST", "/2015-03-31/functions"],
    ["PUT", "/2015-03-31/functions/echo/code"],
    ["DELETE", "/2015-03-31/functions/echo"],
  ])(
    "%s %s (a control-plane write) with gateway auth off is refused, never the catch-all function",
    async (method, path) => {
      const res = await fetch(`${harness.endpoint}${path}`, { method, body: "{}" });
      expect(res.status).toBe(403);
      expect(res.headers.get("x-amzn-errortype")).toBe("MissingAuthenticationTokenException");
      expect(((await res.json()) as { message: string }).message).toContain("needs an authenticated caller");
      // Nothing was changed: the function is still served.
      const get = await fetch(`${harness.endpoint}/2015-03-31/functions/echo`);
      expect(get.status).toBe(200);
    },
  );

  it.each(["/metrics", "/healthz", "/readyz"])(
    "POST %s is 405, never the catch-all function",
    async (path) => {
      const res = await fetch(`${harness.endpoint}${path}`, { method: "POST", body: "{}" });
      expect(res.status).toBe(405);
      expect(res.headers.get("allow")).toBe("GET");
    },
  );

  it("the Invoke API itself still works beside the catch-all route", async () => {
    const res = await fetch(`${harness.endpoint}/2015-03-31/functions/echo/invocations`, {
      method: "POST",
      body: JSON.stringify({ hello: "world" }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ functionName: "echo", event: { hello: "world" } });
  });
});
