import { createReadStream } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import type { Readable } from "node:stream";
import { blobPath, readOciImage, sha256Digest } from "./oci-image-writer.js";
import { MediaType } from "./oci-types.js";

/** Where and how to reach an OCI registry (distribution API v2). */
export interface RegistryOptions {
  /** `host[:port]`, e.g. `127.0.0.1:5000`. */
  registry: string;
  /** Basic-auth credentials, sent when both are set. */
  username?: string;
  password?: string;
  /** Use plain HTTP; default true for loopback hosts (localhost, 127.0.0.0/8, ::1) and false otherwise. */
  plainHttp?: boolean;
}

/** Result of {@link RegistryClient.pushImage}. */
export interface PushResult {
  /** `registry/repository:tag`. */
  reference: string;
  /** Digest of the pushed manifest (what `repository@digest` resolves). */
  digest: string;
  /** Blobs uploaded, and blobs the registry already had (skipped after a HEAD check). */
  uploaded: string[];
  skipped: string[];
}

/** A manifest fetched from a registry. */
export interface FetchedManifest {
  digest: string;
  mediaType: string;
  body: Buffer;
}

/** A parsed image reference `registry/repository[:tag]`. */
export interface ImageReference {
  registry: string;
  repository: string;
  tag: string;
}

interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/**
 * A minimal client of the OCI distribution API: pushes an image from an OCI
 * layout (blobs uploaded monolithically — POST then PUT — after a HEAD check
 * that skips blobs the registry has, then the manifest PUT) and fetches
 * manifests. Errors carry the registry's error codes and messages.
 */
export class RegistryClient {
  private readonly base: URL;
  private readonly auth?: string;

  constructor(private readonly options: RegistryOptions) {
    const host = options.registry.replace(/\/+$/, "");
    const plain = options.plainHttp ?? isLoopback(host);
    this.base = new URL(`${plain ? "http" : "https"}://${host}/`);
    if (options.username !== undefined && options.password !== undefined) {
      this.auth = `Basic ${Buffer.from(`${options.username}:${options.password}`).toString("base64")}`;
    }
  }

  /**
   * Pushes the image tagged `layoutTag` (or the only image) of the layout at
   * `layoutDir` as `repository:tag`: config and layers first, then the manifest.
   */
  async pushImage(
    layoutDir: string,
    target: { repository: string; tag: string; layoutTag?: string },
  ): Promise<PushResult> {
    validateRepository(target.repository);
    const image = await readOciImage(layoutDir, target.layoutTag);
    const uploaded: string[] = [];
    const skipped: string[] = [];
    for (const blob of [image.config, ...image.layers]) {
      if (await this.blobExists(target.repository, blob.digest)) {
        skipped.push(blob.digest);
        continue;
      }
      const path = blobPath(layoutDir, blob.digest);
      const size = (await stat(path)).size;
      await this.uploadBlob(target.repository, blob.digest, () => createReadStream(path), size);
      uploaded.push(blob.digest);
    }
    const manifestBytes = await readFile(blobPath(layoutDir, image.manifest.digest));
    const digest = await this.putManifest(
      target.repository,
      target.tag,
      manifestBytes,
      image.manifest.mediaType,
    );
    return {
      reference: `${this.options.registry}/${target.repository}:${target.tag}`,
      digest,
      uploaded,
      skipped,
    };
  }

  /** True when the registry has blob `digest` in `repository`. */
  async blobExists(repository: string, digest: string): Promise<boolean> {
    const res = await this.request("HEAD", `v2/${repository}/blobs/${digest}`);
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw registryError(`HEAD blob ${digest} in ${repository}`, res);
  }

  /** Uploads one blob in a single PUT (monolithic upload). */
  async uploadBlob(
    repository: string,
    digest: string,
    body: () => Readable | Buffer,
    size: number,
  ): Promise<void> {
    const start = await this.request("POST", `v2/${repository}/blobs/uploads/`, { "content-length": "0" });
    if (start.status !== 202) throw registryError(`start upload of ${digest} to ${repository}`, start);
    const location = start.headers.location;
    if (!location)
      throw new Error(`registry ${this.options.registry} started an upload without a Location header`);
    const url = new URL(location, this.base);
    url.searchParams.set("digest", digest);
    const put = await this.request(
      "PUT",
      url,
      { "content-type": "application/octet-stream", "content-length": String(size) },
      body(),
    );
    if (put.status !== 201) throw registryError(`upload of ${digest} to ${repository}`, put);
  }

