import { SANDBOX_USER } from "@esb/runtime/image/runtime-image-builder";

/** A numeric user and group a worker's process runs as. */
export interface WorkerUser {
  uid: number;
  gid: number;
}

/**
 * Who a worker runs as when its image names no `User`: the unprivileged sandbox
 * user of ESB's runtime images (sbx_user1051, 993:990, the user AWS Lambda runs
 * functions as), never root. Images built for Docker usually leave `User` empty
 * and would otherwise run as uid 0.
 */
export const DEFAULT_WORKER_USER: Readonly<WorkerUser> = Object.freeze({
  uid: SANDBOX_USER.uid,
  gid: SANDBOX_USER.gid,
});

/**
 * The user a worker of an image runs as, the same in every runtime: an empty
 * image `User` gives {@link DEFAULT_WORKER_USER}; a numeric "uid" or "uid:gid"
 * is kept as the image says (an explicit 0 included: the image asked for it, and
 * the process still has no capabilities, no new privileges and the seccomp
 * allowlist). User names are rejected with a clear error, because resolving them
 * would mean trusting the image's /etc/passwd.
 */
export function workerUser(imageUser: string): WorkerUser {
  const user = imageUser.trim();
  if (!user) return { ...DEFAULT_WORKER_USER };
  const m = /^(\d+)(?::(\d+))?$/.exec(user);
  if (!m)
    throw new Error(
      `image user "${imageUser}" is not numeric (uid or uid:gid); ESB does not resolve user names`,
    );
  const uid = Number(m[1]);
  return { uid, gid: m[2] !== undefined ? Number(m[2]) : uid };
}
