import {
  CoordinationV1Api,
  KubeConfig,
  V1MicroTime,
  type V1Lease,
  type V1LeaseSpec,
} from "@kubernetes/client-node";
import type { Logger } from "@esb/common";

/** Options of {@link LeaderElector}. */
export interface LeaderElectionOptions {
  leaseName: string;
  namespace: string;
  /** This candidate's identity (pod name); must differ between replicas. */
  identity: string;
  /**
   * How long a lease is valid without renewal, measured by each candidate on its
   * own clock from the moment it saw the lease record change. Default 15 s.
   */
  leaseDurationMs?: number;
  /** A leader that could not renew for this long steps down. Must be below the lease duration. Default 10 s. */
  renewDeadlineMs?: number;
  /** Interval between attempts to acquire or renew. Must be below the renew deadline. Default 2 s. */
  retryPeriodMs?: number;
  /** Release a held lease on {@link LeaderElector.stop} so another candidate takes over at once. Default true. */
  releaseOnStop?: boolean;
  /** The local clock in ms (for tests that skew it). Default `Date.now`. */
  now?: () => number;
  /** Called when this candidate starts leading (after any previous onStoppedLeading has settled). */
  onStartedLeading: () => void | Promise<void>;
  /** Called when this candidate stops leading: lost, not renewed in time, or stopped. */
  onStoppedLeading: () => void | Promise<void>;
  logger: Logger;
}

/** The lease fields that make up the election record (what client-go compares). */
type ElectionRecord = Pick<
  V1LeaseSpec,
  "holderIdentity" | "leaseDurationSeconds" | "acquireTime" | "renewTime" | "leaseTransitions"
>;

/** Outcome of one acquire-or-renew attempt. */
type Attempt = { acquired: true } | { acquired: false; holder?: string };

function isStatus(err: unknown, code: number): boolean {
  const e = err as { code?: number; statusCode?: number };
  return e?.code === code || e?.statusCode === code;
}

function errorText(err: unknown): string {
  return String((err as Error)?.message ?? err);
}

/** Rejects when `p` has not settled within `ms`, so that a hung request cannot stall the election loop. */
function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** A stable text of the election record: two reads differ exactly when the record changed. */
function recordText(spec: V1LeaseSpec | undefined): string {
  const t = (d: unknown) => (d === undefined || d === null ? null : new Date(d as string).toISOString());
  return JSON.stringify([
    spec?.holderIdentity ?? "",
    spec?.leaseDurationSeconds ?? null,
    t(spec?.acquireTime),
    t(spec?.renewTime),
    spec?.leaseTransitions ?? null,
  ]);
}

/**
 * Leader election through a coordination.k8s.io/v1 Lease, as client-go does it:
 *
 * - Expiry is judged on the local clock only: a candidate remembers the record
 *   it last saw and the local time at which it saw it change, and takes the
 *   lease once nobody holds it or the record has not changed for the record's
 *   `leaseDurationSeconds`. The `renewTime` written by another node is never
 *   compared with the local clock, so clock skew between nodes cannot make a
 *   live lease look expired (or a dead one look alive).
 * - Every write carries the resourceVersion of the read it is based on; a
 *   conflict means someone else wrote first, so two candidates never both win.
 * - The leader renews every retry period. It steps down at once when it sees
 *   another holder, and when no renewal was confirmed within the renew deadline
 *   (counted from the moment the last successful renewal was sent, by a timer,
 *   so a hung request cannot delay it). Because the renew deadline is shorter
 *   than the lease duration, the old leader has stopped before any other
 *   candidate can consider the lease expired.
 * - `stop()` steps down and then releases the lease (ReleaseOnCancel), so the
 *   next candidate takes over without waiting for the lease duration.
 *
 * Leadership callbacks run one at a time, in order; a new term's
 * onStartedLeading waits until the previous onStoppedLeading has settled.
 */
