// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect } from "@jest/globals";
import { resolveFunctionName } from "./function-name.js";
import { LambdaApiError } from "./lambda-api-error.js";

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
