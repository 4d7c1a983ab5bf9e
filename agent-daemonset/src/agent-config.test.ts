// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect } from "@jest/globals";
import { AGENT_ENV_HELP, AgentConfigError, loadAgentConfig } from "./agent-config.js";

/** Every configuration needs an authentication setting; these tests are about the rest. */
const AUTH = { AGENT_TOKENS_FILE: "/etc/esb/agent-tokens.json" };

describe("loadAgentConfig", () => {
  it("applies the defaults", () => {
    const c = loadAgentConfig({ ...AUTH, NODE_NAME: "n1" });
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
      ...AUTH,
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
    expect(
      loadAgentConfig({ ...AUTH, RUNTIME_IMAGES_DIR: "/srv/rt" }, only("/srv/rt")).runtimeImagesDir,
    ).toBe("/srv/rt");
    expect(loadAgentConfig({ ...AUTH }, only("/usr/share/esb/runtime-images")).runtimeImagesDir).toBe(
      "/usr/share/esb/runtime-images",
    );
    expect(loadAgentConfig({ ...AUTH }, only()).runtimeImagesDir).toBeUndefined();
    // Both are kept; the template wins when the resolver is chosen.
    expect(
      loadAgentConfig(
        { ...AUTH, RUNTIME_IMAGE: "reg:5000/rt:{runtime}" },
        only("/usr/share/esb/runtime-images"),
      ),
    ).toMatchObject({
      runtimeImage: "reg:5000/rt:{runtime}",
      runtimeImagesDir: "/usr/share/esb/runtime-images",
    });
    expect(() => loadAgentConfig({ ...AUTH, RUNTIME_IMAGES_DIR: "/nowhere" }, only())).toThrow(
      'RUNTIME_IMAGES_DIR="/nowhere" does not exist',
    );
  });

  it("names the bad variable", () => {
    expect(() => loadAgentConfig({ ...AUTH, AGENT_RUNTIME: "podman" })).toThrow(
      /AGENT_RUNTIME="podman" must be one of: containerd, docker/,
    );
    expect(() => loadAgentConfig({ ...AUTH, AGENT_PORT: "70000" })).toThrow(AgentConfigError);
    expect(() => loadAgentConfig({ ...AUTH, CNI_SUBNET: "10.88.0.0" })).toThrow(/CNI_SUBNET/);
    expect(() => loadAgentConfig({ ...AUTH, AGENT_MAX_CONCURRENT_STARTS: "0" })).toThrow(
      'AGENT_MAX_CONCURRENT_STARTS="0" must be a whole number, at least 1',
    );
    expect(() => loadAgentConfig({ ...AUTH, CNI_BRIDGE: "a-bridge-name-too-long" })).toThrow(/CNI_BRIDGE/);
    expect(() => loadAgentConfig({ ...AUTH, RUNTIME_IMAGE: "x:latest" })).toThrow(/\{runtime\}/);
    expect(() => loadAgentConfig({ ...AUTH, AGENT_MEMORY_MB: "12" })).toThrow(/AGENT_MEMORY_MB/);
    expect(() => loadAgentConfig({ ...AUTH, WORKER_CGROUP_PARENT: "kubepods" })).toThrow(
      /WORKER_CGROUP_PARENT/,
    );
    expect(() => loadAgentConfig({ ...AUTH, WORKER_CGROUP_PARENT: "/a/../b" })).toThrow(
      /WORKER_CGROUP_PARENT/,
    );
  });

  it("authenticates callers in every mode: a tokens file outside Kubernetes, TokenReview in a pod", () => {
    expect(loadAgentConfig({ ...AUTH }).auth).toEqual({
      mode: "token",
      tokensFile: "/etc/esb/agent-tokens.json",
    });
    expect(() => loadAgentConfig({})).toThrow(/AGENT_TOKENS_FILE is not set/);
    const pod = {
      KUBERNETES_SERVICE_HOST: "10.96.0.1",
      AGENT_CONTROLLER_USERS: "system:serviceaccount:esb-system:esb-controller",
      AGENT_GATEWAY_USERS: "system:serviceaccount:esb-system:esb-gateway, system:serviceaccount:edge:gw",
    };
    expect(loadAgentConfig(pod).auth).toEqual({
      mode: "kubernetes",
      audience: "esb-agent",
      controllerUsers: ["system:serviceaccount:esb-system:esb-controller"],
      gatewayUsers: ["system:serviceaccount:esb-system:esb-gateway", "system:serviceaccount:edge:gw"],
    });
    expect(() => loadAgentConfig({ ...pod, AGENT_GATEWAY_USERS: "" })).toThrow(
      /AGENT_GATEWAY_USERS is not set/,
    );
    expect(() => loadAgentConfig({ ...AUTH, AGENT_AUTH: "none" })).toThrow(
      /AGENT_AUTH="none" must be one of/,
    );
  });
  it("reads the worker network policy: egress on by default, destination lists validated", () => {
    expect(loadAgentConfig({ ...AUTH }).workerNetwork).toEqual({
      egress: "allow",
      allowedDestinations: [],
      deniedDestinations: [],
    });
    expect(
      loadAgentConfig({
        ...AUTH,
        WORKER_EGRESS: "deny",
        WORKER_ALLOWED_DESTINATIONS: "10.0.5.20:5432, 192.168.7.0/24",
        WORKER_DENIED_DESTINATIONS: "203.0.113.10,198.51.100.0/24",
      }).workerNetwork,
    ).toEqual({
      egress: "deny",
      allowedDestinations: [
        { cidr: "10.0.5.20/32", port: 5432 },
        { cidr: "192.168.7.0/24", port: undefined },
      ],
      deniedDestinations: ["203.0.113.10/32", "198.51.100.0/24"],
    });
    expect(() => loadAgentConfig({ ...AUTH, WORKER_EGRESS: "off" })).toThrow(
      'WORKER_EGRESS="off" must be one of: allow, deny',
    );
    expect(() => loadAgentConfig({ ...AUTH, WORKER_ALLOWED_DESTINATIONS: "db.internal:5432" })).toThrow(
      'WORKER_ALLOWED_DESTINATIONS entry "db.internal:5432" is not ipv4[/prefix][:port]',
    );
    expect(() => loadAgentConfig({ ...AUTH, WORKER_DENIED_DESTINATIONS: "10.96.0.0/12:443" })).toThrow(
      AgentConfigError,
    );
    // The docker runtime cannot enforce it: refused rather than silently ignored.
    expect(() => loadAgentConfig({ ...AUTH, AGENT_RUNTIME: "docker", WORKER_EGRESS: "deny" })).toThrow(
      /need AGENT_RUNTIME=containerd/,
    );
  });

  it("reads AGENT_RESYNC_SECONDS: 60 by default, 0 turns the periodic resync off, anything else is refused", () => {
    expect(loadAgentConfig({ ...AUTH }).resyncSeconds).toBe(60);
    expect(loadAgentConfig({ ...AUTH, AGENT_RESYNC_SECONDS: "15" }).resyncSeconds).toBe(15);
    expect(loadAgentConfig({ ...AUTH, AGENT_RESYNC_SECONDS: "0" }).resyncSeconds).toBe(0);
    for (const bad of ["-1", "1.5", "ten", "86401"]) {
      expect(() => loadAgentConfig({ ...AUTH, AGENT_RESYNC_SECONDS: bad })).toThrow(
        `AGENT_RESYNC_SECONDS="${bad}" must be a whole number of seconds, 0 (off) to 86400`,
      );
    }
    expect(AGENT_ENV_HELP.map(([name]) => name)).toContain("AGENT_RESYNC_SECONDS");
  });
});
