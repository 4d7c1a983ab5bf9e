import type {
  DeadLetter,
  DeadLetterReason,
  EventDelivery,
  EventStore,
  EventStoreUsage,
  LocalEventStore,
  NewEvent,
  StoredEvent,
} from "./event-store.js";

interface Due {
  event: StoredEvent;
  systemFailures: number;
}

/**
 * An {@link EventStore} over a {@link LocalEventStore}: this process is the
 * only one running its events, so what is due is kept here, in acceptance
 * order, and retries wait on timers. At construction every event the local
 * store holds (those a previous gateway accepted and did not finish) is due.
 * Retry timers and throttle counts live in memory: after a restart, stored
 * events are due at once with their stored attempt counts.
 */
export class LocalEventScheduler implements EventStore {
  readonly durable: boolean;
  private readonly due: Due[];
  private readonly waiters: ((d: Due | undefined) => void)[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private delivering = true;
  private closed = false;

  constructor(private readonly local: LocalEventStore) {
    this.durable = local.durable;
    this.due = local.pending().map((event) => ({ event, systemFailures: 0 }));
  }

  /** The local store underneath (for reading it directly, e.g. in tests). */
  get store(): LocalEventStore {
    return this.local;
  }

  add(event: NewEvent): Promise<StoredEvent> {
    try {
      const stored = this.local.add(event);
      this.makeDue({ event: stored, systemFailures: 0 });
      return Promise.resolve(stored);
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  async next(): Promise<EventDelivery | undefined> {
    for (;;) {
      const due = this.due.shift() ?? (this.delivering ? await this.wait() : undefined);
      if (!due || !this.delivering) {
        if (due) this.due.unshift(due);
        return undefined;
      }
      const payload = this.local.payload(due.event.seq);
      if (payload) return this.delivery(due, payload);
      // Gone from the store (re-driven twice, or closed): nothing to run.
    }
  }

  stopDelivering(): void {
    this.delivering = false;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const resolve of this.waiters.splice(0)) resolve(undefined);
  }

  deadLetters(limit?: number): Promise<DeadLetter[]> {
    return Promise.resolve(this.local.deadLetters(limit));
  }

  redrive(requestIds?: readonly string[]): Promise<StoredEvent[]> {
    try {
      const events = this.local.redrive(requestIds);
      for (const event of events) this.makeDue({ event, systemFailures: 0 });
      return Promise.resolve(events);
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  usage(): Promise<EventStoreUsage> {
    return Promise.resolve(this.local.usage());
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.stopDelivering();
      this.local.close();
    }
    return Promise.resolve();
  }

  private wait(): Promise<Due | undefined> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private makeDue(due: Due): void {
    if (!this.delivering) return; // stays in the store (if durable) for the next start
    const waiter = this.waiters.shift();
    if (waiter) waiter(due);
    else this.due.push(due);
  }

  private delivery(due: Due, payload: Buffer): EventDelivery {
    const { event } = due;
    let settled = false;
    const settle = (): boolean => {
      if (settled || this.closed) return false;
      settled = true;
      return true;
    };
    return {
      event,
      payload,
      systemFailures: due.systemFailures,
      done: () => {
        if (settle()) this.local.remove(event.seq);
        return Promise.resolve();
      },
      retry: (delayMs, countsAttempt) => {
        if (!settle()) return Promise.resolve();
        const next: Due = countsAttempt
          ? { event: { ...event, attempts: event.attempts + 1 }, systemFailures: 0 }
          : { event, systemFailures: due.systemFailures + 1 };
        if (countsAttempt) this.local.recordAttempt(event.seq, next.event.attempts);
        if (!this.delivering) return Promise.resolve();
        const timer = setTimeout(() => {
          this.timers.delete(timer);
          this.makeDue(next);
        }, delayMs);
        this.timers.add(timer);
        return Promise.resolve();
      },
      deadLetter: (reason: DeadLetterReason, error: string | undefined, attempts?: number) => {
        if (!settle()) return Promise.resolve();
        if (attempts !== undefined && attempts !== event.attempts)
          this.local.recordAttempt(event.seq, attempts);
        this.local.deadLetter(event.seq, reason, error);
        return Promise.resolve();
      },
      release: () => {
        if (settle()) this.due.unshift(due);
        return Promise.resolve();
      },
    };
  }
}
