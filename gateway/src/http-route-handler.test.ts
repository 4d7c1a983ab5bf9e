import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { GatewayTestHarness, testFunctionManifest } from "./gateway-test-harness.js";

// HTTP routes through a real gateway (LoopbackTestAgent stand-in for the agent).
// The test worker echoes the proxy event as the body, or returns the body's `respond`.
const harness = new GatewayTestHarness();

beforeAll(async () => {
  await harness.start(
    [
      testFunctionManifest(
        "items-v2",
        [
          "  http:",
          "    routes:",
          "      - path: /items/{id}",
          "        methods: [GET, POST]",
          "      - path: /files/{proxy+}",
        ].join("\n"),
      ),
      testFunctionManifest(
        "items-v1",
        ["  http:", '    payloadFormat: "1.0"', "    routes:", "      - path: /v1/items/{id}"].join("\n"),
      ),
      // Declares a route items-v2 already serves: reported, items-v2 keeps it.
      testFunctionManifest(
        "zz-shadowed",
        ["  http:", "    routes:", "      - path: /items/{key}", "        methods: [GET]"].join("\n"),
      ),
      // Another namespace tries to take a path and a more specific one: its routes are not served.
      testFunctionManifest(
        "hijack",
        [
          "  http:",
          "    routes:",
          "      - path: /admin",
          "      - path: /items/special",
          "        methods: [GET]",
        ].join("\n"),
        "intruder",
      ),
    ].join("\n---\n"),
  );
});

