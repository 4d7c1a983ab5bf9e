// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect } from "@jest/globals";
import type { LambdaFunction } from "./lambda-function.js";
import { RouteTable } from "./route-table.js";

function fn(
  name: string,
  routes: { path: string; methods?: string[] }[],
  namespace = "default",
  creationTimestamp?: string,
): LambdaFunction {
  return {
    apiVersion: "esb.dev/v1alpha1",
    kind: "LambdaFunction",
    metadata: { name, namespace, creationTimestamp },
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

  it("reports conflicts deterministically: without creation times, the first by namespace/name serves", () => {
    const t = new RouteTable([fn("zeta", [{ path: "/a/{x}" }]), fn("alpha", [{ path: "/a/{y}" }])]);
    expect(t.match("GET", "/a/1")?.route.function.name).toBe("alpha");
    expect(t.conflicts).toEqual([
      {
        routeKey: "ANY /a/{x}",
        function: { namespace: "default", name: "zeta" },
        reason: "RouteConflict",
        servedBy: { namespace: "default", name: "alpha" },
      },
    ]);
    expect(t.refusalsOf({ namespace: "default", name: "alpha" })).toEqual([]);
  });

  it("keeps a path with the function that had it first: a newer function cannot take it by its name", () => {
    const owner = fn("orders", [{ path: "/orders" }], "shop", "2026-01-01T00:00:00Z");
    const intruder = fn("aaa", [{ path: "/orders" }], "aaa", "2026-06-01T00:00:00Z");
    const t = new RouteTable([intruder, owner]);
    expect(t.match("GET", "/orders")?.route.function).toEqual({ namespace: "shop", name: "orders" });
    expect(t.refusalsOf({ namespace: "aaa", name: "aaa" })).toEqual([
      {
        routeKey: "ANY /orders",
        function: { namespace: "aaa", name: "aaa" },
        reason: "RouteConflict",
        servedBy: { namespace: "shop", name: "orders" },
      },
    ]);
  });

  it("serves only the routes of the namespaces it is given", () => {
    const shop = fn("orders", [{ path: "/orders" }], "shop");
    const other = fn("admin", [{ path: "/admin" }, { path: "/orders/{id}", methods: ["GET"] }], "team-b");
    const t = new RouteTable([shop, other], { namespaces: ["shop"] });
    expect(t.match("GET", "/admin")).toBeUndefined();
    expect(t.match("GET", "/orders/1")).toBeUndefined();
    expect(t.match("POST", "/orders")?.route.function.name).toBe("orders");
    expect(t.refusalsOf({ namespace: "team-b", name: "admin" }).map((r) => [r.routeKey, r.reason])).toEqual([
      ["ANY /admin", "NamespaceNotServed"],
      ["GET /orders/{id}", "NamespaceNotServed"],
    ]);
    expect(t.conflicts).toEqual([]);
    expect(
      new RouteTable([shop, other], { namespaces: "*" }).match("GET", "/admin")?.route.function.name,
    ).toBe("admin");
  });

  it("does not match a greedy route without a remainder", () => {
    const t = new RouteTable([fn("f", [{ path: "/files/{proxy+}" }])]);
    expect(t.match("GET", "/files")).toBeUndefined();
    expect(t.match("GET", "/files/a")?.pathParameters).toEqual({ proxy: "a" });
  });
});
