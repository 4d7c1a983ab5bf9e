import { existsSync } from "node:fs";
import { join } from "node:path";
import { Containers } from "@esb/common/gen/containerd/services/containers/v1/containers_pb";
import { Snapshots } from "@esb/common/gen/containerd/services/snapshots/v1/snapshots_pb";
import { Tasks } from "@esb/common/gen/containerd/services/tasks/v1/tasks_pb";
import { ContainerdConnection, isNotFound } from "../containerd/containerd-connection.js";
import { ContainerdTestFixture } from "../testing/containerd-test-fixture.js";
import { describeRuntimeConformance } from "./runtime-conformance.js";

describeRuntimeConformance("containerd", async () => {
  // A bridge, subnet and containerd namespace of this run only; throws when the test environment is missing.
  const fixture = new ContainerdTestFixture();
  const { network, dir } = fixture;
  const imageRef = await fixture.setup();
  const runtime = fixture.runtime();
  const conn = new ContainerdConnection({ socketPath: fixture.socket, namespace: fixture.namespace });
  const gone = async (what: string, call: () => Promise<unknown>) => {
    const err = await call().then(
      () => undefined,
      (e: unknown) => e,
    );
    if (!isNotFound(err)) throw new Error(`${what} still exists (${err ? (err as Error).message : "found"})`);
  };
  return {
    runtime,
    imageRef,
    missingImageRef: `${fixture.registry}/esb-test/does-not-exist-${fixture.id}:v1`,
    async assertRemoved(id: string) {
      await gone(`task ${id}`, () => conn.unary(Tasks.method.get, { containerId: id }));
      await gone(`container ${id}`, () => conn.unary(Containers.method.get, { id }));
      await gone(`snapshot ${id}`, () =>
        conn.unary(Snapshots.method.stat, { snapshotter: "overlayfs", key: id }),
      );
      if ((await network.list()).includes(id)) throw new Error(`network of ${id} still allocated`);
      if (existsSync(join(dir, "netns", `esb-${id}`))) throw new Error(`netns of ${id} still exists`);
    },
    async cleanup() {
      conn.close();
      await fixture.teardown();
    },
  };
});
