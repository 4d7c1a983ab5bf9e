import { randomUUID } from "node:crypto";

/** One caller's hold on one busy worker. */
export interface Lease {
  readonly id: string;
  readonly workerId: string;
  /** The caller whose heartbeats keep it ("" for a worker re-adopted after an agent restart). */
  readonly holderId: string;
  /** How long it lasts without a renewal. */
  readonly ms: number;
  /** When it was granted (ms since the epoch). */
  readonly grantedAt: number;
}

/** What {@link LeaseTable.heartbeat} did for one holder. */
export interface LeaseHeartbeat {
  /** Leases of the holder still honoured (renewed, or too young to judge). */
  held: number;
  /** Leases of the holder that the heartbeat did not list and that were expired. */
  expired: Lease[];
}

/**
 * The leases of one pool's busy workers and their expiry timers. A lease ends by
 * {@link drop} (the worker was released or removed) or by expiring: no renewal
 * within its length, or an explicit {@link expire}. Expiry only reports, through
 * `onExpire`: what happens to the worker is the pool's business.
 */
export class LeaseTable {
  private readonly leases = new Map<string, { lease: Lease; timer: NodeJS.Timeout }>();

  constructor(
    /** Called once per lease that expires (never for a dropped one). */
    private readonly onExpire: (lease: Lease, reason: string) => void,
    /**
     * How long after its grant an unlisted lease is spared by a heartbeat that
     * lists the holder's leases: the AcquireWorker answer may still be on its way
     * to the holder, whose heartbeat could not list it yet.
     */
    private readonly unlistedGraceMs = 10_000,
  ) {}

  /** Grants a lease on `workerId` to `holderId` for `ms`; `id` is given only for re-adopted workers. */
  grant(workerId: string, holderId: string, ms: number, id: string = randomUUID()): Lease {
    const lease: Lease = { id, workerId, holderId, ms, grantedAt: Date.now() };
    this.leases.set(id, { lease, timer: this.arm(lease) });
    return lease;
  }

  /** True while the lease is in force. */
  has(lease: Lease | undefined): boolean {
    return lease !== undefined && this.leases.get(lease.id)?.lease === lease;
  }

  /** Ends a lease without expiry (released, or its worker removed). Unknown leases are ignored. */
  drop(lease: Lease | undefined): void {
    if (!lease) return;
    const entry = this.leases.get(lease.id);
    if (entry?.lease !== lease) return;
    clearTimeout(entry.timer);
    this.leases.delete(lease.id);
  }

  /** Ends a lease now as if it had run out; `onExpire` is told. */
  expire(lease: Lease, reason: string): void {
    if (!this.has(lease)) return;
    this.drop(lease);
    this.onExpire(lease, reason);
  }

  /**
   * Renews the holder's leases. Without `listed` (a caller that does not list
   * its leases) every one of them is renewed. With it, only the listed ones
   * are; the others are expired, except those younger than the grace. An
   * empty `holderId` names no one.
   */
  heartbeat(holderId: string, listed?: ReadonlySet<string>): LeaseHeartbeat {
    const now = Date.now();
    const result: LeaseHeartbeat = { held: 0, expired: [] };
    // Re-adopted workers' leases have no holder: no caller may renew or expire them.
    if (!holderId) return result;
    for (const entry of [...this.leases.values()]) {
      const { lease } = entry;
      if (lease.holderId !== holderId) continue;
      if (!listed || listed.has(lease.id)) {
        clearTimeout(entry.timer);
        entry.timer = this.arm(lease);
        result.held++;
      } else if (now - lease.grantedAt < this.unlistedGraceMs) {
        result.held++;
      } else {
        result.expired.push(lease);
        this.expire(lease, `lease of ${holderId} is no longer held by it`);
      }
    }
    return result;
  }

  /** Stops every expiry timer (agent shutdown: the next agent re-adopts the workers). */
  clearTimers(): void {
    for (const { timer } of this.leases.values()) clearTimeout(timer);
  }

  private arm(lease: Lease): NodeJS.Timeout {
    const timer = setTimeout(
      () => this.expire(lease, `lease of ${lease.holderId || "a previous agent"} expired`),
      lease.ms,
    );
    timer.unref();
    return timer;
  }
}
