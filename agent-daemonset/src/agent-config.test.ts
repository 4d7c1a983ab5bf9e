import { describe, it, expect } from "@jest/globals";
import { AgentConfigError, loadAgentConfig } from "./agent-config.js";

describe("loadAgentConfig", () => {
  it("applies the defaults", () => {
    const c = loadAgentConfig({ NODE_NAME: "n1" });
    expect(c).toMatchObject({
      runtime: "containerd",
      containerdNamespace: "esb",
      port: 50051,
      nodeName: "n1",
      cniMode: "bridge",
      cniBridge: "esb-cni0",
      cniSubnet: "10.88.0.0/16",
      region: "us-east-1",
      insecureRegistries: [],
    });
  });

  it("reads overrides", () => {
    const c = loadAgentConfig({
      AGENT_RUNTIME: "docker",
      AGENT_PORT: "6000",
      CNI_MODE: "cluster",
      INSECURE_REGISTRIES: "localhost:5000, reg.local",
      AGENT_MEMORY_MB: "2048",
      AGENT_MAX_CONCURRENT_STARTS: "3",
      RUNTIME_IMAGE: "localhost:5000/esb/runtime:{runtime}",
      WORKER_CGROUP_PARENT: "/kubepods/esb",
    });
    expect(c).toMatchObject({
      workerCgroupParent: "/kubepods/esb",
      runtime: "docker",
      port: 6000,
      cniMode: "cluster",
      insecureRegistries: ["localhost:5000", "reg.local"],
      memoryCapacityMb: 2048,
      maxConcurrentStarts: 3,
      runtimeImage: "localhost:5000/esb/runtime:{runtime}",
    });
  });

  it("takes prebuilt runtime images from RUNTIME_IMAGES_DIR, else from the image's folder when it exists", () => {
    const only =
      (...paths: string[]) =>
      (p: string) =>
        paths.includes(p);
    expect(loadAgentConfig({ RUNTIME_IMAGES_DIR: "/srv/rt" }, only("/srv/rt")).runtimeImagesDir).toBe(
      "/srv/rt",
    );
    expect(loadAgentConfig({}, only("/usr/share/esb/runtime-images")).runtimeImagesDir).toBe(
      "/usr/share/esb/runtime-images",
    );
    expect(loadAgentConfig({}, only()).runtimeImagesDir).toBeUndefined();
    // Both are kept; the template wins when the resolver is chosen.
    expect(
      loadAgentConfig({ RUNTIME_IMAGE: "reg:5000/rt:{runtime}" }, only("/usr/share/esb/runtime-images")),
    ).toMatchObject({
      runtimeImage: "reg:5000/rt:{runtime}",
      runtimeImagesDir: "/usr/share/esb/runtime-images",
    });
    expect(() => loadAgentConfig({ RUNTIME_IMAGES_DIR: "/nowhere" }, only())).toThrow(
      'RUNTIME_IMAGES_DIR="/nowhere" does not exist',
    );
  });

  it("names the bad variable", () => {
    expect(() => loadAgentConfig({ AGENT_RUNTIME: "podman" })).toThrow(
      /AGENT_RUNTIME="podman" must be one of: containerd, docker/,
    );
    expect(() => loadAgentConfig({ AGENT_PORT: "70000" })).toThrow(AgentConfigError);
    expect(() => loadAgentConfig({ CNI_SUBNET: "10.88.0.0" })).toThrow(/CNI_SUBNET/);
    expect(() => loadAgentConfig({ AGENT_MAX_CONCURRENT_STARTS: "0" })).toThrow(
      'AGENT_MAX_CONCURRENT_STARTS="0" must be a whole number, at least 1',
    );
    expect(() => loadAgentConfig({ CNI_BRIDGE: "a-bridge-name-too-long" })).toThrow(/CNI_BRIDGE/);
    expect(() => loadAgentConfig({ RUNTIME_IMAGE: "x:latest" })).toThrow(/\{runtime\}/);
    expect(() => loadAgentConfig({ AGENT_MEMORY_MB: "12" })).toThrow(/AGENT_MEMORY_MB/);
    expect(() => loadAgentConfig({ WORKER_CGROUP_PARENT: "kubepods" })).toThrow(/WORKER_CGROUP_PARENT/);
    expect(() => loadAgentConfig({ WORKER_CGROUP_PARENT: "/a/../b" })).toThrow(/WORKER_CGROUP_PARENT/);
  });
});
