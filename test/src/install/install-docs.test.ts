// The install artefacts that cannot run here (no Docker engine, no kind) are
// still checked for what users rely on: docs/kubernetes.md's values table
// matches values.schema.json, every `make` target it names exists, the kind
// configuration has the ingress ports and registry patch, and the
// Dockerfiles start each component's entry point on a pinned Node 24 base.
import { describe, it, expect } from "@jest/globals";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { repoRoot } from "./chart-tools.js";
import { tableInDocument, valuesTable } from "./values-table.js";

const docPath = join(repoRoot, "docs", "kubernetes.md");

/** Targets defined in the Makefile and the files it includes. */
function makeTargets(): Set<string> {
  const targets = new Set<string>();
  const read = (file: string): void => {
    const text = readFileSync(join(repoRoot, file), "utf8");
    for (const match of text.matchAll(
      /^([a-zA-Z0-9][a-zA-Z0-9_.-]*(?: [a-zA-Z0-9][a-zA-Z0-9_.-]*)*):(?!=)/gm,
    )) {
      for (const target of match[1].split(" ")) targets.add(target);
    }
    for (const match of text.matchAll(/^-?include\s+(.+)$/gm)) {
      for (const included of match[1].trim().split(/\s+/)) read(included);
    }
  };
  read("Makefile");
  return targets;
}

describe("install documentation and artefacts", () => {
  it("documents every chart value with the schema's description and the default of values.yaml", () => {
    const expected = valuesTable();
    const actual = tableInDocument(readFileSync(docPath, "utf8"), "## Configure");
    if (actual !== expected) {
      throw new Error(`docs/kubernetes.md's values table is out of date; replace it with:\n\n${expected}\n`);
    }
  });

  it("names only make targets that the Makefile (with its includes) defines", () => {
    const doc = readFileSync(docPath, "utf8");
    const named = new Set<string>();
    for (const match of doc.matchAll(/`make ([a-z][a-z0-9 -]*)`|^make ([a-z][a-z0-9 -]*?)(?:\s+#.*)?$/gm)) {
      for (const target of (match[1] ?? match[2]).trim().split(/\s+/)) named.add(target);
    }
    expect([...named]).toEqual(
      expect.arrayContaining(["kind-up", "images", "kind-load", "deploy", "kind-down"]),
    );
    const defined = makeTargets();
    expect([...named].filter((t) => !defined.has(t))).toEqual([]);
  });

  it("configures kind with ingress ports, the local registry and an ingress-ready node", () => {
    const config = parse(readFileSync(join(repoRoot, "kind-config.yaml"), "utf8")) as {
      kind: string;
      containerdConfigPatches: string[];
      nodes: {
        role: string;
        labels?: Record<string, string>;
        extraPortMappings?: { containerPort: number; hostPort: number }[];
      }[];
    };
    expect(config.kind).toBe("Cluster");
    expect(config.containerdConfigPatches.join("\n")).toContain('config_path = "/etc/containerd/certs.d"');
    const ingressNode = config.nodes.find((n) => n.labels?.["ingress-ready"] === "true");
    expect(ingressNode?.extraPortMappings?.map((p) => [p.containerPort, p.hostPort])).toEqual([
      [80, 80],
      [443, 443],
    ]);
    const mk = readFileSync(join(repoRoot, "mk", "kind.mk"), "utf8");
    expect(mk).toContain("KIND_REGISTRY_PORT ?= 5001");
    expect(mk).toContain("/etc/containerd/certs.d/localhost:$(KIND_REGISTRY_PORT)");
  });

  it.each([
    ["controller", "controller/dist/main.js", true],
    ["gateway", "gateway/dist/main.js", true],
    ["agent", "agent-daemonset/dist/main.js", false],
  ])("builds the %s image from a pinned Node 24 base with its entry point", (component, entry, nonRoot) => {
    const file = join(repoRoot, "docker", `${component}.Dockerfile`);
    expect(existsSync(file)).toBe(true);
    const text = readFileSync(file, "utf8");
    expect(text).toMatch(/^ARG NODE_IMAGE=node:24\.\d+\.\d+-bookworm-slim$/m);
    // Multi-stage: build, production dependencies, runtime.
    expect(text.match(/^FROM /gm)).toHaveLength(3);
    expect(text).toContain(`ENTRYPOINT ["node", "${entry}"]`);
    expect(text).toContain("--omit=dev");
    if (nonRoot) expect(text).toMatch(/^USER 65532:65532$/m);
    else expect(text).toMatch(/^USER 0:0$/m);
  });
});
