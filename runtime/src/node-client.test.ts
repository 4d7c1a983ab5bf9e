// @esb-test unit: needs no test environment (`make test-unit` runs it).
// Unit tests of the Node runtime client's pieces: error serialisation and the Runtime API
// calls, checked against a loopback HTTP server that records requests (a stand-in for the
// emulator's Runtime API; the full loop runs against the real emulator in emulator.test.ts).
import { describe, it, expect, afterAll, beforeAll } from "@jest/globals";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { RuntimeApiClient, serializeError } from "./node-client.js";

describe("serializeError", () => {
  it("uses the error's name, message and stack lines", () => {
    const err = new TypeError("bad input");
    const s = serializeError(err);
    expect(s.errorType).toBe("TypeError");
    expect(s.errorMessage).toBe("bad input");
    expect(s.stackTrace[0]).toBe("TypeError: bad input");
  });
  it("serialises thrown strings and objects as AWS does", () => {
    expect(serializeError("plain")).toEqual({ errorType: "string", errorMessage: "plain", stackTrace: [] });
    expect(serializeError({ code: 1 })).toEqual({
      errorType: "object",
      errorMessage: '{"code":1}',
      stackTrace: [],
    });
  });
});

describe("RuntimeApiClient", () => {
  const seen: { method: string; url: string; headers: IncomingHttpHeaders; body: string }[] = [];
  let server: Server;
  let client: RuntimeApiClient;

  beforeAll(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        seen.push({
          method: req.method ?? "",
          url: req.url ?? "",
          headers: req.headers,
          body: Buffer.concat(chunks).toString(),
        });
        if (req.url === "/2018-06-01/runtime/invocation/next") {
          res.writeHead(200, {
            "Lambda-Runtime-Aws-Request-Id": "id-1",
            "Lambda-Runtime-Deadline-Ms": "123",
          });
          res.end('{"e":1}');
        } else {
          res.writeHead(202);
          res.end('{"status":"OK"}');
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    client = new RuntimeApiClient(`127.0.0.1:${(server.address() as AddressInfo).port}`);
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  it("gets the next event with its headers", async () => {
    const next = await client.next();
    expect(next.headers["lambda-runtime-aws-request-id"]).toBe("id-1");
    expect(next.body.toString()).toBe('{"e":1}');
  });

  it("posts responses, errors and init errors to the documented paths", async () => {
    seen.length = 0;
    await client.postResponse("id-1", '{"ok":true}');
    await client.postError("id-1", { errorType: "Error", errorMessage: "x", stackTrace: [] });
    await client.postInitError({ errorType: "Runtime.HandlerNotFound", errorMessage: "y", stackTrace: [] });
    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual([
      "POST /2018-06-01/runtime/invocation/id-1/response",
      "POST /2018-06-01/runtime/invocation/id-1/error",
      "POST /2018-06-01/runtime/init/error",
    ]);
    expect(seen[0].body).toBe('{"ok":true}');
    expect(seen[1].headers["lambda-runtime-function-error-type"]).toBe("Error");
    expect(JSON.parse(seen[2].body)).toEqual({
      errorType: "Runtime.HandlerNotFound",
      errorMessage: "y",
      stackTrace: [],
    });
    expect(seen[2].headers["lambda-runtime-function-error-type"]).toBe("Runtime.HandlerNotFound");
  });
});
