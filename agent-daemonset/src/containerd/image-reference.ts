/** A parsed image reference: `[registry/]repository[:tag][@digest]`. */
export interface ImageReference {
  /** Registry host[:port] as written (docker.io for bare names). */
  registry: string;
  /** Repository path (library/ added for Docker Hub official images). */
  repository: string;
  tag?: string;
  digest?: string;
  /** The normalised full name: registry/repository[:tag][@digest]. */
  name: string;
}

// Differs on purpose from @esb/runtime's push-side parseImageReference: pulls accept Docker Hub defaults and digests.
/**
 * Parses an image reference the way Docker does: the first path component is a
 * registry when it contains "." or ":" or is "localhost"; otherwise Docker Hub.
 * A reference without tag or digest means `:latest`. Throws on malformed input.
 */
export function parseImageReference(ref: string): ImageReference {
  const m = /^([^@]+?)(?::([\w][\w.-]{0,127}))?(?:@(sha256:[a-f0-9]{64}))?$/.exec(ref.trim());
  if (!m || !m[1]) throw new Error(`invalid image reference "${ref}"`);
  let [, path, tag] = m;
  const digest = m[3];
  // The tag pattern above may have eaten a registry port ("host:5000/repo"): a tag never contains "/".
  const slash = path.indexOf("/");
  let registry = "docker.io";
  if (slash > 0) {
    const first = path.slice(0, slash);
    if (first.includes(".") || first.includes(":") || first === "localhost") {
      registry = first;
      path = path.slice(slash + 1);
    }
  }
  if (registry === "docker.io" && !path.includes("/")) path = `library/${path}`;
  if (!/^[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*$/.test(path)) {
    throw new Error(`invalid image reference "${ref}": bad repository "${path}"`);
  }
  if (!tag && !digest) tag = "latest";
  const name = `${registry}/${path}${tag ? `:${tag}` : ""}${digest ? `@${digest}` : ""}`;
  return { registry, repository: path, tag, digest, name };
}
