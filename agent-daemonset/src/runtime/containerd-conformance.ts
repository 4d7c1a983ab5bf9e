import { existsSync } from "node:fs";
import { join } from "node:path";
import { Containers } from "@esb/common/gen/containerd/services/containers/v1/containers_pb";
import { Snapshots } from "@esb/common/gen/containerd/services/snapshots/v1/snapshots_pb";
import { Tasks } from "@esb/common/gen/containerd/services/tasks/v1/tasks_pb";
import { ContainerdConnection, isNotFound } from "../containerd/containerd-connection.js";
import {
  ContainerdTestFixture,
  testContainerdSocket,
  type TestContainerd,
} from "../testing/containerd-test-fixture.js";
import { describeRuntimeConformance } from "./runtime-conformance.js";

/**
 * The {@link describeRuntimeConformance} suite on the containerd runtime against one
 * of the test containerds (1.6 or 2.x), in a bridge, subnet and containerd namespace
 * of this run only. Fails when the test environment lacks that containerd.
 */
export function describeContainerdConformance(containerd: TestContainerd): void {
  describeRuntimeConformance(`containerd ${containerd}`, async () => {
    const fixture = new ContainerdTestFixture({ socket: testContainerdSocket(containerd) });
    const { network, dir } = fixture;
    const imageRef = await fixture.setup();
    const runtime = fixture.runtime();
    const conn = new ContainerdConnection({ socketPath: fixture.socket, namespace: fixture.namespace });
    const gone = async (what: string, call: () => Promise<unknown>) => {
      const err = await call().then(
        () => undefined,
        (e: unknown) => e,
      );
      if (!isNotFound(err))
        throw new Error(`${what} still exists (${err ? (err as Error).message : "found"})`);
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
        if (existsSync(join(dir, "runtime", ".worker-tmp", id)))
          throw new Error(`/tmp folder of ${id} still exists`);
        if (existsSync(join("/sys/fs/cgroup/memory", fixture.namespace, id)))
          throw new Error(`memory cgroup of ${id} still exists`);
      },
      async cleanup() {
        conn.close();
        await fixture.teardown();
      },
    };
  });
}
