/**
 * Bounds how many workers start at once on a node. A worker's start is CPU
 * bound (runc, then the runtime's boot); on a small node, 30 starts at once
 * each take many seconds, miss their readiness deadline and are started again,
 * while a few at a time finish in order. Waiting callers are served first come,
 * first served.
 */
export class StartLimiter {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  /** @param limit most starts in progress at once (at least 1). */
  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1)
      throw new Error(`start limit must be a whole number ≥ 1 (got ${limit})`);
  }

  /** Starts in progress now. */
  get running(): number {
    return this.active;
  }

  /** Starts waiting for a slot. */
  get queued(): number {
    return this.waiting.length;
  }

  /** Runs `start` when a slot is free; the slot is freed when it settles. */
  async run<T>(start: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.active++;
    try {
      return await start();
    } finally {
      // Hand the slot straight to the next waiter (the count stays), or free it.
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}
