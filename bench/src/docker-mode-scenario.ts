import { join } from "node:path";
import { NodeAgent } from "@esb/agent/node-agent";
import { DockerRuntime } from "@esb/agent/runtime/docker-runtime";
import { RegistryClient } from "@esb/runtime/image/registry-client";
import { buildFunctionImage } from "@esb/runtime/image/runtime-image-builder";
import { RuntimeImageStore } from "@esb/runtime/image/runtime-image-store";
import { measureColdStarts, measureThaws } from "./agent-measurements.js";
import { NODE_NOOP_CODE } from "./bench-environment.js";
import { summarize } from "./bench-results.js";
import type { BenchScenario } from "./bench-scenario.js";

/**
 * Docker mode (the agent's fallback runtime, here on Podman's
 * Docker-compatible API): the no-op Node function as a container image
 * (runtime image + code layer, pushed to the run's registry and pulled once
 * by the engine), then cold starts and thaws exactly as in the containerd rows.
 */
export const dockerModeScenario: BenchScenario = {
  id: "docker",
  rows: ["docker-cold-start-node", "docker-thaw"],
  needsPodman: true,
  async run({ env, results, sizes }) {
    const socket = env.env.ESB_TEST_DOCKER_SOCKET;
    if (!socket) throw new Error("docker mode: ESB_TEST_DOCKER_SOCKET missing (podman did not start)");
    const base = await new RuntimeImageStore().get({ runtime: "nodejs24.x" });
    const fn = await buildFunctionImage({
      baseLayout: base.layoutDir,
      outDir: join(env.dir, "docker-function-image"),
      files: { "index.mjs": NODE_NOOP_CODE },
      env: ["_HANDLER=index.handler"],
    });
    const pushed = await new RegistryClient({ registry: env.env.ESB_TEST_REGISTRY }).pushImage(fn.layoutDir, {
      repository: "esb-bench/node-noop",
      tag: env.id,
    });
    const id = parseInt(env.id.slice(2, 4), 16);
    const runtime = new DockerRuntime({
      socketPath: socket,
      network: `esbd${env.id}`,
      subnet: `10.${210 + (parseInt(env.id.slice(0, 2), 16) % 40)}.${id ^ 0x80}.0/24`,
      owner: `${env.nodeName}-docker`,
      stateDir: join(env.dir, "docker-workers"),
    });
    const agent = new NodeAgent({
      nodeName: `${env.nodeName}-docker`,
      runtime,
      stateDir: join(env.dir, "agent-docker"),
      allowCodeHostPath: true,
    });
    await agent.start();
    try {
      const spec = (name: string, pauseAfterMs: number) =>
        env.functionSpec({ name, image: pushed.reference, pauseAfterMs });
      await agent.prepareFunction(spec("bench-docker-cold", 50));
      const cold = await measureColdStarts(
        agent,
        "bench-docker-cold",
        sizes.coldStarts,
        sizes.warmup,
        "docker-cold-start-node",
      );
      results.add(
        summarize("docker-cold-start-node", "ms", cold, {
          note: "docker runtime (podman): new worker -> first byte",
        }),
      );
      await agent.destroyFunction({ namespace: "default", name: "bench-docker-cold" });

      await agent.prepareFunction(spec("bench-docker-thaw", 10));
      const thaw = await measureThaws(agent, "bench-docker-thaw", sizes.thaws, sizes.warmup, "docker-thaw");
      results.add(
        summarize("docker-thaw", "ms", thaw, { note: "docker runtime (podman): paused -> first byte" }),
      );
      await agent.destroyFunction({ namespace: "default", name: "bench-docker-thaw" });
    } finally {
      for (const p of agent.pools()) await agent.destroyFunction(p.ref).catch(() => undefined);
      await agent.close();
    }
  },
};
