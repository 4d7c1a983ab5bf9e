import { describe, expect, it } from "@jest/globals";
import { formatReport } from "./chaos-report.js";
import { checkChaosPrerequisites, QUICK_CHAOS, runChaos } from "./chaos-suite.js";

// The CI form of `make chaos` (docs/chaos.md): 600 calls at concurrency 20 while a
// burst of workers is SIGKILLed and the agent, containerd and the gateway are each
// killed and restarted once, all as real processes of their own. Figures are
// printed, never asserted; the checks are.
describe("chaos (CI form of make chaos)", () => {
  it("answers every caller correctly, runs every accepted Event and leaves the node clean", async () => {
    checkChaosPrerequisites();
    const lines: string[] = [];
    const report = await runChaos(QUICK_CHAOS, (line) => lines.push(line));
    process.stderr.write(`\n${formatReport(report)}\n\n`);
    const failed = report.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.value} ${c.detail ?? ""}`);
    if (failed.length > 0) process.stderr.write(`chaos progress:\n${lines.join("\n")}\n`);
    expect(failed).toEqual([]);
  }, 300_000);
});
