// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect } from "@jest/globals";
import { DEFAULT_WORKER_USER, workerUser } from "./worker-user.js";

describe("workerUser", () => {
  it("runs an image without a User as the sandbox user 993:990", () => {
    expect(DEFAULT_WORKER_USER).toEqual({ uid: 993, gid: 990 });
    expect(workerUser("")).toEqual({ uid: 993, gid: 990 });
    expect(workerUser("  ")).toEqual({ uid: 993, gid: 990 });
  });

  it("keeps an explicit numeric user, root included", () => {
    expect(workerUser("1000")).toEqual({ uid: 1000, gid: 1000 });
    expect(workerUser("1000:50")).toEqual({ uid: 1000, gid: 50 });
    expect(workerUser("0")).toEqual({ uid: 0, gid: 0 });
  });

  it("rejects user names", () => {
    expect(() => workerUser("sbx_user1051")).toThrow(/not numeric/);
    expect(() => workerUser("root")).toThrow(/not numeric/);
  });
});
