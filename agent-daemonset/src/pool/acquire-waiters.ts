interface Waiter {
  wake(): void;
  fail(err: Error): void;
}

/**
 * Acquirers of one pool waiting, at its concurrency limit, for a worker or a
 * free slot; oldest first. A wake-up does not hand anything over: the woken
 * acquirer looks again and waits again (at the front) when it finds nothing.
 */
export class AcquireWaiters {
  private waiters: Waiter[] = [];

  /** How many are waiting. */
  get length(): number {
    return this.waiters.length;
  }

  /**
   * Resolves on a wake-up, after `ms`, or once `signal` aborts (the acquirer
   * then decides); rejects when {@link failAll} is called. `front` queues it
   * first (an acquirer that already waited keeps its turn).
   */
  wait(ms: number, front: boolean, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", stop);
      };
      const waiter: Waiter = {
        wake: () => {
          done();
          resolve();
        },
        fail: (err) => {
          done();
          reject(err);
        },
      };
      const stop = () => {
        done();
        // Leaves the queue, so that no wake-up is spent on it.
        this.waiters = this.waiters.filter((x) => x !== waiter);
        resolve();
      };
      const timer = setTimeout(stop, ms);
      timer.unref();
      signal?.addEventListener("abort", stop, { once: true });
      if (front) this.waiters.unshift(waiter);
      else this.waiters.push(waiter);
    });
  }

  /** Wakes the oldest waiter, if any. */
  wakeOne(): void {
    this.waiters.shift()?.wake();
  }

  /** Fails every waiter with `err` (pool destroyed or closed). */
  failAll(err: Error): void {
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w.fail(err);
  }
}
