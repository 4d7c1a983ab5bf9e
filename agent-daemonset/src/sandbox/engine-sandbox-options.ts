import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type Docker from "dockerode";
import { workerSeccompProfile } from "./seccomp-profile.js";

/**
 * How the worker sandbox is spelled for one Docker-API engine: Docker and
 * Podman's compatible API take some of it differently.
 */
export interface EngineSandboxOptions {
  /** `HostConfig.SecurityOpt` entry carrying {@link workerSeccompProfile}. */
  seccompOpt: string;
  /** Removes the profile file, if one was written. Workers already created keep their profile. */
  dispose(): Promise<void>;
}

/**
 * Reads which engine is behind `docker` and spells the sandbox for it:
 * - seccomp: a Docker engine takes the profile's JSON itself in `seccomp=`;
 *   Podman opens that value as a path (and fails on the JSON), so for Podman the
 *   profile is written to a file in a new private folder under `dir` (default:
 *   the OS temp folder). Either engine reads it when a container is created.
 * Throws when the engine's version cannot be read.
 */
export async function engineSandboxOptions(docker: Docker, dir = tmpdir()): Promise<EngineSandboxOptions> {
  const profile = JSON.stringify(workerSeccompProfile());
  const version = await docker.version();
  const podman = (version.Components ?? []).some((c) => /podman/i.test(c.Name));
  if (!podman) {
    return {
      seccompOpt: `seccomp=${profile}`,
      dispose: async () => undefined,
    };
  }
  await mkdir(dir, { recursive: true });
  const folder = await mkdtemp(join(dir, "esb-seccomp-"));
  const file = join(folder, "worker-seccomp.json");
  await writeFile(file, profile, { mode: 0o644 });
  return {
    seccompOpt: `seccomp=${file}`,
    dispose: () => rm(folder, { recursive: true, force: true }),
  };
}
