import { randomBytes } from "node:crypto";
import { createLogger, type Logger } from "@esb/common";
import type { Runtime, WorkerSpec } from "../runtime/runtime.js";
import type { StartLimiter } from "./start-limiter.js";

/** Every generic sandbox's id (= container id, then the id of the worker it becomes) starts with this. */
export const SANDBOX_ID_PREFIX = "esb-sandbox-";

/** What the sandboxes of one template are started from. */
export interface SandboxTemplate {
  /** Identifies sandboxes that can serve the same functions (runtime image, memory, /tmp, …). */
  key: string;
  /** The standby spec of a new sandbox with this id (`standby: true`, no function labels, no code). */
  spec(id: string): WorkerSpec;
}

/** Something that happened in the sandbox pool, for metrics. */
export type SandboxEvent =
  | { type: "taken"; template: string }
  | { type: "missed"; template: string }
  | { type: "started"; template: string; ok: boolean; durationMs: number }
  | { type: "removed"; template: string; reason: string };

/** Options of {@link SandboxPool}. */
export interface SandboxPoolOptions {
  /** A runtime with `specialiseWorker` (the containerd runtime). */
  runtime: Runtime;
  /** Ready sandboxes kept per template; 0 turns the pool off. */
  size: number;
  /** Templates kept at once; the least recently used one beyond it loses its sandboxes. Default 4. */
  maxTemplates?: number;
  /** The node's start limiter: a fill starts only when no worker start waits for a slot. */
  startLimiter?: StartLimiter;
  logger?: Logger;
  onEvent?: (e: SandboxEvent) => void;
  /** How long after a take the refill begins (off the taken sandbox's critical path). Default 50 ms. */
  refillDelayMs?: number;
}

interface Slot {
  template: SandboxTemplate;
  /** Started and waiting for a function. */
  ready: string[];
  starting: number;
  lastUsed: number;
}

/**
 * Generic sandboxes per template (see Runtime.specialiseWorker): up to `size`
 * started ahead of demand for each of the `maxTemplates` most recently used
 * templates, one start at a time for the whole node and only while no worker
 * start waits for the start limiter (sandboxes never delay a real cold start).
 * {@link take} hands one out at once or says there is none; the pool then refills.
 * A taken sandbox belongs to the caller (it becomes a function's worker and is never
 * handed out again). {@link close} removes every sandbox not taken.
 */
export class SandboxPool {
  private readonly runtime: Runtime;
  private size: number;
  private readonly maxTemplates: number;
  private readonly limiter: StartLimiter | undefined;
  private readonly log: Logger;
  private readonly onEvent: (e: SandboxEvent) => void;
  private readonly refillDelayMs: number;
  private readonly slots = new Map<string, Slot>();
  /** Every sandbox started and not taken (ready or starting), with its template. */
  private readonly owned = new Map<string, string>();
  private filling = false;
  private timer?: NodeJS.Timeout;
  private closed = false;

  constructor(opts: SandboxPoolOptions) {
    this.runtime = opts.runtime;
    this.size = Math.max(0, opts.size);
    this.maxTemplates = opts.maxTemplates ?? 4;
    this.limiter = opts.startLimiter;
    this.log = (opts.logger ?? createLogger("sandbox-pool")).child({ component: "sandbox-pool" });
    this.onEvent = opts.onEvent ?? (() => undefined);
    this.refillDelayMs = opts.refillDelayMs ?? 50;
    if (!opts.runtime.specialiseWorker)
      throw new Error(`runtime ${opts.runtime.name} cannot specialise sandboxes`);
  }

  /** Ready sandboxes kept per template. */
  get sizePerTemplate(): number {
    return this.size;
  }

  /** Makes `template` one the pool keeps sandboxes for (most recently used) and fills it. */
  ensure(template: SandboxTemplate): void {
    if (this.closed || this.size === 0) return;
    const slot = this.slots.get(template.key);
    if (slot) {
      slot.lastUsed = Date.now();
      slot.template = template;
    } else {
      this.slots.set(template.key, { template, ready: [], starting: 0, lastUsed: Date.now() });
      this.evictBeyondLimit();
    }
    this.scheduleFill(0);
  }

  /** A ready sandbox of `template` (now the caller's), or undefined when none is ready. */
  take(template: SandboxTemplate): string | undefined {
    this.ensure(template);
    const id = this.slots.get(template.key)?.ready.shift();
    if (id === undefined) {
      if (this.size > 0 && !this.closed) this.onEvent({ type: "missed", template: template.key });
      return undefined;
    }
    this.owned.delete(id);
    this.onEvent({ type: "taken", template: template.key });
    this.scheduleFill(this.refillDelayMs);
    return id;
  }

  /** Ids of the sandboxes not taken (the agent's resync must not take them for orphans). */
  ids(): string[] {
    return [...this.owned.keys()];
  }

  /** Ready and starting sandboxes per template key. */
  counts(): { template: string; ready: number; starting: number }[] {
    return [...this.slots.entries()].map(([template, s]) => ({
      template,
      ready: s.ready.length,
      starting: s.starting,
    }));
  }

