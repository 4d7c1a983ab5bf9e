// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect } from "@jest/globals";
import { parseImageReference } from "./image-reference.js";

describe("parseImageReference", () => {
  it("reads registry, repository, tag and digest", () => {
    expect(parseImageReference("127.0.0.1:5000/fn/hello:1")).toMatchObject({
      registry: "127.0.0.1:5000",
      repository: "fn/hello",
      tag: "1",
      name: "127.0.0.1:5000/fn/hello:1",
    });
    const d = `sha256:${"a".repeat(64)}`;
    expect(parseImageReference(`localhost/x@${d}`)).toMatchObject({
      registry: "localhost",
      repository: "x",
      digest: d,
    });
    expect(parseImageReference(`reg.example.com:443/a/b:t@${d}`)).toMatchObject({ tag: "t", digest: d });
  });

  it("defaults to Docker Hub, library/ and :latest", () => {
    expect(parseImageReference("busybox")).toMatchObject({
      registry: "docker.io",
      repository: "library/busybox",
      tag: "latest",
      name: "docker.io/library/busybox:latest",
    });
    expect(parseImageReference("public.ecr.aws/lambda/nodejs:20").registry).toBe("public.ecr.aws");
    expect(parseImageReference("user/app").repository).toBe("user/app");
  });

  it("rejects malformed references", () => {
    expect(() => parseImageReference("")).toThrow(/invalid image reference/);
    expect(() => parseImageReference("Upper/Case")).toThrow(/invalid image reference/);
    expect(() => parseImageReference("a b")).toThrow(/invalid image reference/);
  });
});
