import { readFile } from "node:fs/promises";
import type { Logger } from "@esb/common";
import { parse } from "yaml";

/** One caller the gateway accepts: an access key, its secret and where it may invoke. */
export interface GatewayCredential {
  /** AWS-style access key id, as the caller's SDK sends it in the Credential scope. */
  accessKeyId: string;
  /** Secret access key; never logged, never sent. */
  secretAccessKey: string;
  /** Namespaces whose functions this key may invoke; `["*"]`: every namespace. */
  namespaces: string[];
  /** Shown in AccessDenied messages as `user/<name>` (default: the access key id). */
  name: string;
}

/** A credentials file that cannot be used; the message names the file and the problem. */
export class CredentialsFileError extends Error {
  override name = "CredentialsFileError";
}

const ACCESS_KEY_ID = /^[A-Za-z0-9]{3,128}$/;
const NAMESPACE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const USER_NAME = /^[A-Za-z0-9+=,.@_-]{1,64}$/;
const FIELDS = new Set(["accessKeyId", "secretAccessKey", "namespaces", "name"]);
/** Shortest secret accepted: a guessable secret makes the signature worthless. */
const MIN_SECRET_LENGTH = 16;

/**
 * Parses a credentials file (YAML or JSON):
 *
 * ```yaml
 * credentials:
 *   - accessKeyId: ESBTEAMA
 *     secretAccessKey: 0a1b2c…   # at least 16 characters
 *     namespaces: [team-a]      # or ["*"] for every namespace
 *     name: team-a-ci           # optional
 * ```
 *
 * Unknown fields are errors so that a typo (`namespace:`) does not silently
 * widen or narrow access. Messages never contain a secret.
 */
export function parseCredentials(text: string, source: string): Map<string, GatewayCredential> {
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    throw new CredentialsFileError(`${source}: not YAML or JSON: ${(err as Error).message}`);
  }
  const list = (doc as { credentials?: unknown } | null)?.credentials;
  if (!Array.isArray(list)) throw new CredentialsFileError(`${source}: expected a "credentials:" list`);
  const byKey = new Map<string, GatewayCredential>();
  list.forEach((entry: unknown, i) => {
    const where = `${source}: credentials[${i}]`;
    if (typeof entry !== "object" || entry === null || Array.isArray(entry))
      throw new CredentialsFileError(`${where}: expected an object`);
    const e = entry as Record<string, unknown>;
    for (const field of Object.keys(e)) {
      if (!FIELDS.has(field))
        throw new CredentialsFileError(
          `${where}: unknown field "${field}" (expected ${[...FIELDS].join(", ")})`,
        );
    }
    const { accessKeyId, secretAccessKey, namespaces, name } = e;
    if (typeof accessKeyId !== "string" || !ACCESS_KEY_ID.test(accessKeyId))
      throw new CredentialsFileError(`${where}: accessKeyId must be 3 to 128 letters or digits`);
    if (byKey.has(accessKeyId))
      throw new CredentialsFileError(`${where}: accessKeyId ${accessKeyId} is listed twice`);
    if (typeof secretAccessKey !== "string" || secretAccessKey.length < MIN_SECRET_LENGTH)
      throw new CredentialsFileError(
        `${where} (${accessKeyId}): secretAccessKey must be a string of at least ${MIN_SECRET_LENGTH} characters`,
      );
    if (
      !Array.isArray(namespaces) ||
      namespaces.length === 0 ||
      !namespaces.every((n) => typeof n === "string" && (n === "*" || NAMESPACE.test(n)))
    )
      throw new CredentialsFileError(
        `${where} (${accessKeyId}): namespaces must be a non-empty list of namespace names or "*"`,
      );
    if (name !== undefined && (typeof name !== "string" || !USER_NAME.test(name)))
      throw new CredentialsFileError(
        `${where} (${accessKeyId}): name must be 1 to 64 characters of [A-Za-z0-9+=,.@_-]`,
      );
    byKey.set(accessKeyId, {
      accessKeyId,
      secretAccessKey,
      namespaces: namespaces as string[],
      name: (name as string | undefined) ?? accessKeyId,
    });
  });
  return byKey;
}

/**
 * The credentials the gateway accepts, read from a file and re-read when its
 * content changes (a Kubernetes Secret volume is updated in place by the
 * kubelet; an operator may edit the file of `esb up`). A file that becomes
 * invalid is reported and ignored: the last valid credentials stay in force,
 * so a half-written edit cannot lock every caller out or let everyone in.
 */
export class CredentialStore {
  private credentials = new Map<string, GatewayCredential>();
  private text = "";
  private timer: NodeJS.Timeout | undefined;

  constructor(
    /** Path of the credentials file. */
    readonly path: string,
    private readonly logger: Logger,
  ) {}

  /** Reads the file; throws {@link CredentialsFileError} when it is missing or invalid. */
  async load(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (err) {
      throw new CredentialsFileError(
        `${this.path}: cannot read: ${(err as NodeJS.ErrnoException).code ?? err}`,
      );
    }
    this.apply(text);
  }

  /** Re-reads the file every `intervalMs` (polling: inotify misses a Secret's symlink swap on some setups). */
  watch(intervalMs: number): void {
    this.timer = setInterval(() => void this.reload(), intervalMs);
    this.timer.unref();
  }

  /** Stops re-reading. */
  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** The credential of an access key id, if any. */
  get(accessKeyId: string): GatewayCredential | undefined {
    return this.credentials.get(accessKeyId);
  }

  /** Number of access keys accepted. */
  get size(): number {
    return this.credentials.size;
  }

  /** Reads the file again now; keeps the current credentials when it is unreadable or invalid. */
  async reload(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (err) {
      this.logger.warn(
        { path: this.path, code: (err as NodeJS.ErrnoException).code },
        "credentials file unreadable; keeping the previous credentials",
      );
      return;
    }
    if (text === this.text) return;
    try {
      this.apply(text);
      this.logger.info({ path: this.path, keys: this.credentials.size }, "credentials reloaded");
    } catch (err) {
      this.text = text; // report a broken version once, not at every poll
      this.logger.error(
        { path: this.path, err: (err as Error).message },
        "credentials file invalid; keeping the previous credentials",
      );
    }
  }

  private apply(text: string): void {
    const parsed = parseCredentials(text, this.path);
    this.credentials = parsed;
    this.text = text;
  }
}
