import type { NodeAgent } from "@esb/agent/node-agent";
import { SANDBOX_ID_PREFIX } from "@esb/agent/pool/sandbox-pool";
import type { AcquiredWorker } from "@esb/agent/pool/worker-pool";
import { BENCH_NAMESPACE } from "./bench-environment.js";
import type { ColdStartBreakdown, ColdStartSample } from "./cold-start-breakdown.js";
import { postFirstByte } from "./worker-http.js";

/** Holder id of every lease the bench takes directly from the agent. */
export const BENCH_HOLDER = "esb-bench";

/** Progress line on stderr every `every` samples. */
export function progress(label: string, i: number, n: number, every = 25): void {
  if ((i + 1) % every === 0 || i + 1 === n) process.stderr.write(`  ${label}: ${i + 1}/${n}\n`);
}

/** Cold-started workers kept alive before they are removed together (removal is untimed, and slow one by one). */
const COLD_BATCH = 10;

/**
 * Cold starts: `warmup + n` times, a NEW worker (acquire on a pool with no
 * free worker → container + task + network namespace + runtime init) until
 * the first byte of its first response. Workers are held (busy, so the next
 * acquire must start another) and removed in batches of {@link COLD_BATCH}
 * between samples, outside the timed part. Returns the n timed samples in ms;
 * with `breakdown`, each timed sample's parts are pushed to `parts`. With
 * `fromSandbox`, the agent's sandbox pool is filled before each sample (untimed)
 * and every timed worker must come from a generic sandbox; without, none may.
 */
export async function measureColdStarts(
  agent: NodeAgent,
  name: string,
  n: number,
  warmup: number,
  label: string,
  breakdown?: { of: ColdStartBreakdown; parts: ColdStartSample[] },
  fromSandbox = false,
): Promise<number[]> {
  const ref = { namespace: BENCH_NAMESPACE, name };
  const samples: number[] = [];
  let held: AcquiredWorker[] = [];
  // "worker-failed" makes the pool delete the worker (awaited).
  const removeHeld = async () => {
    await Promise.all(held.map((w) => agent.release(w.workerId, w.leaseId, "worker-failed")));
    held = [];
  };
  try {
    for (let i = 0; i < warmup + n; i++) {
      if (fromSandbox && !(await agent.sandboxes!.filled(60_000)))
        throw new Error(`${label}: the sandbox pool did not fill within 60 s`);
      const t0 = performance.now();
      const w = await agent.acquire(ref, { holderId: BENCH_HOLDER, leaseMs: 300_000 });
      const acquireMs = performance.now() - t0;
      held.push(w);
      if (w.startKind !== "cold") throw new Error(`${label}: expected a cold start, got ${w.startKind}`);
      if (w.workerId.startsWith(SANDBOX_ID_PREFIX) !== fromSandbox)
        throw new Error(`${label}: worker ${w.workerId} ${fromSandbox ? "is not" : "is"} from a sandbox`);
      const { ms } = await postFirstByte(w.address, t0, { waitListening: true });
      if (i >= warmup) {
        samples.push(ms);
        breakdown?.parts.push({
          workerId: w.workerId,
          totalMs: ms,
          acquireMs,
          phases: breakdown.of.phasesOf(w.workerId),
          fromSandbox,
        });
        progress(label, i - warmup, n);
      }
      if (held.length >= COLD_BATCH) await removeHeld();
    }
  } finally {
    await removeHeld();
  }
  return samples;
}

/**
 * Thaws: one worker is kept; each sample releases it, waits until the pool
 * has paused it (cgroup freezer), then times acquire (thaw: runtime resume)
 * + POST on a new connection until the first response byte.
 */
export async function measureThaws(
  agent: NodeAgent,
  name: string,
  n: number,
  warmup: number,
  label: string,
): Promise<number[]> {
  const ref = { namespace: BENCH_NAMESPACE, name };
  const samples: number[] = [];
  let w = await agent.acquire(ref, { holderId: BENCH_HOLDER, leaseMs: 120_000 });
  await postFirstByte(w.address, performance.now(), { waitListening: true });
  try {
    for (let i = 0; i < warmup + n; i++) {
      await agent.release(w.workerId, w.leaseId, "success");
      await waitForState(agent, name, w.workerId, "paused", 30_000);
      // The pool marks the worker paused before the runtime's pause call returns: wait for the runtime too.
      await waitForRuntimePaused(agent, w.workerId, 30_000);
      const t0 = performance.now();
      w = await agent.acquire(ref, { holderId: BENCH_HOLDER, leaseMs: 120_000 });
      if (w.startKind !== "thawed") throw new Error(`${label}: expected a thawed worker, got ${w.startKind}`);
      const { ms } = await postFirstByte(w.address, t0);
      if (i >= warmup) {
        samples.push(ms);
        progress(label, i - warmup, n);
      }
    }
  } finally {
    await agent.release(w.workerId, w.leaseId, "worker-failed").catch(() => undefined);
  }
  return samples;
}

/** Polls the agent until worker `id` of function `name` is in `state`. */
export async function waitForState(
  agent: NodeAgent,
  name: string,
  id: string,
  state: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const w = agent.listWorkers({ namespace: BENCH_NAMESPACE, name }).find((x) => x.workerId === id);
    if (w?.state === state) return;
    if (Date.now() > deadline)
      throw new Error(`worker ${id} did not become ${state} within ${timeoutMs} ms (is ${w?.state})`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Polls the runtime until the worker's task is paused (frozen). */
export async function waitForRuntimePaused(agent: NodeAgent, id: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await agent.runtime.workerStatus(id)) !== "paused") {
    if (Date.now() > deadline)
      throw new Error(`worker ${id} was not paused by the runtime within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
