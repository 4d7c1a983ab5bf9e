// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect } from "@jest/globals";
import { StartLimiter } from "./start-limiter.js";

describe("StartLimiter", () => {
  it("runs at most `limit` starts at once, the rest in arrival order", async () => {
    const limiter = new StartLimiter(2);
    const releases: (() => void)[] = [];
    const started: number[] = [];
    const done: Promise<number>[] = [];
    for (let i = 0; i < 5; i++) {
      done.push(
        limiter.run(async () => {
          started.push(i);
          await new Promise<void>((resolve) => releases.push(resolve));
          return i;
        }),
      );
    }
    await new Promise((r) => setImmediate(r));
    expect(started).toEqual([0, 1]);
    expect(limiter.running).toBe(2);
    expect(limiter.queued).toBe(3);
    releases[1]();
    await new Promise((r) => setImmediate(r));
    expect(started).toEqual([0, 1, 2]);
    releases[0]();
    releases[2]();
    await new Promise((r) => setImmediate(r));
    expect(started).toEqual([0, 1, 2, 3, 4]);
    releases[3]();
    releases[4]();
    expect(await Promise.all(done)).toEqual([0, 1, 2, 3, 4]);
    expect(limiter.running).toBe(0);
    expect(limiter.queued).toBe(0);
  });

  it("frees the slot when a start fails", async () => {
    const limiter = new StartLimiter(1);
    await expect(limiter.run(async () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    expect(await limiter.run(async () => "next")).toBe("next");
    expect(limiter.running).toBe(0);
  });

  it("refuses a limit below 1", () => {
    expect(() => new StartLimiter(0)).toThrow("start limit must be a whole number ≥ 1 (got 0)");
  });
});
