// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { mkdir, mkdtemp, rm, symlink, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger, LAMBDA_FUNCTION_MESSAGES } from "@esb/common";
import { StaticAgentDirectory } from "./agent-directory.js";
import { Controller } from "./controller.js";
import { FolderFunctionSource } from "./folder-function-source.js";
import { RecordingTestAgent } from "./recording-test-agent.js";

const logger = createLogger("controller-test", { level: process.env.ESB_LOG_LEVEL ?? "silent" });

async function eventually<T>(what: string, fn: () => T | undefined | false, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const hello = (memorySize: number) => `apiVersion: esb.dev/v1alpha1
kind: LambdaFunction
metadata:
  name: hello
spec:
  runtime: nodejs22.x
  handler: index.handler
  memorySize: ${memorySize}
  provisionedConcurrency: 3
  code:
    inline:
      index.mjs: "export const handler = async () => 'hi';"
`;

describe("FolderFunctionSource with the reconciler (standalone)", () => {
  let dir: string;
  let a1: RecordingTestAgent;
  let a2: RecordingTestAgent;
  let agents: StaticAgentDirectory;
  let source: FolderFunctionSource;
  let controller: Controller;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "esb-folder-"));
    a1 = await new RecordingTestAgent().start();
    a2 = await new RecordingTestAgent().start();
    await writeFile(join(dir, "hello.yaml"), hello(128));
    await writeFile(
      join(dir, "bad.yaml"),
      "apiVersion: esb.dev/v1alpha1\nkind: LambdaFunction\nmetadata:\n  name: bad\nspec:\n  memorySize: 64\n---\nnot: [valid\n",
    );
    await writeFile(
      join(dir, "shell.yml"),
      "apiVersion: esb.dev/v1alpha1\nkind: LambdaFunction\nmetadata:\n  name: shell\n  namespace: tools\nspec:\n  runtime: provided\n  code:\n    path: ./shell\n",
    );
    await mkdir(join(dir, "shell"));
    await writeFile(join(dir, "notes.txt"), "ignored");
    agents = new StaticAgentDirectory([a1.url, a2.url]);
    source = new FolderFunctionSource(dir, { logger, pollMs: 200 });
    controller = new Controller({
      source,
      agents,
      gatewayUrl: "http://127.0.0.1:9000",
      logger,
      baseRetryDelayMs: 50,
    });
    await controller.start();
  });

  afterAll(async () => {
    await controller?.stop();
    await a1?.stop();
    await a2?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("prepares valid manifests on every agent, splits provisioned concurrency and reports Ready", async () => {
    const fn = await eventually("hello Ready", () => {
      const f = source.get("default/hello");
      return f?.status?.conditions?.find((c) => c.type === "Ready" && c.status === "True") ? f : undefined;
    });
    expect(fn.status).toMatchObject({
      observedGeneration: 1,
      warmWorkers: 3,
      readyWorkers: 3,
      url: "http://127.0.0.1:9000/2015-03-31/functions/hello/invocations",
      imageDigest: expect.stringMatching(/^sha256:/),
    });
    expect(fn.status?.conditions?.map((c) => [c.type, c.status, c.observedGeneration])).toEqual([
      ["Ready", "True", 1],
      ["ImagePrepared", "True", 1],
      ["WarmPoolReady", "True", 1],
    ]);
    const s1 = a1.functions.get("default/hello")!;
    const s2 = a2.functions.get("default/hello")!;
    expect(s1.provisionedConcurrency + s2.provisionedConcurrency).toBe(3);
    expect(s1.revision).toBe(s2.revision);
    expect(new TextDecoder().decode(s1.code?.files["index.mjs"])).toContain("handler");
  });

  it("resolves a relative code.path against the folder", async () => {
    const spec = await eventually("shell prepared", () => a1.functions.get("tools/shell"));
    expect(spec.code?.hostPath).toBe(join(dir, "shell"));
    expect(spec.runtime).toBe("provided");
  });

  it("skips invalid manifests and reports the CRD's messages", () => {
    const invalid = source.invalidManifests().get("bad.yaml");
    expect(invalid).toEqual(
      expect.arrayContaining([
        `bad.yaml (document 1): ${LAMBDA_FUNCTION_MESSAGES.imageOrRuntime}`,
        "bad.yaml (document 1): spec.memorySize must be between 128 and 10240 (got 64)",
        expect.stringMatching(/^bad\.yaml \(document 2\): invalid YAML/),
      ]),
    );
    expect(source.keys().sort()).toEqual(["default/hello", "tools/shell"]);
  });

  it("prepares a new revision when the manifest changes", async () => {
    const before = a1.functions.get("default/hello")!.revision;
    await writeFile(join(dir, "hello.yaml"), hello(256));
    const spec = await eventually("new revision", () => {
      const s = a1.functions.get("default/hello");
      return s && s.revision !== before ? s : undefined;
    });
    expect(spec.memorySizeMb).toBe(256);
    expect(spec.generation).toBe(2n);
    await eventually(
      "observedGeneration 2",
      () => source.get("default/hello")?.status?.observedGeneration === 2,
    );
  });

  it("moves the warm pool to the remaining agents when one goes away", async () => {
    agents.setAgents([a1.url]);
    await eventually(
      "all provisioned on a1",
      () => a1.functions.get("default/hello")?.provisionedConcurrency === 3,
    );
    const fn = await eventually("status on one node", () => {
      const f = source.get("default/hello");
      return f?.status?.nodes?.length === 1 ? f : undefined;
    });
    expect(fn.status?.warmWorkers).toBe(3);
  });

  it("destroys the function's workers when its manifest is removed", async () => {
    await unlink(join(dir, "hello.yaml"));
    await eventually("DestroyFunction", () => a1.callsFor("DestroyFunction", "default/hello").length > 0);
    expect(source.get("default/hello")).toBeUndefined();
  });
});

