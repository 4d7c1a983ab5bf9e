// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, expect, it } from "@jest/globals";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { faultSchedule } from "./chaos-faults.js";
import { isClean, type Leftovers } from "./chaos-inventory.js";
import { ChaosLoad, type CallOutcome } from "./chaos-load.js";

// The chaos suite's checks must be able to fail: these feed its classifier
// answers a broken gateway could give (a stand-in HTTP server, not ESB) and its
// leftover check a dirty node, and expect each to be caught.

/** Runs `n` calls of ChaosLoad against a server answering with `answer` (call index → response). */
async function outcomes(
  n: number,
  answer: (i: number, req: IncomingMessage, res: ServerResponse) => void,
  hangMs = 5000,
): Promise<CallOutcome[]> {
  let i = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => answer(i++, req, res));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const load = new ChaosLoad({
    gatewayUrl: url,
    invocations: n,
    concurrency: 1,
    hangMs,
    failureBackoffMs: 0,
    gate: () => Promise.resolve(),
  });
  try {
    await load.run();
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
  return load.outcomes;
}

describe("chaos suite: call classification", () => {
  it("tells AWS-shaped errors from others, and catches a misrouted answer", async () => {
    // Calls go sync, event, sync, http: answer each with a different shape.
    const got = await outcomes(4, (i, _req, res) => {
      if (i === 0) {
        res.writeHead(429, {
          "x-amzn-errortype": "TooManyRequestsException",
          "content-type": "application/json",
        });
        res.end('{"Type":"User","message":"Rate exceeded"}');
      } else if (i === 1) {
        res.writeHead(500, { "content-type": "text/plain" }).end("upstream broke");
      } else if (i === 2) {
        res.writeHead(200, { "x-amz-function-error": "Unhandled" });
        res.end('{"errorType":"Runtime.ExitError","errorMessage":"exit status 137"}');
      } else {
        res.writeHead(200, { "content-type": "application/json" }).end('{"token":"somebody-else"}');
      }
    });
    expect(got.map((o) => [o.mode, o.kind, o.type, o.shaped])).toEqual([
      ["sync", "failure", "TooManyRequestsException", true],
      ["event", "failure", expect.stringMatching(/^500 /), false],
      ["sync", "failure", "Function:Runtime.ExitError", true],
      ["http", "misrouted", undefined, undefined],
    ]);
  });

  it("counts a route error without API Gateway's shape, and a call past the bound as hung", async () => {
    const got = await outcomes(
      4,
      (i, _req, res) => {
        if (i === 3) res.writeHead(404, { "content-type": "text/html" }).end("<h1>no</h1>");
        else if (i === 0)
          return; // never answered
        else res.writeHead(200).end('{"token":"x"}');
      },
      300,
    );
    expect(got[0].kind).toBe("hung");
    expect(got[2].kind).toBe("misrouted");
    expect([got[3].mode, got[3].kind, got[3].shaped]).toEqual(["http", "failure", false]);
  });

  it("reports a refused connection as a transport error", async () => {
    const load = new ChaosLoad({
      gatewayUrl: "http://127.0.0.1:9", // discard port: nothing listens on loopback
      invocations: 2,
      concurrency: 1,
      hangMs: 5000,
      failureBackoffMs: 0,
      gate: () => Promise.resolve(),
    });
    await load.run();
    expect(load.outcomes.map((o) => [o.kind, o.type])).toEqual([
      ["transport", "ECONNREFUSED"],
      ["transport", "ECONNREFUSED"],
    ]);
  });
});

describe("chaos suite: leftovers and fault schedule", () => {
  const clean: Leftovers = {
    poolSize: 4,
    notIdle: [],
    leases: [],
    orphanContainers: [],
    orphanTasks: [],
    lostWorkers: [],
    orphanNetns: [],
    orphanIps: [],
  };

  it("finds a node dirty when anything is left over or the pool is off its size", () => {
    expect(isClean(clean, 4)).toBe(true);
    expect(isClean({ ...clean, poolSize: 5 }, 4)).toBe(false);
    for (const key of [
      "notIdle",
      "leases",
      "orphanContainers",
      "orphanTasks",
      "lostWorkers",
      "orphanNetns",
      "orphanIps",
    ] as const) {
      expect(isClean({ ...clean, [key]: ["x"] }, 4)).toBe(false);
    }
  });

  it("schedules every requested fault inside the run, agent restarts alternating SIGKILL and SIGTERM", () => {
    const faults = faultSchedule(10_000, {
      workerKillBursts: 20,
      workersPerBurst: 3,
      agentRestarts: 2,
      containerdRestarts: 1,
      gatewayRestarts: 1,
    });
    const kinds = faults.map((f) => f.kind).filter((k) => k !== "worker-kill");
    expect(kinds).toEqual(["agent-kill", "containerd-kill", "gateway-kill", "agent-term"]);
    expect(faults.filter((f) => f.kind === "worker-kill")).toHaveLength(20);
    expect(faults.every((f) => f.at >= 500 && f.at < 9500)).toBe(true);
    expect(faults.map((f) => f.at)).toEqual([...faults.map((f) => f.at)].sort((a, b) => a - b));
  });
});
