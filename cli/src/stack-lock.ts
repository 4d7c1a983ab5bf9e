import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

/** What one `esb up` owns on the machine while it runs. */
export interface StackResources {
  stateDir: string;
  bridge: string;
  subnet: string;
}

/** Another running `esb up` holds one of the resources. */
export class StackInUseError extends Error {
  override name = "StackInUseError";
}

/** Locks held by a running stack; {@link release} gives them back. */
export interface StackLock {
  release(): void;
}

/** Where the locks live: a tmpfs, so a reboot clears them. */
export const STACK_LOCK_DIR = "/run/esb/standalone";

/**
 * Claims the state folder, the bridge and the subnet of one `esb up`, so a
 * second stack on any of them is refused before it touches anything (two
 * stacks on one bridge used to delete each other's network on stop). Each
 * claim is a file created exclusively with the owner's pid; a claim whose pid
 * is gone (a crashed stack) is taken over. Throws {@link StackInUseError}
 * naming the holder and how to run a second stack beside it.
 */
export function acquireStackLocks(
  res: StackResources,
  dir = STACK_LOCK_DIR,
  isAlive: (pid: number) => boolean = processAlive,
): StackLock {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const claims: [string, string, string][] = [
    [
      `state-${createHash("sha256").update(resolve(res.stateDir)).digest("hex").slice(0, 16)}`,
      `state folder ${resolve(res.stateDir)}`,
      "--state-dir",
    ],
    [`bridge-${res.bridge}`, `bridge ${res.bridge}`, "--bridge"],
    [`subnet-${res.subnet.replace("/", "_")}`, `subnet ${res.subnet}`, "--subnet"],
  ];
  const held: string[] = [];
  try {
    for (const [name, what, flag] of claims) {
      const file = join(dir, `${name}.lock`);
      claim(file, what, flag, isAlive);
      held.push(file);
    }
  } catch (err) {
    for (const f of held) rmSync(f, { force: true });
    throw err;
  }
  return {
    release() {
      for (const f of held) {
        // Only our own claims: a stale-lock takeover by another stack must not be undone.
        if (ownerOf(f) === process.pid) rmSync(f, { force: true });
      }
      held.length = 0;
    },
  };
}

function claim(file: string, what: string, flag: string, isAlive: (pid: number) => boolean): void {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: "wx", mode: 0o600 });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const owner = ownerOf(file);
    if (owner !== undefined && owner !== process.pid && isAlive(owner)) {
      throw new StackInUseError(
        `another esb up (pid ${owner}) is using the ${what}; stop it first, or give this one its own ${flag}` +
          " (a second stack needs its own --state-dir, --bridge, --subnet and ports)",
      );
    }
    // Stale (its process is gone) or unreadable: remove it and claim again, once.
    rmSync(file, { force: true });
  }
  throw new StackInUseError(
    `could not claim the ${what} (${file}); another esb up is starting at this moment`,
  );
}

function ownerOf(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, "utf8").trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
