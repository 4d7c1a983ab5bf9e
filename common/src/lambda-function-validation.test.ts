// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect } from "@jest/globals";
import {
  LAMBDA_FUNCTION_MESSAGES as M,
  functionRevision,
  toAgentFunctionSpec,
  validateLambdaFunction,
} from "./lambda-function-validation.js";
import type { LambdaFunction } from "./lambda-function.js";

function manifest(spec: Record<string, unknown>, name = "hello"): Record<string, unknown> {
  return { apiVersion: "esb.dev/v1alpha1", kind: "LambdaFunction", metadata: { name }, spec };
}

const nodeSpec = {
  runtime: "nodejs22.x",
  handler: "index.handler",
  code: { inline: { "index.mjs": "export const handler = async () => 1;" } },
};

function errorsOf(spec: Record<string, unknown>): string[] {
  const r = validateLambdaFunction(manifest(spec));
  if (r.ok) throw new Error("expected validation errors");
  return r.errors;
}

describe("validateLambdaFunction", () => {
  it("accepts a managed-runtime function and applies the CRD defaults", () => {
    const r = validateLambdaFunction(manifest(nodeSpec));
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.fn.metadata.namespace).toBe("default");
    expect(r.fn.spec).toMatchObject({
      memorySize: 128,
      timeout: 3,
      ephemeralStorage: 512,
      scaling: { pauseAfterMs: 50, keepWarmSeconds: 600 },
    });
    expect(r.fn.spec.http).toBeUndefined();
  });

  it("accepts an image function with routes and defaults the payload format", () => {
    const r = validateLambdaFunction(
      manifest({
        image: "localhost:5000/fn:1",
        memorySize: 256,
        http: { routes: [{ path: "/items/{id}", methods: ["GET"] }, { path: "/{proxy+}" }, { path: "/" }] },
      }),
    );
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.fn.spec.http?.payloadFormat).toBe("2.0");
  });

  it("rejects a spec with neither image nor runtime", () => {
    expect(errorsOf({ memorySize: 128 })).toContain(M.imageOrRuntime);
  });

  it("rejects image combined with runtime fields", () => {
    expect(errorsOf({ image: "x", ...nodeSpec })).toContain(M.imageExclusive);
  });

  it("requires code with a runtime and a handler with a Node.js runtime", () => {
    expect(errorsOf({ runtime: "nodejs24.x", handler: "index.handler" })).toContain(M.codeRequired);
    expect(errorsOf({ runtime: "nodejs24.x", code: { inline: { "index.mjs": "" } } })).toContain(
      M.handlerRequired,
    );
    expect(validateLambdaFunction(manifest({ runtime: "provided", code: { path: "/srv/fn" } })).ok).toBe(
      true,
    );
  });

  it("accepts the Python runtimes and requires their handler", () => {
    for (const runtime of ["python3.13", "python3.11"]) {
      const code = { inline: { "app.py": "def handler(event, context):\n    return event\n" } };
      expect(errorsOf({ runtime, code })).toContain(M.handlerRequired);
      expect(validateLambdaFunction(manifest({ runtime, handler: "app.handler", code })).ok).toBe(true);
    }
    expect(errorsOf({ runtime: "python3.12", handler: "app.handler" }).join("\n")).toMatch(
      /supported values: .*"python3.13", "python3.11"/,
    );
  });

  it("requires exactly one code source", () => {
    expect(errorsOf({ runtime: "provided", code: {} })).toContain(M.codeExactlyOne);
    expect(errorsOf({ runtime: "provided", code: { path: "/a", inline: { a: "b" } } })).toContain(
      M.codeExactlyOne,
    );
  });

  it("rejects provisioned concurrency above reserved concurrency", () => {
    expect(errorsOf({ ...nodeSpec, reservedConcurrency: 1, provisionedConcurrency: 2 })).toContain(
      M.provisionedOverReserved,
    );
  });

  it("rejects out-of-range numbers and unknown enums", () => {
    const errors = errorsOf({
      ...nodeSpec,
      memorySize: 64,
      timeout: 901,
      runtime: "python3.12",
      reservedConcurrency: -1,
    });
    expect(errors).toEqual(
      expect.arrayContaining([
        "spec.memorySize must be between 128 and 10240 (got 64)",
        "spec.timeout must be between 1 and 900 (got 901)",
        "spec.reservedConcurrency must be >= 0 (got -1)",
        expect.stringContaining('spec.runtime: Unsupported value: "python3.12"'),
      ]),
    );
  });

  it("rejects bad and reserved environment variable names", () => {
    expect(errorsOf({ ...nodeSpec, environment: { variables: { "1BAD": "x" } } })).toContain(M.envName);
    expect(
      errorsOf({ ...nodeSpec, environment: { variables: { AWS_LAMBDA_FUNCTION_NAME: "x" } } }),
    ).toContain(M.envReserved);
    expect(errorsOf({ ...nodeSpec, environment: { variables: { _HANDLER: "x" } } })).toContain(M.envReserved);
  });

  it("rejects malformed route paths", () => {
    expect(errorsOf({ image: "x", http: { routes: [{ path: "items" }] } })).toEqual([
      `spec.http.routes[0].path: ${M.routeSlash}`,
      `spec.http.routes[0].path: ${M.routeForm}`,
    ]);
    expect(errorsOf({ image: "x", http: { routes: [{ path: "/a//b" }] } })).toEqual([
      `spec.http.routes[0].path: ${M.routeForm}`,
    ]);
    expect(errorsOf({ image: "x", http: { routes: [{ path: "/{proxy+}/x" }] } })).toEqual([
      `spec.http.routes[0].path: ${M.routeForm}`,
    ]);
  });

  it("rejects unsafe inline file names", () => {
    expect(errorsOf({ runtime: "provided", code: { inline: { "../etc/passwd": "x" } } })).toContain(
      M.inlineFileName,
    );
  });

  it("reports bad metadata and non-objects without throwing", () => {
    expect(validateLambdaFunction("nope")).toEqual({ ok: false, errors: ["manifest must be an object"] });
    const r = validateLambdaFunction({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "Bad_Name" },
      spec: nodeSpec,
    });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.errors).toHaveLength(3);
  });
});