export class LeaderElector {
  private readonly api: CoordinationV1Api;
  private readonly now: () => number;
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private leading = false;
  /** The record last read or written, its local observation time, and the lease (for resourceVersion). */
  private observedRecord = "";
  private observedAt = 0;
  private observedLease?: V1Lease;
  /** Local time at which the last confirmed renewal was sent. */
  private renewedAt = 0;
  private deadlineTimer?: NodeJS.Timeout;
  private retryTimer?: NodeJS.Timeout;
  private running = false;
  private tick: Promise<void> = Promise.resolve();
  private transitions: Promise<void> = Promise.resolve();

  constructor(
    kc: KubeConfig,
    private readonly options: LeaderElectionOptions,
  ) {
    this.api = kc.makeApiClient(CoordinationV1Api);
    this.now = options.now ?? Date.now;
    this.leaseDurationMs = options.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = options.retryPeriodMs ?? 2000;
    // The safety argument above needs these orderings (client-go checks the same).
    if (this.leaseDurationMs <= this.renewDeadlineMs)
      throw new Error("leader election: leaseDurationMs must be greater than renewDeadlineMs");
    if (this.renewDeadlineMs <= this.retryPeriodMs)
      throw new Error("leader election: renewDeadlineMs must be greater than retryPeriodMs");
  }

  /** True while this candidate holds the lease (turns false the moment it loses or cannot confirm it). */
  get isLeader(): boolean {
    return this.leading;
  }

  /** Starts campaigning (returns at once; callbacks report leadership). */
  start(): void {
    if (this.running) return;
    this.running = true;
    const loop = () => {
      this.tick = this.attempt().finally(() => {
        if (!this.running) return;
        // Candidates add jitter so that they do not hit the API server in step; a leader renews on time.
        const wait = this.leading ? this.retryPeriodMs : this.retryPeriodMs * (1 + Math.random() * 0.2);
        this.retryTimer = setTimeout(loop, wait);
        this.retryTimer.unref();
      });
    };
    loop();
  }

