import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { ImageUnavailableError } from "../runtime/runtime.js";
import { buildTestImage, pushTestImage, type OciTestImage } from "../testing/test-image.js";
import { parseImageReference } from "./image-reference.js";
import { RegistryClient } from "./registry-client.js";

const registry = process.env.ESB_TEST_REGISTRY ?? "";
const repo = `esb-test/auth-${Math.floor(Math.random() * 0xffff).toString(16)}`;

/**
 * FAKE auth front: the test registry runs without authentication, so this
 * server puts token (or basic) auth in front of it the way Docker Hub / ECR do,
 * and forwards authorised requests to the real registry.
 */
function authFront(
  mode: "bearer" | "basic",
): Promise<{ server: Server; host: string; tokensIssued: () => number }> {
  let issued = 0;
  const server = createServer((req, res) => {
    void (async () => {
      const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
      const url = new URL(req.url ?? "/", `http://${host}`);
      const basicOk = req.headers.authorization === `Basic ${Buffer.from("alice:s3cret").toString("base64")}`;
      if (url.pathname === "/token") {
        if (!basicOk || url.searchParams.get("scope") !== `repository:${repo}:pull`) {
          res.writeHead(401).end();
          return;
        }
        issued++;
        res
          .writeHead(200, { "content-type": "application/json" })
          .end(JSON.stringify({ token: "good-token" }));
        return;
      }
      const ok = mode === "bearer" ? req.headers.authorization === "Bearer good-token" : basicOk;
      if (!ok) {
        const challenge =
          mode === "bearer"
            ? `Bearer realm="http://${host}/token",service="fake",scope="repository:${repo}:pull"`
            : `Basic realm="fake"`;
        res.writeHead(401, { "www-authenticate": challenge }).end();
        return;
      }
      const upstream = await fetch(`http://${registry}${url.pathname}`, {
        headers: { accept: req.headers.accept ?? "*/*" },
      });
      const headers: Record<string, string> = {};
      for (const h of ["content-type", "docker-content-digest", "content-length"]) {
        const v = upstream.headers.get(h);
        if (v) headers[h] = v;
      }
      res.writeHead(upstream.status, headers).end(Buffer.from(await upstream.arrayBuffer()));
    })().catch(() => res.writeHead(500).end());
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({
        server,
        host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
        tokensIssued: () => issued,
      }),
    ),
  );
}

describe("RegistryClient authentication (real registry behind a fake auth front)", () => {
  let image: OciTestImage;
  const servers: Server[] = [];

  beforeAll(async () => {
    if (!registry) throw new Error("ESB_TEST_REGISTRY must be set");
    image = await buildTestImage("oci");
    await pushTestImage(registry, repo, "v1", image);
  });

  afterAll(() => {
    for (const s of servers) s.close();
  });

  it("gets a bearer token with basic credentials and reuses it", async () => {
    const front = await authFront("bearer");
    servers.push(front.server);
    const client = new RegistryClient({
      insecureRegistries: [front.host],
      auth: { [front.host]: { username: "alice", password: "s3cret" } },
    });
    const ref = parseImageReference(`${front.host}/${repo}:v1`);
    const { descriptor } = await client.getManifest(ref);
    expect(descriptor.digest).toBe(image.digest);
    const layer = [...image.blobs.keys()].find((d) => d !== image.digest)!;
    let n = 0;
    for await (const c of await client.openBlob(ref, layer)) n += c.length;
    expect(n).toBe(image.blobs.get(layer)!.length);
    expect(front.tokensIssued()).toBe(1);
  });

  it("uses basic auth when the registry asks for it", async () => {
    const front = await authFront("basic");
    servers.push(front.server);
    const client = new RegistryClient({
      insecureRegistries: [front.host],
      auth: { [front.host]: { username: "alice", password: "s3cret" } },
    });
    const { descriptor } = await client.getManifest(parseImageReference(`${front.host}/${repo}:v1`));
    expect(descriptor.digest).toBe(image.digest);
  });

  it("fails with ImageUnavailableError without or with wrong credentials", async () => {
    const front = await authFront("bearer");
    servers.push(front.server);
    const ref = parseImageReference(`${front.host}/${repo}:v1`);
    const anon = new RegistryClient({ insecureRegistries: [front.host] });
    const err = (await anon.getManifest(ref).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(ImageUnavailableError);
    expect(err.message).toMatch(/401/);
    const wrong = new RegistryClient({
      insecureRegistries: [front.host],
      auth: { [front.host]: { username: "alice", password: "nope" } },
    });
    await expect(wrong.getManifest(ref)).rejects.toBeInstanceOf(ImageUnavailableError);
  });
});
