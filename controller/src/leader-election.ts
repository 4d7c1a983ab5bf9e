import { CoordinationV1Api, KubeConfig, V1MicroTime, type V1Lease } from "@kubernetes/client-node";
import type { Logger } from "@esb/common";

/** Options of {@link LeaderElector}. */
export interface LeaderElectionOptions {
  leaseName: string;
  namespace: string;
  /** This candidate's identity (pod name); must differ between replicas. */
  identity: string;
  /** How long a lease is valid without renewal. Default 15 s. */
  leaseDurationMs?: number;
  /** A leader that could not renew for this long steps down. Default 10 s. */
  renewDeadlineMs?: number;
  /** Interval between attempts to acquire or renew. Default 2 s. */
  retryPeriodMs?: number;
  onStartedLeading: () => void | Promise<void>;
  onStoppedLeading: () => void | Promise<void>;
  logger: Logger;
}

function isStatus(err: unknown, code: number): boolean {
  const e = err as { code?: number; statusCode?: number };
  return e?.code === code || e?.statusCode === code;
}

/**
 * Leader election through a coordination.k8s.io/v1 Lease, with client-go's
 * semantics: a candidate takes the lease when it is free, held by nobody, or
 * not renewed for its duration; the holder renews it every retry period and
 * steps down when it could not renew within the renew deadline. Updates carry
 * the lease's resourceVersion, so two candidates never both win. `stop()`
 * releases a held lease so that another replica takes over at once.
 */
export class LeaderElector {
  private readonly api: CoordinationV1Api;
  private leading = false;
  private lastRenew = 0;
  private timer?: NodeJS.Timeout;
  private running = false;
  private tick: Promise<void> = Promise.resolve();

  constructor(
    kc: KubeConfig,
    private readonly options: LeaderElectionOptions,
  ) {
    this.api = kc.makeApiClient(CoordinationV1Api);
  }

  /** True while this candidate holds the lease. */
  get isLeader(): boolean {
    return this.leading;
  }

  private get leaseDurationMs(): number {
    return this.options.leaseDurationMs ?? 15_000;
  }

  /** Starts campaigning (returns at once; callbacks report leadership). */
  start(): void {
    if (this.running) return;
    this.running = true;
    const loop = () => {
      this.tick = this.attempt().finally(() => {
        if (this.running) {
          this.timer = setTimeout(loop, this.options.retryPeriodMs ?? 2000);
          this.timer.unref();
        }
      });
    };
    loop();
  }

  /** Stops campaigning; a leader releases the lease and steps down. */
  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    await this.tick;
    if (this.leading) {
      try {
        const lease = await this.api.readNamespacedLease({
          name: this.options.leaseName,
          namespace: this.options.namespace,
        });
        if (lease.spec?.holderIdentity === this.options.identity) {
          lease.spec.holderIdentity = undefined;
          lease.spec.renewTime = undefined;
          lease.spec.acquireTime = undefined;
          await this.api.replaceNamespacedLease({
            name: this.options.leaseName,
            namespace: this.options.namespace,
            body: lease,
          });
        }
      } catch (err) {
        this.options.logger.warn(
          { err: String((err as Error)?.message ?? err) },
          "could not release the lease",
        );
      }
      await this.setLeading(false);
    }
  }

  private async setLeading(leading: boolean): Promise<void> {
    if (leading === this.leading) return;
    this.leading = leading;
    this.options.logger.info(
      { identity: this.options.identity, lease: `${this.options.namespace}/${this.options.leaseName}` },
      leading ? "became leader" : "stopped leading",
    );
    try {
      await (leading ? this.options.onStartedLeading() : this.options.onStoppedLeading());
    } catch (err) {
      this.options.logger.error({ err }, "leadership callback failed");
    }
  }

  private async attempt(): Promise<void> {
    try {
      const acquired = await this.tryAcquireOrRenew();
      if (acquired) {
        this.lastRenew = Date.now();
        await this.setLeading(true);
      } else if (this.leading) {
        await this.setLeading(false);
      }
    } catch (err) {
      this.options.logger.warn({ err: String((err as Error)?.message ?? err) }, "lease update failed");
      if (this.leading && Date.now() - this.lastRenew > (this.options.renewDeadlineMs ?? 10_000))
        await this.setLeading(false);
    }
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { leaseName: name, namespace, identity } = this.options;
    const now = new V1MicroTime();
    let lease: V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ name, namespace });
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
      try {
        await this.api.createNamespacedLease({
          namespace,
          body: {
            metadata: { name, namespace },
            spec: {
              holderIdentity: identity,
              leaseDurationSeconds: Math.ceil(this.leaseDurationMs / 1000),
              acquireTime: now,
              renewTime: now,
              leaseTransitions: 0,
            },
          },
        });
        return true;
      } catch (e) {
        if (isStatus(e, 409)) return false; // another candidate created it first
        throw e;
      }
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity;
    const renewed = spec.renewTime ? new Date(spec.renewTime as unknown as string).getTime() : 0;
    const duration = (spec.leaseDurationSeconds ?? Math.ceil(this.leaseDurationMs / 1000)) * 1000;
    const expired = !holder || renewed + duration < Date.now();
    if (holder !== identity && !expired) return false;
    const body: V1Lease = {
      ...lease,
      spec: {
        ...spec,
        holderIdentity: identity,
        leaseDurationSeconds: Math.ceil(this.leaseDurationMs / 1000),
        renewTime: now,
        acquireTime:
          holder === identity && spec.acquireTime
            ? new V1MicroTime(spec.acquireTime as unknown as string)
            : now,
        leaseTransitions: (spec.leaseTransitions ?? 0) + (holder === identity ? 0 : 1),
      },
    };
    try {
      await this.api.replaceNamespacedLease({ name, namespace, body });
      return true;
    } catch (err) {
      if (isStatus(err, 409)) return false; // someone else updated it since we read it
      throw err;
    }
  }
}
