import { describe, it, expect } from "@jest/globals";
import type { LambdaFunction } from "@esb/common";
import { RouteTable } from "./route-table.js";
import { resolveFunctionName } from "./function-name.js";
import { LambdaApiError } from "./lambda-api-error.js";

function fn(
  name: string,
  routes: { path: string; methods?: string[] }[],
  namespace = "default",
): LambdaFunction {
  return {
    apiVersion: "esb.dev/v1alpha1",
    kind: "LambdaFunction",
    metadata: { name, namespace },
    spec: { http: { routes } },
  };
}

describe("RouteTable", () => {
  const table = new RouteTable([
    fn("b-params", [{ path: "/items/{id}", methods: ["GET"] }, { path: "/{proxy+}" }]),
    fn("a-static", [{ path: "/items/special" }, { path: "/" }]),
  ]);

  it("prefers literal segments over parameters and greedy last", () => {
    expect(table.match("GET", "/items/special")?.route.function.name).toBe("a-static");
    expect(table.match("GET", "/items/7")?.pathParameters).toEqual({ id: "7" });
    expect(table.match("POST", "/items/7")?.route.routeKey).toBe("ANY /{proxy+}");
    expect(table.match("GET", "/x/y%20z")?.pathParameters).toEqual({ proxy: "x/y z" });
    expect(table.match("GET", "/")?.route.function.name).toBe("a-static");
  });

  it("reports conflicts deterministically: the first by namespace/name serves", () => {
    const t = new RouteTable([fn("zeta", [{ path: "/a/{x}" }]), fn("alpha", [{ path: "/a/{y}" }])]);
    expect(t.match("GET", "/a/1")?.route.function.name).toBe("alpha");
    expect(t.conflicts).toEqual([
      {
        routeKey: "ANY /a/{x}",
        servedBy: { namespace: "default", name: "alpha" },
        shadowed: { namespace: "default", name: "zeta" },
      },
    ]);
  });

  it("does not match a greedy route without a remainder", () => {
    const t = new RouteTable([fn("f", [{ path: "/files/{proxy+}" }])]);
    expect(t.match("GET", "/files")).toBeUndefined();
    expect(t.match("GET", "/files/a")?.pathParameters).toEqual({ proxy: "a" });
  });
});

describe("resolveFunctionName", () => {
  it("resolves names, ARNs, partial ARNs and namespace/name", () => {
    expect(resolveFunctionName("f", undefined, "default")).toEqual({ namespace: "default", name: "f" });
    expect(resolveFunctionName("arn:aws:lambda:eu-west-1:1:function:f:$LATEST", undefined, "ns")).toEqual({
      namespace: "ns",
      name: "f",
    });
    expect(resolveFunctionName("1:function:team/f", undefined, "ns")).toEqual({
      namespace: "team",
      name: "f",
    });
  });

  it("rejects other qualifiers and malformed names as ResourceNotFoundException", () => {
    for (const [name, q] of [
      ["f:prod", undefined],
      ["f", "1"],
      ["a/b/c", undefined],
      ["UPPER", undefined],
      ["arn:aws:s3:::x", undefined],
    ] as const) {
      let err: unknown;
      try {
        resolveFunctionName(name, q, "default");
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(LambdaApiError);
      expect((err as LambdaApiError).type).toBe("ResourceNotFoundException");
    }
  });
});