describe("functionRevision", () => {
  it("is stable across key order and explicit defaults", () => {
    const a = functionRevision({
      runtime: "nodejs22.x",
      handler: "index.handler",
      code: { inline: { a: "1", b: "2" } },
    });
    const b = functionRevision({
      code: { inline: { b: "2", a: "1" } },
      handler: "index.handler",
      runtime: "nodejs22.x",
      memorySize: 128,
      timeout: 3,
    });
    expect(a).toBe(b);
    expect(a).toMatch(/^[0-9a-f]{16}$/);
  });

  it("changes with runnable fields and code content, not with concurrency or routes", () => {
    const base = { image: "x:1" };
    const r = functionRevision(base);
    expect(functionRevision({ ...base, memorySize: 256 })).not.toBe(r);
    expect(functionRevision({ ...base, environment: { variables: { A: "1" } } })).not.toBe(r);
    expect(functionRevision({ ...base, provisionedConcurrency: 3, http: { routes: [{ path: "/" }] } })).toBe(
      r,
    );
    const cm = { runtime: "provided" as const, code: { configMap: { name: "c" } } };
    expect(functionRevision(cm, { files: { bootstrap: "a" } })).not.toBe(
      functionRevision(cm, { files: { bootstrap: "b" } }),
    );
  });
});

describe("toAgentFunctionSpec", () => {
  it("builds the agent FunctionSpec with defaults, code bytes and per-agent provisioned count", () => {
    const fn: LambdaFunction = {
      apiVersion: "esb.dev/v1alpha1",
      kind: "LambdaFunction",
      metadata: { name: "hello", namespace: "ns", generation: 4 },
      spec: {
        ...nodeSpec,
        runtime: "nodejs22.x",
        reservedConcurrency: 5,
        provisionedConcurrency: 4,
        environment: { variables: { A: "1" } },
      },
    };
    const spec = toAgentFunctionSpec(fn, { files: { "index.mjs": "x" } }, { provisionedConcurrency: 2 });
    expect(spec.ref).toMatchObject({ namespace: "ns", name: "hello" });
    expect(spec.generation).toBe(4n);
    expect(spec.revision).toBe(functionRevision(fn.spec, { files: { "index.mjs": "x" } }));
    expect(spec.memorySizeMb).toBe(128);
    expect(spec.timeoutSeconds).toBe(3);
    expect(spec.reservedConcurrency).toBe(5);
    expect(spec.provisionedConcurrency).toBe(2);
    expect(spec.environment).toEqual({ A: "1" });
    expect(new TextDecoder().decode(spec.code?.files["index.mjs"])).toBe("x");
    expect(spec.scaling).toMatchObject({ pauseAfterMs: 50, keepWarmSeconds: 600 });
  });
});