afterAll(async () => {
  await harness.stop();
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- proxy events are checked field by field
type Event = Record<string, any>;

describe("HTTP routes", () => {
  it("serves routes of the gateway's namespace only: another namespace cannot take a path", async () => {
    expect((await fetch(`${harness.endpoint}/admin`)).status).toBe(404);
    const res = await fetch(`${harness.endpoint}/items/special`);
    expect(((await res.json()) as Event).routeKey).toBe("GET /items/{id}");
    // The function itself is still invocable by namespace/name; only its routes are refused.
    const invoked = await fetch(`${harness.endpoint}/2015-03-31/functions/intruder%2Fhijack/invocations`, {
      method: "POST",
      body: "{}",
    });
    expect(invoked.status).toBe(200);
  });

  it("payload 2.0: headers, cookies, query, path parameters, requestContext; response headers and cookies", async () => {
    const res = await fetch(`${harness.endpoint}/items/42?color=red&color=blue&size=L`, {
      headers: { "X-Custom": "v", cookie: "a=1; b=2" },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-echo")).toBe("yes");
    expect(res.headers.getSetCookie()).toEqual(["session=abc; Path=/", "theme=dark"]);
    const event = (await res.json()) as Event;
    expect(event.version).toBe("2.0");
    expect(event.routeKey).toBe("GET /items/{id}");
    expect(event.rawPath).toBe("/items/42");
    expect(event.rawQueryString).toBe("color=red&color=blue&size=L");
    expect(event.queryStringParameters).toEqual({ color: "red,blue", size: "L" });
    expect(event.pathParameters).toEqual({ id: "42" });
    expect(event.headers["x-custom"]).toBe("v");
    expect(event.headers.cookie).toBeUndefined();
    expect(event.cookies).toEqual(["a=1", "b=2"]);
    expect(event.requestContext.http.method).toBe("GET");
    expect(event.requestContext.http.path).toBe("/items/42");
    expect(event.requestContext.http.sourceIp).toBe("127.0.0.1");
    expect(event.requestContext.stage).toBe("$default");
    expect(typeof event.requestContext.requestId).toBe("string");
    expect(typeof event.requestContext.timeEpoch).toBe("number");
    expect(event.requestContext.time).toMatch(/^\d{2}\/\w{3}\/\d{4}:\d{2}:\d{2}:\d{2} \+0000$/);
    expect(event.isBase64Encoded).toBe(false);
  });

  it("answers 413 when a body fits the limit but its base64 event does not, and the route keeps working", async () => {
    const big = Buffer.alloc(5 * 1024 * 1024, 7); // 5 MiB: under 6 MiB, over it once base64-encoded
    const res = await fetch(`${harness.endpoint}/files/big.bin`, {
      method: "PUT",
      body: big,
      headers: { "content-type": "application/octet-stream" },
    });
    expect(res.status).toBe(413);
    expect(await res.json()).toEqual({ message: "Request Entity Too Large" });
    const next = await fetch(`${harness.endpoint}/files/small.bin`, { method: "PUT", body: "ok" });
    expect(next.status).toBe(200);
  });

  it("payload 2.0: binary bodies are base64, greedy {proxy+} matches the rest", async () => {
    const bytes = Buffer.from([0, 1, 2, 250, 255]);
    const res = await fetch(`${harness.endpoint}/files/a/b/c.bin`, {
      method: "PUT",
      body: bytes,
      headers: { "content-type": "application/octet-stream" },
    });
    const event = (await res.json()) as Event;
    expect(event.routeKey).toBe("ANY /files/{proxy+}");
    expect(event.pathParameters).toEqual({ proxy: "a/b/c.bin" });
    expect(event.isBase64Encoded).toBe(true);
    expect(Buffer.from(event.body, "base64")).toEqual(bytes);
  });

  it("payload 2.0: the structured response is mapped back (status, headers, base64 body)", async () => {
    const respond = {
      statusCode: 201,
      headers: { "content-type": "image/png", "x-a": "1" },
      body: Buffer.from("PNGDATA").toString("base64"),
      isBase64Encoded: true,
    };
    const res = await fetch(`${harness.endpoint}/items/1`, {
      method: "POST",
      body: JSON.stringify({ respond }),
      headers: { "content-type": "application/json" },
    });
    expect(res.status).toBe(201);
    expect(res.headers.get("content-type")).toBe("image/png");
    expect(res.headers.get("x-a")).toBe("1");
    expect(Buffer.from(await res.arrayBuffer()).toString()).toBe("PNGDATA");
  });

  it("payload 2.0: a result without statusCode is inferred as 200 JSON", async () => {
    const res = await fetch(`${harness.endpoint}/items/1`, {
      method: "POST",
      body: JSON.stringify({ respond: { hello: "world" } }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(await res.json()).toEqual({ hello: "world" });
  });

  it("a malformed response or a function error is 502 Internal server error", async () => {
    const bad = await fetch(`${harness.endpoint}/items/1`, {
      method: "POST",
      body: JSON.stringify({ respond: { statusCode: "nope", body: 5 } }),
    });
    expect(bad.status).toBe(502);
    expect(await bad.json()).toEqual({ message: "Internal server error" });
    const failed = await fetch(`${harness.endpoint}/items/1`, {
      method: "POST",
      body: JSON.stringify({ fail: "boom" }),
    });
    expect(failed.status).toBe(502);
    expect(await failed.json()).toEqual({ message: "Internal server error" });
    const crashed = await fetch(`${harness.endpoint}/items/1`, {
      method: "POST",
      body: JSON.stringify({ crash: true }),
    });
    expect(crashed.status).toBe(502);
    const notJson = await fetch(`${harness.endpoint}/v1/items/1`, {
      method: "POST",
      body: JSON.stringify({ respond: "just a string" }),
    });
    expect(notJson.status).toBe(502);
  });

  it("payload 1.0: multi-value headers and query, path parameters, null for absent parts", async () => {
    const res = await fetch(`${harness.endpoint}/v1/items/7?tag=a&tag=b`, {
      method: "DELETE",
      headers: { "x-one": "1" },
    });
    expect(res.status).toBe(200);
    const event = (await res.json()) as Event;
    expect(event.version).toBe("1.0");
    expect(event.resource).toBe("/v1/items/{id}");
    expect(event.path).toBe("/v1/items/7");
    expect(event.httpMethod).toBe("DELETE");
    expect(event.headers["x-one"]).toBe("1");
    expect(event.multiValueHeaders["x-one"]).toEqual(["1"]);
    expect(event.queryStringParameters).toEqual({ tag: "b" });
    expect(event.multiValueQueryStringParameters).toEqual({ tag: ["a", "b"] });
    expect(event.pathParameters).toEqual({ id: "7" });
    expect(event.body).toBeNull();
    expect(event.stageVariables).toBeNull();
    expect(event.requestContext.identity.sourceIp).toBe("127.0.0.1");
    expect(event.requestContext.stage).toBe("$default");
  });

  it("payload 1.0: a result without statusCode is malformed (502)", async () => {
    const res = await fetch(`${harness.endpoint}/v1/items/7`, {
      method: "POST",
      body: JSON.stringify({ respond: { hello: 1 } }),
    });
    expect(res.status).toBe(502);
    expect(await res.json()).toEqual({ message: "Internal server error" });
  });

  it("no route is 404 and a route conflict is reported, the first function keeps the route", async () => {
    const res = await fetch(`${harness.endpoint}/nowhere`);
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ message: "Not Found" });
    const conflicts = harness.gateway.metrics.registry.getSingleMetric("esb_gateway_route_conflicts");
    expect((await conflicts!.get()).values[0].value).toBe(1);
    const event = (await (await fetch(`${harness.endpoint}/items/9`)).json()) as Event;
    expect(event.routeKey).toBe("GET /items/{id}");
  });
});
