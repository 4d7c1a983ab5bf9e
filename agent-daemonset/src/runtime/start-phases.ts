/**
 * Timings of the steps of one worker start, so that a cold start's time can be
 * attributed (bench rows `cold-start-phase-*`, the agent's
 * `esb_agent_worker_start_phase_seconds` histogram). Cheap enough to run on
 * every start: one `performance.now()` per step.
 */

/** One step of a worker start and how long it took, in start order. */
export interface StartPhase {
  /** e.g. `network`, `snapshot`, `task-create`, `task-start`, `ready` (invoke port listens). */
  name: string;
  ms: number;
}

/** Receives the phases of a finished worker start (`workerId` is the container id). */
export type StartPhaseListener = (workerId: string, phases: StartPhase[]) => void;

/** Measures consecutive steps: each {@link mark} closes the step that began at the previous mark. */
export class PhaseClock {
  private last = performance.now();
  readonly phases: StartPhase[] = [];

  /** Ends the current step under `name` and starts the next one. */
  mark(name: string): void {
    const now = performance.now();
    this.phases.push({ name, ms: now - this.last });
    this.last = now;
  }
}