  /**
   * Stops campaigning. A leader steps down first (its onStoppedLeading has
   * settled when this returns) and then releases the lease, so that nothing of
   * its term overlaps with the next leader's.
   */
  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.retryTimer);
    await this.tick;
    this.stepDown("stopped");
    await this.transitions;
    if (this.options.releaseOnStop !== false) await this.release();
  }

  /** Gives the lease up (holder cleared) if this candidate still holds it; conflicts mean it no longer does. */
  private async release(): Promise<void> {
    const { leaseName: name, namespace, identity } = this.options;
    const lease = this.observedLease;
    if (!lease?.spec || lease.spec.holderIdentity !== identity) return;
    const at = new V1MicroTime(this.now());
    try {
      await withTimeout(
        this.api.replaceNamespacedLease({
          name,
          namespace,
          body: {
            ...lease,
            // Like client-go: no holder, a 1 s duration, the transition count kept.
            spec: {
              ...lease.spec,
              holderIdentity: undefined,
              leaseDurationSeconds: 1,
              acquireTime: at,
              renewTime: at,
            },
          },
        }),
        this.renewDeadlineMs,
        "lease release",
      );
      this.options.logger.info({ identity, lease: `${namespace}/${name}` }, "released the lease");
    } catch (err) {
      this.options.logger.warn({ err: errorText(err) }, "could not release the lease; it expires on its own");
    }
  }

  /** Records a leadership change and queues its callback behind the previous ones. */
  private setLeading(leading: boolean, why: string): void {
    if (leading === this.leading) return;
    this.leading = leading;
    if (!leading) clearTimeout(this.deadlineTimer);
    const { identity, namespace, leaseName, logger } = this.options;
    logger.info(
      { identity, lease: `${namespace}/${leaseName}`, why },
      leading ? "became leader" : "stopped leading",
    );
    this.transitions = this.transitions.then(async () => {
      try {
        await (leading ? this.options.onStartedLeading() : this.options.onStoppedLeading());
      } catch (err) {
        logger.error({ err }, "leadership callback failed");
      }
    });
  }

  private stepDown(why: string): void {
    this.setLeading(false, why);
  }

  /** Arms the timer that deposes this leader when no renewal is confirmed within the renew deadline. */
  private armRenewDeadline(): void {
    clearTimeout(this.deadlineTimer);
    const left = this.renewedAt + this.renewDeadlineMs - this.now();
    this.deadlineTimer = setTimeout(
      () => {
        if (!this.leading) return;
        // A timer may fire a millisecond before Date.now() says the deadline has
        // passed; without re-arming, a partitioned leader would lead forever.
        if (this.now() - this.renewedAt < this.renewDeadlineMs) this.armRenewDeadline();
        else this.stepDown(`lease not renewed within the renew deadline (${this.renewDeadlineMs} ms)`);
      },
      Math.max(0, left),
    );
    this.deadlineTimer.unref();
  }

  private async attempt(): Promise<void> {
    // Taken before the request: others see the renewal no earlier than this, so
    // counting the deadline from here keeps this leader's term inside theirs.
    const sentAt = this.now();
    try {
      const result = await this.tryAcquireOrRenew();
      if (!this.running) return;
      if (result.acquired) {
        this.renewedAt = sentAt;
        this.setLeading(true, "acquired or renewed the lease");
        this.armRenewDeadline();
      } else if (this.leading && result.holder && result.holder !== this.options.identity) {
        this.stepDown(`the lease is held by ${result.holder}`);
      }
      // Otherwise (a write conflict) the leader cannot confirm its lease; it
      // retries, and the renew-deadline timer deposes it if that lasts.
    } catch (err) {
      this.options.logger.warn({ err: errorText(err) }, "lease update failed");
    }
  }

  /** Remembers `lease` as the latest record seen; the observation time moves only when the record changed. */
  private observe(lease: V1Lease, at: number): void {
    const text = recordText(lease.spec);
    if (text !== this.observedRecord) {
      this.observedRecord = text;
      this.observedAt = at;
    }
    this.observedLease = lease;
  }

  private async tryAcquireOrRenew(): Promise<Attempt> {
    const { leaseName: name, namespace, identity } = this.options;
    const timeout = this.renewDeadlineMs;
    const now = this.now();
    const leaseSeconds = Math.ceil(this.leaseDurationMs / 1000);
    let lease: V1Lease;
    try {
      lease = await withTimeout(this.api.readNamespacedLease({ name, namespace }), timeout, "lease read");
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
      const at = new V1MicroTime(now);
      try {
        const created = await withTimeout(
          this.api.createNamespacedLease({
            namespace,
            body: {
              metadata: { name, namespace },
              spec: {
                holderIdentity: identity,
                leaseDurationSeconds: leaseSeconds,
                acquireTime: at,
                renewTime: at,
                leaseTransitions: 0,
              },
            },
          }),
          timeout,
          "lease create",
        );
        this.observe(created, this.now());
        return { acquired: true };
      } catch (e) {
        if (isStatus(e, 409)) return { acquired: false }; // another candidate created it first
        throw e;
      }
    }
    const readAt = this.now();
    this.observe(lease, readAt);
    const spec: ElectionRecord = lease.spec ?? {};
    const holder = spec.holderIdentity || undefined;
    const durationMs = (spec.leaseDurationSeconds ?? leaseSeconds) * 1000;
    if (holder && holder !== identity && this.observedAt + durationMs > readAt)
      return { acquired: false, holder };
    const at = new V1MicroTime(now);
    const mine = holder === identity;
    const body: V1Lease = {
      ...lease,
      // metadata (with resourceVersion) comes from the read: a write based on a stale read is refused (409).
      spec: {
        ...lease.spec,
        holderIdentity: identity,
        leaseDurationSeconds: leaseSeconds,
        renewTime: at,
        acquireTime: mine && spec.acquireTime ? new V1MicroTime(spec.acquireTime as unknown as string) : at,
        leaseTransitions: (spec.leaseTransitions ?? 0) + (mine ? 0 : 1),
      },
    };
    try {
      const updated = await withTimeout(
        this.api.replaceNamespacedLease({ name, namespace, body }),
        timeout,
        "lease update",
      );
      this.observe(updated, this.now());
      return { acquired: true };
    } catch (err) {
      if (isStatus(err, 409)) return { acquired: false }; // someone else wrote it since we read it
      throw err;
    }
  }
}
