// Staged code (stateDir/code/<hash>) goes when no function uses it: first the collector on its
// own, then a real NodeAgent on the test containerd whose workers mount the staged folders.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { createLogger } from "@esb/common";
import {
  FunctionCodeSchema,
  FunctionSpecSchema,
  type FunctionSpec,
} from "@esb/common/gen/esb/agent/v1/agent_pb";
import { StagedCodeStore } from "./code-staging.js";
import { NodeAgent } from "./node-agent.js";
import { ContainerdTestFixture } from "./testing/containerd-test-fixture.js";

const log = createLogger("code-staging-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });

async function until<T>(what: string, probe: () => T | undefined | false, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("StagedCodeStore", () => {
  it("keeps a folder that a prepare in progress holds while another function with the same code is removed", async () => {
    const base = mkdtempSync(join(tmpdir(), "esb-code-hold-"));
    try {
      const used = new Set<string>();
      const store = new StagedCodeStore(join(base, "code"), () => used, log);
      const files = { "index.mjs": Buffer.from("export const handler = async () => 1;") };
      const a = await store.stage(files); // function A prepared and recorded
      used.add(a.dir);
      await a.release();
      const b = await store.stage(files); // function B prepares the same code...
      expect(b.dir).toBe(a.dir);
      used.delete(a.dir); // ...while A is destroyed, before B has recorded the folder
      store.pin(a.dir);
      await store.unpin(a.dir);
      expect(existsSync(b.dir)).toBe(true);
      used.add(b.dir);
      await b.release();
      expect(readdirSync(b.dir)).toEqual(["index.mjs"]);
      used.delete(b.dir);
      expect(await store.sweep()).toEqual([b.dir]);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });

  it("stages anew when the same code is being removed at that moment (destroy, then prepare again)", async () => {
    const base = mkdtempSync(join(tmpdir(), "esb-code-race-"));
    try {
      const used = new Set<string>();
      const store = new StagedCodeStore(join(base, "code"), () => used, log);
      // Enough files that removing them takes a while.
      const files: Record<string, Buffer> = {
        "index.mjs": Buffer.from("export const handler = async () => 1;"),
      };
      for (let i = 0; i < 3000; i++) files[`lib/f${i}.js`] = Buffer.from(`export default ${i};`);
      const first = await store.stage(files);
      const removing = first.release(); // the function is destroyed: its folder goes...
      const again = await store.stage(files); // ...while the same code is prepared again
      await removing;
      expect(again.dir).toBe(first.dir);
      expect(existsSync(join(again.dir, "index.mjs"))).toBe(true);
      expect(readdirSync(join(again.dir, "lib"))).toHaveLength(3000);
      await again.release();
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });

  it("refuses a file path leaving /var/task and leaves no staging folder behind", async () => {
    const base = mkdtempSync(join(tmpdir(), "esb-code-bad-"));
    try {
      const store = new StagedCodeStore(join(base, "code"), () => [], log);
      await expect(
        store.stage({ "a.js": Buffer.from("1"), "z/../../etc/x": Buffer.from("2") }),
      ).rejects.toThrow(/must be relative to \/var\/task/);
      expect(readdirSync(join(base, "code"))).toEqual([]);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });

  it("removes a folder only when no function uses it and nothing pins it, and never one outside its root", async () => {
    const base = mkdtempSync(join(tmpdir(), "esb-code-gc-"));
    try {
      const root = join(base, "code");
      for (const d of ["a", "b", "c", "x.tmp-1"]) mkdirSync(join(root, d), { recursive: true });
      const outside = join(base, "host-code");
      mkdirSync(outside);
      const used = new Set([join(root, "a")]);
      const gc = new StagedCodeStore(root, () => used, log);
      expect(gc.manages(outside)).toBe(false);
      expect(gc.manages(join(root, "a", "lib"))).toBe(false);

      gc.pin(join(root, "b"));
      gc.pin(join(root, "b"));
      expect((await gc.sweep()).sort()).toEqual([join(root, "c"), join(root, "x.tmp-1")]);
      await gc.unpin(join(root, "b"));
      expect(existsSync(join(root, "b"))).toBe(true); // still pinned once
      await gc.unpin(join(root, "b"));
      expect(existsSync(join(root, "b"))).toBe(false);

      gc.retire(join(root, "a"), 50); // still a function's: stays after the drain time
      used.delete(join(root, "a"));
      mkdirSync(join(root, "d"));
      gc.retire(join(root, "d"), 100);
      expect(await gc.sweep()).toEqual([]); // pinned while the old revision drains
      await until(
        "the retired folder removed",
        () => !existsSync(join(root, "d")) && !existsSync(join(root, "a")),
      );
      await gc.unpin(outside);
      expect(existsSync(outside)).toBe(true);
      gc.close();
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
});

describe("NodeAgent removes staged code with its function (real containerd)", () => {
  const fx = new ContainerdTestFixture();
  const stateDir = mkdtempSync(join(tmpdir(), "esb-code-staging-state-"));
  const codeRoot = join(stateDir, "code");
  let agent: NodeAgent;

  const newAgent = () =>
    new NodeAgent({
      nodeName: `node-${fx.id}`,
      runtime: fx.runtime(),
      network: fx.network,
      stateDir,
      // Test stand-in: the fixture's image serves as every managed runtime's base image.
      imageResolver: { prepareRuntimeImage: (_runtime, runtime) => runtime.prepareImage(fx.imageRef) },
      // A retired revision's code waits timeout + this grace for its workers.
      leaseGraceMs: 200,
      logger: log,
    });

  function spec(name: string, source: string, provisioned = 1): FunctionSpec {
    return create(FunctionSpecSchema, {
      ref: { namespace: "default", name },
      generation: 1n,
      revision: `rev-${source.length}-${name}-${Buffer.from(source).toString("hex").slice(-12)}`,
      runtime: "nodejs24.x",
      handler: "index.handler",
      code: create(FunctionCodeSchema, { files: { "index.mjs": new TextEncoder().encode(source) } }),
      memorySizeMb: 128,
      timeoutSeconds: 1,
      ephemeralStorageMb: 16,
      provisionedConcurrency: provisioned,
      scaling: { pauseAfterMs: 600_000, keepWarmSeconds: 600 },
    });
  }
  const staged = () => (existsSync(codeRoot) ? readdirSync(codeRoot).sort() : []);

  beforeAll(async () => {
    await fx.setup();
    agent = newAgent();
    await agent.start();
  });

  afterAll(async () => {
    if (agent) {
      for (const p of agent.pools()) await agent.destroyFunction(p.ref);
      await agent.close();
    }
    await fx.teardown();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it("keeps shared code until its last function goes, and removes a folder once its function is destroyed", async () => {
    await agent.prepareFunction(spec("shared-1", "export const handler = async () => 'shared';"));
    await agent.prepareFunction(spec("shared-2", "export const handler = async () => 'shared';", 0));
    await agent.prepareFunction(spec("alone", "export const handler = async () => 'alone';"));
    await until(
      "the provisioned workers",
      () => agent.listWorkers().filter((w) => w.state === "idle").length >= 2,
    );
    expect(staged()).toHaveLength(2);

    await agent.destroyFunction({ namespace: "default", name: "shared-1" });
    await new Promise((r) => setTimeout(r, 300));
    expect(staged()).toHaveLength(2); // shared-2 still runs that code
    await agent.destroyFunction({ namespace: "default", name: "shared-2" });
    await until("the shared code removed", () => staged().length === 1);
    await agent.destroyFunction({ namespace: "default", name: "alone" });
    await until("every staged folder removed", () => staged().length === 0);
  }, 120_000);

  it("removes a replaced revision's code after its workers' longest run, and stray folders at start", async () => {
    await agent.prepareFunction(spec("edited", "export const handler = async () => 1;"));
    const [first] = staged();
    await agent.prepareFunction(spec("edited", "export const handler = async () => 2;"));
    expect(staged()).toHaveLength(2);
    // timeout 1 s + lease grace 200 ms, then the old revision's folder goes.
    await until(
      "the old revision's code removed",
      () => staged().length === 1 && !staged().includes(first),
      10_000,
    );

    // Left behind by a crash: a folder no function uses and a half-staged one.
    await agent.close();
    mkdirSync(join(codeRoot, "0123456789abcdef0123456789abcdef"));
    writeFileSync(join(codeRoot, "0123456789abcdef0123456789abcdef", "index.mjs"), "old");
    mkdirSync(join(codeRoot, "fedcba9876543210fedcba9876543210.tmp-0011223344556677"));
    const kept = staged().filter((n) => n !== "0123456789abcdef0123456789abcdef" && !n.includes(".tmp-"));
    agent = newAgent();
    await agent.start();
    expect(staged()).toEqual(kept); // the persisted function keeps its code
    await agent.destroyFunction({ namespace: "default", name: "edited" });
    await until("every staged folder removed", () => staged().length === 0);
  }, 120_000);
});
