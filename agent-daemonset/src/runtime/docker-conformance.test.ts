import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Docker from "dockerode";
import { buildTestImage, pushTestImage } from "../testing/test-image.js";
import { FunctionMemoryCgroups } from "../sandbox/function-memory.js";
import { DockerRuntime } from "./docker-runtime.js";
import { describeRuntimeConformance } from "./runtime-conformance.js";

// The same suite as containerd, against a Docker API. This machine has no Docker
// engine: the test environment's Podman service (Docker-compatible API) stands in.
describeRuntimeConformance("docker", async () => {
  const socketPath = process.env.ESB_TEST_DOCKER_SOCKET;
  const registry = process.env.ESB_TEST_REGISTRY;
  if (!socketPath || !registry) {
    throw new Error(
      "ESB_TEST_DOCKER_SOCKET and ESB_TEST_REGISTRY must be set (the test environment's podman/registry is missing)",
    );
  }
  const rand = Math.floor(Math.random() * 0xffff);
  const network = `esbd${rand.toString(16)}`;
  const subnet = `10.${200 + (rand % 50)}.${rand % 250}.0/24`;
  const imageRef = await pushTestImage(
    registry,
    `esb-test/docker-conformance-${rand.toString(16)}`,
    "v1",
    await buildTestImage(),
  );
  const docker = new Docker({ socketPath });
  const cgroupParent = `/esb-docker-conformance-${rand.toString(16)}`;
  const stateDir = mkdtempSync(join(tmpdir(), "esb-docker-conformance-"));
  const runtime = new DockerRuntime({
    socketPath,
    network,
    subnet,
    owner: `conformance-${rand}`,
    stateDir,
    cgroupParent,
  });
  return {
    runtime,
    imageRef,
    missingImageRef: `${registry}/esb-test/does-not-exist-${rand.toString(16)}:v1`,
    // Podman 4.3 with runc on cgroup v1 never sets State.OOMKilled nor sends "oom"
    // events (a Docker engine does), so only the SIGKILL exit is checked here.
    reportsOomKills: false,
    async assertRemoved(id: string) {
      const found = await docker.listContainers({ all: true, filters: { name: [id] } });
      const same = found.filter((c) => c.Names.some((n) => n.replace(/^\//, "") === id));
      if (same.length > 0) throw new Error(`container ${id} still exists (${same[0].State})`);
      if (existsSync(join(stateDir, id))) throw new Error(`/tmp folder of ${id} still exists`);
      if (existsSync(join("/sys/fs/cgroup/memory", cgroupParent, id)))
        throw new Error(`memory cgroup of ${id} still exists`);
    },
    async cleanup() {
      rmSync(stateDir, { recursive: true, force: true });
      await new FunctionMemoryCgroups().remove(cgroupParent);
      await docker
        .getNetwork(network)
        .remove()
        .catch(() => undefined);
    },
  };
});
