import type { StartPhase } from "@esb/agent/runtime/start-phases";
import type { WorkerLogLine } from "@esb/agent/runtime/runtime";
import { summarize, type LatencyRow } from "./bench-results.js";

/** What one cold start spent where, in ms (the agent's start steps, then the worker's). */
export interface ColdStartSample {
  workerId: string;
  /** From the acquire call to the first response byte. */
  totalMs: number;
  /** From the acquire call until it returned (container started and its invoke port listens). */
  acquireMs: number;
  /** The runtime's start steps (network, snapshot, task create/start, …). */
  phases: StartPhase[];
  /** The worker was a generic sandbox, started before the sample. */
  fromSandbox?: boolean;
}

/**
 * Collects the parts of each cold start: the runtime's start steps (through
 * `ContainerdRuntimeOptions.onStartPhases`) and the `Init Duration` of the
 * worker's first REPORT line (runtime client spawn → its first /next). Turns
 * them into `cold-start-phase-<label>-<step>` rows.
 */
export class ColdStartBreakdown {
  private readonly phases = new Map<string, StartPhase[]>();
  private readonly initMs = new Map<string, number>();

  /** Pass as `onStartPhases` of the bench's runtime. */
  onStartPhases = (workerId: string, phases: StartPhase[]): void => {
    this.phases.set(workerId, phases);
  };

  /** Pass to `runtime.onWorkerLog`: keeps each worker's first `Init Duration`. */
  onWorkerLog = (line: WorkerLogLine): void => {
    const m = /Init Duration: ([\d.]+) ms/.exec(line.line);
    if (m && !this.initMs.has(line.id)) this.initMs.set(line.id, Number(m[1]));
  };

  /** The runtime's start steps of worker `id` (once its start finished). */
  phasesOf(id: string): StartPhase[] {
    return this.phases.get(id) ?? [];
  }

  /**
   * Rows for `samples` (taken with {@link phasesOf}), named
   * `cold-start-phase-<label>-<step>`: each runtime step, `ready` (task started →
   * acquire returned: the emulator's boot until it listens, and the agent's polling
   * of the port), `first-byte` (acquire returned → first byte: the rest of the
   * runtime client's init and the invocation), and `init-duration` (REPORT's figure).
   */
  rows(label: string, samples: ColdStartSample[]): LatencyRow[] {
    const byName = new Map<string, number[]>();
    const add = (name: string, ms: number) => {
      const list = byName.get(name) ?? [];
      list.push(ms);
      byName.set(name, list);
    };
    for (const s of samples) {
      let agentMs = 0;
      for (const p of s.phases) {
        add(p.name, p.ms);
        agentMs += p.ms;
      }
      // A worker from a sandbox started before the sample: its acquire is the specialisation.
      // From a sandbox the runtime's steps are the specialisation's; the rest of the acquire is the port wait.
      if (s.phases.length > 0) add(s.fromSandbox ? "port-wait" : "ready", s.acquireMs - agentMs);
      add("first-byte", s.totalMs - s.acquireMs);
      const init = this.initMs.get(s.workerId);
      if (init !== undefined) add("init-duration", init);
    }
    return [...byName].map(([name, ms]) =>
      summarize(`cold-start-phase-${label}-${name}`, "ms", ms, { note: PHASE_NOTES[name] ?? "" }),
    );
  }
}

const PHASE_NOTES: Record<string, string> = {
  image: "look up the local image",
  network: "netns + CNI ADD + worker firewall",
  "host-resources": "/tmp folder + function cgroup",
  container: "Containers.Create (OCI spec)",
  snapshot: "rootfs snapshot prepare",
  "log-pipes": "stdout/stderr FIFOs",
  "task-create": "Tasks.Create (shim + runc create)",
  "task-start": "Tasks.Start (runc start)",
  ready: "task started -> acquire returned (emulator boot until :8080 listens, port polling)",
  "first-byte": "acquire returned -> first byte (runtime client init rest + invoke)",
  "init-duration": "REPORT Init Duration (runtime client spawn, or sandbox hand-over, -> first /next)",
  "specialise-mount": "code mounted at /var/task (read-only)",
  "specialise-env": "specialisation file written for the emulator",
  "port-wait": "specialised -> acquire returned (emulator reads its env, listens; port polling)",
};