  /** Stores `manifest` as `repository:reference`; returns the manifest digest. */
  async putManifest(
    repository: string,
    reference: string,
    manifest: Buffer,
    mediaType: string = MediaType.manifest,
  ): Promise<string> {
    const res = await this.request(
      "PUT",
      `v2/${repository}/manifests/${reference}`,
      {
        "content-type": mediaType,
        "content-length": String(manifest.length),
      },
      manifest,
    );
    if (res.status !== 201) throw registryError(`PUT manifest ${repository}:${reference}`, res);
    const digest = sha256Digest(manifest);
    const returned = res.headers["docker-content-digest"];
    if (typeof returned === "string" && returned !== digest) {
      throw new Error(
        `registry stored manifest ${repository}:${reference} as ${returned}, expected ${digest}`,
      );
    }
    return digest;
  }

  /** Fetches manifest `repository:reference` (tag or digest), accepting OCI and Docker v2 manifests and indexes. */
  async getManifest(repository: string, reference: string): Promise<FetchedManifest> {
    const res = await this.request("GET", `v2/${repository}/manifests/${reference}`, {
      accept: [
        MediaType.manifest,
        MediaType.index,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
      ].join(", "),
    });
    if (res.status !== 200) throw registryError(`GET manifest ${repository}:${reference}`, res);
    const mediaType = String(res.headers["content-type"] ?? "").split(";")[0];
    return { digest: sha256Digest(res.body), mediaType, body: res.body };
  }

  /** Fetches blob `digest` of `repository` into memory, verifying its digest. */
  async getBlob(repository: string, digest: string): Promise<Buffer> {
    const res = await this.request("GET", `v2/${repository}/blobs/${digest}`);
    if (res.status === 307 || res.status === 302) {
      const again = await this.request("GET", new URL(String(res.headers.location), this.base));
      if (again.status !== 200) throw registryError(`GET blob ${digest}`, again);
      return verify(again.body, digest);
    }
    if (res.status !== 200) throw registryError(`GET blob ${digest} of ${repository}`, res);
    return verify(res.body, digest);
  }

  private request(
    method: string,
    path: string | URL,
    headers: Record<string, string> = {},
    body?: Readable | Buffer,
  ): Promise<Response> {
    const url = typeof path === "string" ? new URL(path, this.base) : path;
    const h: Record<string, string> = { ...headers };
    if (this.auth) h.authorization = this.auth;
    const mod = url.protocol === "https:" ? https : http;
    return new Promise<Response>((resolve, reject) => {
      const req = mod.request(url, { method, headers: h }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.on("error", reject);
      });
      req.on("error", (err) =>
        reject(
          new Error(`registry ${this.options.registry}: ${method} ${url.pathname}: ${err.message}`, {
            cause: err,
          }),
        ),
      );
      if (body === undefined) req.end();
      else if (Buffer.isBuffer(body)) req.end(body);
      else {
        body.on("error", (err) => req.destroy(err));
        body.pipe(req);
      }
    });
  }
}

// Differs on purpose from the agent's pull-side parser: a push target needs an explicit registry (no Docker Hub default).
/** Parses `registry/repository[:tag]` (the registry part is required; tag defaults to `latest`). */
export function parseImageReference(ref: string): ImageReference {
  const slash = ref.indexOf("/");
  if (slash <= 0) throw new Error(`invalid image reference "${ref}": expected registry/repository[:tag]`);
  const registry = ref.slice(0, slash);
  let rest = ref.slice(slash + 1);
  let tag = "latest";
  const colon = rest.lastIndexOf(":");
  if (colon > 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  validateRepository(rest);
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/.test(tag))
    throw new Error(`invalid tag "${tag}" in image reference "${ref}"`);
  return { registry, repository: rest, tag };
}

function validateRepository(repository: string): void {
  if (
    !/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/.test(repository)
  ) {
    throw new Error(
      `invalid repository name "${repository}": lowercase letters, digits and . _ - / separators only`,
    );
  }
}

function isLoopback(host: string): boolean {
  const name = host.startsWith("[") ? host.slice(1, host.indexOf("]")) : host.split(":")[0];
  return name === "localhost" || name === "::1" || /^127\.\d+\.\d+\.\d+$/.test(name);
}

function verify(body: Buffer, digest: string): Buffer {
  const got = sha256Digest(body);
  if (got !== digest) throw new Error(`blob digest mismatch: expected ${digest}, got ${got}`);
  return body;
}

function registryError(what: string, res: Response): Error {
  let detail: string;
  try {
    const parsed = JSON.parse(res.body.toString("utf8")) as {
      errors?: { code?: string; message?: string }[];
    };
    detail = (parsed.errors ?? []).map((e) => `${e.code ?? "UNKNOWN"}: ${e.message ?? ""}`).join("; ");
  } catch {
    detail = res.body.toString("utf8").slice(0, 200);
  }
  return new Error(`registry: ${what} failed with HTTP ${res.status}${detail ? ` (${detail})` : ""}`);
}
