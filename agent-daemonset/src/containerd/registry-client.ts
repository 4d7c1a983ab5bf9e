import { createHash } from "node:crypto";
import { ImageUnavailableError } from "../runtime/runtime.js";
import type { ImageReference } from "./image-reference.js";
import { MediaTypes, type OciDescriptor } from "./media-types.js";

/** Credentials for one registry: basic (username/password) or a ready bearer token. */
export type RegistryCredentials = { username: string; password: string } | { token: string };

/** Options of {@link RegistryClient}. */
export interface RegistryClientOptions {
  /** Registries (host[:port]) spoken to over plain HTTP, e.g. `127.0.0.1:5000`. */
  insecureRegistries?: string[];
  /** Credentials by registry host[:port]. */
  auth?: Record<string, RegistryCredentials>;
}

const MANIFEST_ACCEPT = [
  MediaTypes.ociIndex,
  MediaTypes.ociManifest,
  MediaTypes.dockerManifestList,
  MediaTypes.dockerManifest,
].join(", ");

/**
 * Speaks the OCI distribution API (pull side): resolves references to
 * manifests and streams blobs. Handles bearer-token challenges (anonymous or
 * with basic credentials) and basic auth; uses plain HTTP only for registries
 * configured as insecure. Every failure is an {@link ImageUnavailableError}
 * naming the reference and the HTTP status.
 */
export class RegistryClient {
  private readonly insecure: Set<string>;
  private readonly auth: Record<string, RegistryCredentials>;
  /** Authorization header values by "registry/repository". */
  private readonly tokens = new Map<string, string>();

  constructor(opts: RegistryClientOptions = {}) {
    this.insecure = new Set(opts.insecureRegistries ?? []);
    this.auth = opts.auth ?? {};
  }

  /** Fetches the manifest (or index) `ref` points at, verified against its digest when pinned. */
  async getManifest(ref: ImageReference): Promise<{ descriptor: OciDescriptor; bytes: Buffer }> {
    const reference = ref.digest ?? ref.tag ?? "latest";
    const res = await this.request(ref, `/manifests/${reference}`, { accept: MANIFEST_ACCEPT });
    const bytes = Buffer.from(await res.arrayBuffer());
    const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    if (ref.digest && ref.digest !== digest) {
      throw new ImageUnavailableError(`${ref.name}: registry returned a manifest with digest ${digest}`);
    }
    const mediaType =
      (res.headers.get("content-type") ?? "").split(";")[0].trim() ||
      (JSON.parse(bytes.toString("utf8")) as { mediaType?: string }).mediaType ||
      MediaTypes.ociManifest;
    return { descriptor: { mediaType, digest, size: bytes.length }, bytes };
  }

  /** Fetches a manifest or blob by digest into memory (small documents). */
  async getManifestByDigest(ref: ImageReference, desc: OciDescriptor): Promise<Buffer> {
    const res = await this.request(ref, `/manifests/${desc.digest}`, {
      accept: desc.mediaType || MANIFEST_ACCEPT,
    });
    return Buffer.from(await res.arrayBuffer());
  }

  /** Streams a blob. */
  async openBlob(ref: ImageReference, digest: string): Promise<AsyncIterable<Uint8Array>> {
    const res = await this.request(ref, `/blobs/${digest}`, {});
    if (!res.body) throw new ImageUnavailableError(`${ref.name}: empty body for blob ${digest}`);
    return res.body as AsyncIterable<Uint8Array>;
  }

  private baseUrl(ref: ImageReference): string {
    const host = ref.registry === "docker.io" ? "registry-1.docker.io" : ref.registry;
    const scheme = this.insecure.has(ref.registry) ? "http" : "https";
    return `${scheme}://${host}/v2/${ref.repository}`;
  }

  private async request(
    ref: ImageReference,
    suffix: string,
    headers: Record<string, string>,
  ): Promise<Response> {
    const url = this.baseUrl(ref) + suffix;
    const key = `${ref.registry}/${ref.repository}`;
    for (let attempt = 0; attempt < 2; attempt++) {
      const h: Record<string, string> = { ...headers };
      const authz = this.tokens.get(key);
      if (authz) h.authorization = authz;
      let res: Response;
      try {
        res = await fetch(url, { headers: h, redirect: "follow" });
      } catch (err) {
        throw new ImageUnavailableError(
          `${ref.name}: cannot reach registry ${ref.registry}: ${causeOf(err)}`,
        );
      }
      if (res.status === 401 && attempt === 0) {
        await res.body?.cancel();
        this.tokens.set(key, await this.authorize(ref, res.headers.get("www-authenticate") ?? ""));
        continue;
      }
      if (!res.ok) {
        const body = (await res.text().catch(() => "")).slice(0, 300);
        throw new ImageUnavailableError(
          `${ref.name}: registry answered ${res.status} ${res.statusText} for ${suffix}${body ? `: ${body.trim()}` : ""}`,
        );
      }
      return res;
    }
    throw new ImageUnavailableError(`${ref.name}: registry ${ref.registry} refused the credentials (401)`);
  }

  /** Answers a WWW-Authenticate challenge; returns the Authorization header value to use. */
  private async authorize(ref: ImageReference, challenge: string): Promise<string> {
    const creds = this.auth[ref.registry];
    const scheme = challenge.split(" ")[0].toLowerCase();
    if (scheme === "basic") {
      if (!creds || !("username" in creds)) {
        throw new ImageUnavailableError(`${ref.name}: registry ${ref.registry} requires credentials (401)`);
      }
      return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString("base64")}`;
    }
    if (scheme !== "bearer") {
      throw new ImageUnavailableError(
        `${ref.name}: registry ${ref.registry} answered 401 with challenge "${challenge}"`,
      );
    }
    if (creds && "token" in creds) return `Bearer ${creds.token}`;
    const params = Object.fromEntries(
      [...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1].toLowerCase(), m[2]] as const),
    );
    if (!params.realm)
      throw new ImageUnavailableError(`${ref.name}: bearer challenge without realm: "${challenge}"`);
    const tokenUrl = new URL(params.realm);
    if (params.service) tokenUrl.searchParams.set("service", params.service);
    tokenUrl.searchParams.set("scope", params.scope ?? `repository:${ref.repository}:pull`);
    const headers: Record<string, string> = {};
    if (creds && "username" in creds) {
      headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString("base64")}`;
    }
    let res: Response;
    try {
      res = await fetch(tokenUrl, { headers });
    } catch (err) {
      throw new ImageUnavailableError(
        `${ref.name}: cannot reach token service ${tokenUrl.origin}: ${causeOf(err)}`,
      );
    }
    if (!res.ok) {
      throw new ImageUnavailableError(`${ref.name}: token service answered ${res.status} ${res.statusText}`);
    }
    const body = (await res.json()) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token) throw new ImageUnavailableError(`${ref.name}: token service returned no token`);
    return `Bearer ${token}`;
  }
}

function causeOf(err: unknown): string {
  const e = err as Error & { cause?: Error };
  return e.cause?.message ?? e.message;
}
