// Runs the tools the install tests need (helm, kubectl, repository scripts)
// and parses what they print. helm and kubectl are the ones the project builds
// from their Go modules into ~/.cache/esb/bin (make helm, make kube-apiserver).
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

/** Repository root (this file is test/dist/install/chart-tools.js once compiled). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
/** The Helm chart under test. */
export const chartDir = join(repoRoot, "charts", "esb");

/** What a finished command printed and how it ended. */
export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A Kubernetes object as rendered by helm (only the fields tests read are typed). */
export interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

/**
 * Path of a tool the project builds into ESB's cache (`~/.cache/esb/bin`, or
 * `$ESB_CACHE_DIR/bin`). Throws, naming the make target that builds it, when
 * it is missing: the install tests need the real tool.
 */
export function cachedTool(name: "helm" | "kubectl"): string {
  const bin = join(process.env.ESB_CACHE_DIR ?? join(homedir(), ".cache", "esb"), "bin", name);
  if (!existsSync(bin)) {
    const target =
      name === "helm" ? "make helm (hack/build-helm.sh)" : "make kube-apiserver (hack/build-kubernetes.sh)";
    throw new Error(`${name} is not built: ${bin} is missing; run ${target}`);
  }
  return bin;
}

/** Runs a program to completion; never throws for a non-zero exit (the caller checks `code`). */
export function run(
  program: string,
  args: string[],
  options: { input?: string; cwd?: string } = {},
): Promise<CommandResult> {
  return new Promise((done, fail) => {
    const child = spawn(program, args, { cwd: options.cwd ?? repoRoot, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.on("error", fail);
    child.on("close", (code, signal) => done({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
    // A program that exits without reading its input closes the pipe (EPIPE);
    // its exit status and output still say what happened.
    child.stdin.on("error", () => undefined);
    child.stdin.end(options.input ?? "");
  });
}

/** Runs helm with the given arguments from the repository root. */
export function helm(args: string[]): Promise<CommandResult> {
  return run(cachedTool("helm"), args);
}

/** Runs kubectl against the cluster of `kubeconfig`, with `input` on stdin. */
export function kubectl(kubeconfig: string, args: string[], input?: string): Promise<CommandResult> {
  return run(cachedTool("kubectl"), ["--kubeconfig", kubeconfig, ...args], { input });
}

/** Throws with the command's output unless it succeeded; returns stdout. */
export function expectSuccess(result: CommandResult, what: string): string {
  if (result.code !== 0) {
    throw new Error(`${what} failed (exit ${result.code}):\n${result.stderr}\n${result.stdout}`);
  }
  return result.stdout;
}

/** Options of one `helm template` rendering of the chart. */
export interface RenderOptions {
  release?: string;
  namespace?: string;
  /** `--set` assignments, e.g. `gateway.ingress.enabled=true`. */
  set?: string[];
}

/** `helm template` arguments for the chart with the given options. */
export function templateArgs(options: RenderOptions = {}): string[] {
  const args = [
    "template",
    options.release ?? "esb",
    chartDir,
    "--namespace",
    options.namespace ?? "esb-system",
  ];
  for (const assignment of options.set ?? []) args.push("--set", assignment);
  return args;
}

/** Renders the chart with `helm template`; throws with helm's message when rendering fails. */
export async function renderChart(
  options: RenderOptions = {},
): Promise<{ yaml: string; manifests: Manifest[] }> {
  const yaml = expectSuccess(await helm(templateArgs(options)), "helm template");
  return { yaml, manifests: parseManifests(yaml) };
}

/** Parses a multi-document YAML stream into its (non-empty) objects; throws on a YAML error. */
export function parseManifests(text: string): Manifest[] {
  const objects: Manifest[] = [];
  for (const document of parseAllDocuments(text)) {
    if (document.errors.length > 0)
      throw new Error(`invalid YAML from the chart: ${document.errors[0].message}`);
    const value = document.toJS() as Manifest | null;
    if (value) objects.push(value);
  }
  return objects;
}

/** The one object of that kind and name; throws listing what exists when it is absent. */
export function findManifest(manifests: Manifest[], kind: string, name: string): Manifest {
  const found = manifests.find((m) => m.kind === kind && m.metadata.name === name);
  if (!found) {
    const present = manifests.map((m) => `${m.kind}/${m.metadata.name}`).join(", ");
    throw new Error(`no ${kind}/${name} in the rendered chart; it has: ${present}`);
  }
  return found;
}

/** Serialises objects back into one YAML stream (for kubectl's stdin). */
export function toYamlStream(manifests: Manifest[]): string {
  return manifests.map((m) => JSON.stringify(m)).join("\n---\n") + "\n";
}

/** A name unique to this test process, usable as a Kubernetes name. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${process.pid.toString(36)}${Date.now().toString(36)}`.toLowerCase().slice(0, 40);
}

/**
 * Applies the chart's CRDs (charts/esb/crds) to the cluster for real and waits
 * until they are Established. Idempotent; never deletes them afterwards, since
 * other tests share the cluster-scoped CRD.
 */
export async function applyChartCrds(kubeconfig: string): Promise<void> {
  expectSuccess(
    await kubectl(kubeconfig, ["apply", "-f", join(chartDir, "crds")]),
    "kubectl apply (chart CRDs)",
  );
  expectSuccess(
    await kubectl(kubeconfig, [
      "wait",
      "--for=condition=Established",
      "--timeout=60s",
      "crd/lambdafunctions.esb.dev",
    ]),
    "kubectl wait (LambdaFunction CRD established)",
  );
}

/** Creates a namespace for one test file. */
export async function createNamespace(kubeconfig: string, name: string): Promise<void> {
  expectSuccess(await kubectl(kubeconfig, ["create", "namespace", name]), `kubectl create namespace ${name}`);
}

/** Deletes a namespace without waiting for its finalisation (the test apiserver has no namespace controller). */
export async function deleteNamespace(kubeconfig: string, name: string): Promise<void> {
  await kubectl(kubeconfig, ["delete", "namespace", name, "--ignore-not-found", "--wait=false"]);
}