  /** A sandbox's task exited (or vanished): it is dropped and replaced. False when it is not the pool's. */
  workerExited(id: string, reason: string): boolean {
    const key = this.owned.get(id);
    if (key === undefined) return false;
    this.owned.delete(id);
    const slot = this.slots.get(key);
    if (slot) slot.ready = slot.ready.filter((x) => x !== id);
    void this.removeSandbox(id, key, reason);
    this.scheduleFill(this.refillDelayMs);
    return true;
  }

  /** Drops the templates whose key is not in `keys` (no function uses them any more) and removes their sandboxes. */
  async retain(keys: ReadonlySet<string>): Promise<void> {
    const removals: Promise<void>[] = [];
    for (const [key, slot] of [...this.slots]) {
      if (keys.has(key)) continue;
      this.slots.delete(key);
      for (const id of slot.ready.splice(0)) {
        this.owned.delete(id);
        removals.push(this.removeSandbox(id, key, "no function uses its template"));
      }
    }
    await Promise.all(removals);
  }

  /** Changes the number kept per template (0: off, and every ready sandbox is removed). */
  async resize(size: number): Promise<void> {
    this.size = Math.max(0, size);
    const removals: Promise<void>[] = [];
    for (const [key, slot] of this.slots) {
      while (slot.ready.length > this.size) {
        const id = slot.ready.pop()!;
        this.owned.delete(id);
        removals.push(this.removeSandbox(id, key, "pool resized"));
      }
    }
    await Promise.all(removals);
    this.scheduleFill(0);
  }

  /** Resolves once every template has `size` ready sandboxes (or after `timeoutMs`; false then). */
  async filled(timeoutMs: number): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    while (Date.now() < until) {
      if ([...this.slots.values()].every((s) => s.ready.length >= this.size)) return true;
      await new Promise((r) => setTimeout(r, 20));
    }
    return false;
  }

  /** Stops filling and removes every sandbox not taken (agent shutdown: a next agent would not know them). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    // A start in progress is removed by the filler once it finishes (closed is set).
    const removals = [...this.slots.entries()].flatMap(([key, slot]) =>
      slot.ready.splice(0).map((id) => {
        this.owned.delete(id);
        return this.removeSandbox(id, key, "agent shutting down");
      }),
    );
    await Promise.all(removals);
    while (this.filling) await new Promise((r) => setTimeout(r, 10));
  }

  // ---- internals ----

  private evictBeyondLimit(): void {
    while (this.slots.size > this.maxTemplates) {
      const [oldest] = [...this.slots.entries()].sort((a, b) => a[1].lastUsed - b[1].lastUsed);
      this.slots.delete(oldest[0]);
      for (const id of oldest[1].ready) {
        this.owned.delete(id);
        void this.removeSandbox(id, oldest[0], "template no longer among the most recently used");
      }
    }
  }

  private scheduleFill(delayMs: number): void {
    if (this.closed || this.timer || this.filling) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.fill();
    }, delayMs);
    this.timer.unref();
  }

  /** Starts missing sandboxes one at a time, most recently used template first. */
  private async fill(): Promise<void> {
    if (this.filling || this.closed) return;
    this.filling = true;
    let retryMs: number | undefined;
    try {
      for (;;) {
        if (this.closed) return;
        const slot = [...this.slots.values()]
          .sort((a, b) => b.lastUsed - a.lastUsed)
          .find((s) => s.ready.length + s.starting < this.size);
        if (!slot) return;
        if (this.limiter && (this.limiter.queued > 0 || this.limiter.running >= this.limiter.limit)) {
          retryMs = 100; // worker starts come first: look again shortly
          return;
        }
        if (!(await this.startOne(slot))) {
          retryMs = 5_000; // a broken template must not become a tight loop
          return;
        }
      }
    } finally {
      this.filling = false;
      if (retryMs !== undefined) this.scheduleFill(retryMs);
    }
  }

  /** Starts one sandbox of `slot`; false when it failed. */
  private async startOne(slot: Slot): Promise<boolean> {
    const key = slot.template.key;
    const id = `${SANDBOX_ID_PREFIX}${randomBytes(5).toString("hex")}`;
    slot.starting++;
    this.owned.set(id, key);
    const t0 = Date.now();
    try {
      const spec = slot.template.spec(id);
      const start = () => this.runtime.startWorker(spec);
      await (this.limiter ? this.limiter.run(start) : start());
      this.onEvent({ type: "started", template: key, ok: true, durationMs: Date.now() - t0 });
      const wanted = slot.ready.length < this.size && this.slots.get(key) === slot;
      if (this.closed || !wanted || !this.owned.has(id)) {
        this.owned.delete(id);
        await this.removeSandbox(id, key, "no longer wanted");
      } else {
        slot.ready.push(id);
      }
      return true;
    } catch (err) {
      this.onEvent({ type: "started", template: key, ok: false, durationMs: Date.now() - t0 });
      this.owned.delete(id);
      this.log.warn({ sandbox: id, template: key, err: (err as Error).message }, "sandbox start failed");
      await this.removeSandbox(id, key, "start failed");
      return false;
    } finally {
      slot.starting--;
    }
  }

  private async removeSandbox(id: string, template: string, reason: string): Promise<void> {
    this.onEvent({ type: "removed", template, reason });
    await this.runtime
      .removeWorker(id)
      .catch((err: unknown) =>
        this.log.warn({ sandbox: id, err: (err as Error).message }, "sandbox removal failed"),
      );
  }
}