describe("FolderFunctionSource: code.path stays inside the functions folder", () => {
  let dir: string;
  let outside: string;
  const manifest = (name: string, path: string) =>
    `apiVersion: esb.dev/v1alpha1\nkind: LambdaFunction\nmetadata:\n  name: ${name}\nspec:\n  runtime: provided\n  code:\n    path: ${path}\n`;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "esb-confine-"));
    outside = await mkdtemp(join(tmpdir(), "esb-outside-"));
    const functions = join(dir, "functions");
    await mkdir(join(functions, "inside"), { recursive: true });
    await symlink("/etc", join(functions, "etc-link"));
    await symlink(outside, join(functions, "outside-link"));
    await writeFile(join(functions, "inside.yaml"), manifest("inside", "./inside"));
    await writeFile(join(functions, "root.yaml"), manifest("root", "/"));
    await writeFile(join(functions, "up.yaml"), manifest("up", ".."));
    await writeFile(join(functions, "etc.yaml"), manifest("etc", "./etc-link"));
    await writeFile(join(functions, "missing.yaml"), manifest("missing", "./nowhere"));
    await writeFile(join(functions, "file.yaml"), manifest("file", "./inside.yaml"));
    await writeFile(join(functions, "allowed.yaml"), manifest("allowed", "./outside-link"));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
    await rm(outside, { recursive: true, force: true });
  });

  const scan = async (codeRoots?: string[]) => {
    const source = new FolderFunctionSource(join(dir, "functions"), { logger, pollMs: 60_000, codeRoots });
    await source.start(() => undefined);
    await source.stop();
    return source;
  };

  it("rejects /, a parent folder, a symlink out of the folder, a missing path and a file", async () => {
    const source = await scan();
    expect(source.keys()).toEqual(["default/inside"]);
    const errors = source.invalidManifests();
    expect(errors.get("root.yaml")).toEqual([
      `root.yaml: spec.code.path / is outside the functions folder ${join(dir, "functions")}; code must stay inside it (esb up --code-root DIR allows another folder)`,
    ]);
    expect(errors.get("up.yaml")?.[0]).toContain(`spec.code.path ${dir} is outside the functions folder`);
    expect(errors.get("etc.yaml")?.[0]).toContain("(resolves to /etc) is outside the functions folder");
    expect(errors.get("allowed.yaml")?.[0]).toContain(`(resolves to ${outside}) is outside`);
    expect(errors.get("missing.yaml")).toEqual([
      `missing.yaml: spec.code.path ${join(dir, "functions", "nowhere")} does not exist`,
    ]);
    expect(errors.get("file.yaml")?.[0]).toContain("is not a folder");
  });

  it("accepts a folder an operator allowed with codeRoots (esb up --code-root), and never /", async () => {
    const source = await scan([outside, "/"]);
    expect(source.keys().sort()).toEqual(["default/allowed", "default/inside"]);
    expect(source.invalidManifests().has("root.yaml")).toBe(true);
    expect(source.invalidManifests().has("etc.yaml")).toBe(true);
  });
});
