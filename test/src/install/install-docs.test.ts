// @esb-test unit: needs no test environment (`make test-unit` runs it).
// What users of docs/kubernetes.md rely on and no other test runs: its values
// table matches values.schema.json, every `make` target it names exists, and the
// kind configuration (kind needs Docker, which this machine lacks) maps the
// ingress ports to an ingress-ready node. The local-cluster path of the same
// document runs for real in test/src/cluster.
import { describe, it, expect } from "@jest/globals";
import { readFileSync } from "node:fs";
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
      expect.arrayContaining([
        "cluster-up",
        "images",
        "deploy",
        "cluster-down",
        "kind-up",
        "kind-load",
        "kind-deploy",
        "kind-down",
      ]),
    );
    const defined = makeTargets();
    expect([...named].filter((t) => !defined.has(t))).toEqual([]);
  });

  it("configures kind with ingress ports and an ingress-ready node", () => {
    const config = parse(readFileSync(join(repoRoot, "kind-config.yaml"), "utf8")) as {
      kind: string;
      nodes: {
        role: string;
        labels?: Record<string, string>;
        extraPortMappings?: { containerPort: number; hostPort: number }[];
      }[];
    };
    expect(config.kind).toBe("Cluster");
    const ingressNode = config.nodes.find((n) => n.labels?.["ingress-ready"] === "true");
    expect(ingressNode?.extraPortMappings?.map((p) => [p.containerPort, p.hostPort])).toEqual([
      [80, 80],
      [443, 443],
    ]);
  });
});
