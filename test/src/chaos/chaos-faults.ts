import { randomInt } from "node:crypto";
import type { ChaosStack } from "./chaos-stack.js";

/** The kinds of fault the suite injects. */
export type FaultKind = "worker-kill" | "agent-kill" | "agent-term" | "containerd-kill" | "gateway-kill";

/** One fault: injected when call number `at` is about to start. */
export interface Fault {
  kind: FaultKind;
  at: number;
  /** ms since the load started, when the signal was sent. */
  injectedAt?: number;
  /** ms since the load started, when the restarted component was ready again (kills of workers: = injectedAt). */
  recoveredAt?: number;
  /** What was done, e.g. "SIGKILL 2 of 7 tasks (RUNNING, PAUSED)". */
  detail?: string;
  /** Set when the injection or the restart failed. */
  error?: string;
}

/** How many faults of each kind a run injects. */
export interface FaultCounts {
  workerKillBursts: number;
  /** Most workers SIGKILLed per burst (1 to this, at random). */
  workersPerBurst: number;
  /** Agent restarts; they alternate SIGKILL and SIGTERM, SIGKILL first. */
  agentRestarts: number;
  containerdRestarts: number;
  gatewayRestarts: number;
}

/**
 * A schedule of faults over `invocations` calls: component restarts spread
 * evenly over 15–85 % of the run in a fixed order (agent, containerd, agent,
 * gateway, …), worker kill bursts at random points in 5–95 %.
 */
export function faultSchedule(invocations: number, counts: FaultCounts): Fault[] {
  const restarts: FaultKind[] = [];
  const pending = {
    agent: counts.agentRestarts,
    containerd: counts.containerdRestarts,
    gateway: counts.gatewayRestarts,
  };
  let agentKills = 0;
  while (pending.agent + pending.containerd + pending.gateway > 0) {
    if (pending.agent > 0) {
      restarts.push(agentKills++ % 2 === 0 ? "agent-kill" : "agent-term");
      pending.agent--;
    }
    if (pending.containerd > 0) {
      restarts.push("containerd-kill");
      pending.containerd--;
    }
    if (pending.gateway > 0) {
      restarts.push("gateway-kill");
      pending.gateway--;
    }
  }
  const faults: Fault[] = restarts.map((kind, i) => ({
    kind,
    at: Math.floor(invocations * (0.15 + (0.7 * (i + 0.5)) / restarts.length)),
  }));
  for (let i = 0; i < counts.workerKillBursts; i++) {
    faults.push({
      kind: "worker-kill",
      at: randomInt(Math.floor(invocations * 0.05), Math.ceil(invocations * 0.95)),
    });
  }
  return faults.sort((a, b) => a.at - b.at);
}

/**
 * Injects a schedule of faults into a running stack while the load runs. The
 * load asks {@link gate} before each call: a call past a fault's point waits
 * until that fault was injected, so every fault hits a run in progress
 * whatever the machine's speed. Faults run one after the other; a restarted
 * component must be ready before the next fault is injected.
 */
export class FaultInjector {
  private readonly injected: Promise<void>[];
  private readonly open: (() => void)[] = [];

  constructor(
    private readonly stack: ChaosStack,
    readonly faults: Fault[],
    private readonly clock: () => number,
    private readonly counts: FaultCounts,
    private readonly progress: (line: string) => void,
  ) {
    this.injected = faults.map((f, i) => new Promise<void>((resolve) => (this.open[i] = resolve)));
  }

  /** Resolves when call `index` may start. */
  async gate(index: number): Promise<void> {
    for (let i = 0; i < this.faults.length && this.faults[i].at <= index; i++) await this.injected[i];
  }

  /** Injects every fault when the load reaches it; `issued` tells how many calls have started. */
  async run(issued: () => number): Promise<void> {
    for (const [i, fault] of this.faults.entries()) {
      while (issued() < fault.at) await sleep(10);
      fault.injectedAt = this.clock();
      try {
        await this.inject(fault, () => this.open[i]());
        fault.recoveredAt = this.clock();
      } catch (err) {
        fault.error = (err as Error).message;
        this.progress(`fault ${fault.kind} at call ${fault.at} FAILED: ${fault.error}`);
      } finally {
        this.open[i]();
      }
      if (fault.kind !== "worker-kill") {
        this.progress(
          `${fault.kind} at call ${fault.at}: ${fault.detail ?? ""}${fault.recoveredAt !== undefined ? `, back in ${Math.round(fault.recoveredAt - fault.injectedAt)} ms` : ""}`,
        );
      }
    }
  }

  /** Does the fault; calls `injected` right after the signal was sent, then waits for the restart. */
  private async inject(fault: Fault, injected: () => void): Promise<void> {
    const s = this.stack;
    switch (fault.kind) {
      case "worker-kill": {
        // A STOPPED task has no process left to kill.
        const tasks = [...(await s.tasks()).values()].filter((t) => t.pid > 0 && t.status !== "STOPPED");
        const n = Math.min(tasks.length, randomInt(1, this.counts.workersPerBurst + 1));
        const victims: string[] = [];
        for (let k = 0; k < n; k++) {
          const [t] = tasks.splice(randomInt(0, tasks.length), 1);
          try {
            process.kill(t.pid, "SIGKILL");
            victims.push(t.status);
          } catch {
            // exited meanwhile
          }
        }
        fault.detail = `SIGKILL ${victims.length} of ${victims.length + tasks.length} tasks (${victims.join(", ")})`;
        injected();
        return;
      }
      case "agent-kill":
      case "agent-term": {
        const signal = fault.kind === "agent-kill" ? "SIGKILL" : "SIGTERM";
        const stopped = s.agent.kill(signal);
        injected();
        const { ms, escalated } = await stopped;
        fault.detail = `agent ${signal}: ${escalated ? `still running after ${ms} ms, SIGKILLed` : `exited after ${ms} ms`}`;
        await s.agent.start();
        return;
      }
      case "containerd-kill": {
        const stopped = s.containerd.kill("SIGKILL");
        injected();
        fault.detail = `containerd SIGKILL: exited after ${(await stopped).ms} ms`;
        await s.containerd.start();
        return;
      }
      case "gateway-kill": {
        const stopped = s.gateway.kill("SIGKILL");
        injected();
        fault.detail = `gateway SIGKILL: exited after ${(await stopped).ms} ms`;
        await s.gateway.start();
        return;
      }
    }
  }
}

/** [from, to] ms windows in which the gateway was down (killed, not yet ready again). */
export function gatewayOutages(faults: readonly Fault[], end: number): [number, number][] {
  return faults
    .filter((f) => f.kind === "gateway-kill" && f.injectedAt !== undefined)
    .map((f) => [f.injectedAt!, f.recoveredAt ?? end]);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
