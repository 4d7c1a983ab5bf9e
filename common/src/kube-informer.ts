import {
  ListWatch,
  Watch,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from "@kubernetes/client-node";
import type { Logger } from "pino";

/** Options of {@link KubeInformer}. */
export interface KubeInformerOptions<T extends KubernetesObject> {
  /** What is watched, for log lines (e.g. "LambdaFunction", "agent pod"). */
  what: string;
  /** Collection path of the watch, e.g. `/api/v1/namespaces/esb/pods`. */
  path: string;
  /** Lists the collection (the same selection as the watch). */
  list: () => Promise<KubernetesListObject<T>>;
  labelSelector?: string;
  logger: Logger;
  onAdd?: (obj: T) => void;
  onUpdate?: (obj: T) => void;
  onDelete?: (obj: T) => void;
  /** Called once, when the cache first holds a complete listing. */
  onSynced?: () => void;
  /** No event, bookmark or successful list for this long → restart the watch. Default 5 min. */
  stallTimeoutMs?: number;
  /** First delay before restarting after a failure; doubles per failed attempt. Default 1 s. */
  initialBackoffMs?: number;
  /** Cap of the restart delay. Default 30 s. */
  maxBackoffMs?: number;
  /** A list that has not answered after this long counts as failed. Default 60 s. */
  listTimeoutMs?: number;
}

/** Where the informer is: `failing` covers a failed watch, list or restart, and a stall. */
export type KubeInformerState = "stopped" | "starting" | "watching" | "failing";

/** Thrown into the informer's pending calls of a retired attempt; never reported. */
class RetiredAttempt extends Error {}

/**
 * One list+watch informer for every ESB watcher of Kubernetes objects: client-node's
 * ListWatch (what `makeInformer` builds, constructed here so that its watch asks for
 * bookmarks and can be fenced), plus what it lacks:
 * - after a failed watch or list, and after a failed restart, it restarts with
 *   exponential backoff (capped, jittered), forever, logging only state changes;
 * - a watch that delivers no event, bookmark or listing for `stallTimeoutMs` is
 *   restarted (resuming from the last resourceVersion, relisting on 410 Gone);
 * - `synced` once a complete listing is in the cache; the cache keeps its last
 *   content while the API server is unreachable.
 *
 * Each restart is an "attempt" with its own number: calls of a retired attempt still
 * in flight (a hanging list or watch request) are released and their results
 * dropped, so two attempts never feed or abort each other.
 */
export class KubeInformer<T extends KubernetesObject> {
  private readonly informer: ListWatch<T>;
  private readonly stallMs: number;
  private attempt = 0;
  private retire: (() => void) | undefined;
  private retired: Promise<void> = new Promise(() => undefined);
  /** doneHandler runs of the informer in flight, awaited before the next attempt starts. */
  private readonly running = new Set<Promise<unknown>>();
  private listedIn = -1;
  private isSynced = false;
  private current: KubeInformerState = "stopped";
  private failures = 0;
  private failingSince = 0;
  private lastProgress = Date.now();
  private restartTimer: NodeJS.Timeout | undefined;
  private stallTimer: NodeJS.Timeout | undefined;
  private restarting: Promise<void> | undefined;
  /** Restarts so far (failures and stalls), for tests and metrics. */
  restarts = 0;

  constructor(
    kubeConfig: KubeConfig,
    private readonly options: KubeInformerOptions<T>,
  ) {
    this.stallMs = options.stallTimeoutMs ?? 300_000;
    this.newAttempt();
    this.informer = new ListWatch<T>(
      options.path,
      new FencedWatch(kubeConfig, this as unknown as KubeInformer<KubernetesObject>),
      () => this.listFromApi(),
      false,
      options.labelSelector,
      undefined,
      // ListWatch waits between clean reconnects; a retired attempt must not keep waiting.
      { delayFn: (ms) => this.delay(ms) },
    );
    if (options.onAdd) this.informer.on("add", options.onAdd);
    if (options.onUpdate) this.informer.on("update", options.onUpdate);
    if (options.onDelete) this.informer.on("delete", options.onDelete);
    this.informer.on("error", (err: unknown) => {
      if (!(err instanceof RetiredAttempt)) this.failed(err);
    });
  }

  /** True once a complete listing has been in the cache (stays true across restarts). */
  get synced(): boolean {
    return this.isSynced;
  }

  get state(): KubeInformerState {
    return this.current;
  }

  /**
   * Starts listing and watching. Resolves after the first attempt, whether it
   * succeeded or not (failures are retried in the background; see {@link synced}).
   */
  async start(): Promise<void> {
    if (this.current !== "stopped") return;
    this.current = "starting";
    this.lastProgress = Date.now();
    const period = Math.max(100, Math.min(this.stallMs / 4, 10_000));
    this.stallTimer = setInterval(() => this.checkStall(), period);
    this.stallTimer.unref();
    await this.run(this.informer.start());
  }

  /** Stops watching; the cache keeps its content. */
  async stop(): Promise<void> {
    this.current = "stopped";
    clearInterval(this.stallTimer);
    clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    this.newAttempt();
    await this.informer.stop();
    await this.restarting;
    await Promise.allSettled([...this.running]);
  }

  /** Objects in the cache. */
  list(namespace?: string): T[] {
    return [...this.informer.list(namespace)];
  }

  get(name: string, namespace?: string): T | undefined {
    return this.informer.get(name, namespace);
  }

  /** @internal The attempt a call belongs to, and whether it is still current. */
  isCurrent(attempt: number): boolean {
    return attempt === this.attempt && this.current !== "stopped";
  }

  /** @internal */
  get attemptNumber(): number {
    return this.attempt;
  }

  /** @internal Resolves when `attempt` is retired. */
  retiredAfter(attempt: number): Promise<void> {
    return attempt === this.attempt ? this.retired : Promise.resolve();
  }

  /** @internal A watch event (bookmarks included) arrived in the current attempt. */
  progressed(): void {
    this.lastProgress = Date.now();
  }

  /** @internal A watch of the current attempt got its response: the API server is reachable again. */
  connected(): void {
    // Not progress: a server (or relay) that answers and then sends nothing is what stalls look like.
    if (this.current === "failing")
      this.options.logger.info(
        { failures: this.failures, downMs: Date.now() - this.failingSince },
        `${this.options.what} watch recovered`,
      );
    else if (this.current === "starting")
      this.options.logger.debug({ objects: this.list().length }, `${this.options.what} watch started`);
    if (this.current !== "stopped") this.current = "watching";
    this.failures = 0;
  }

  /** @internal Called before the informer uses the result of a list: the cache is now complete. */
  listProcessed(): void {
    if (this.listedIn !== this.attempt || this.isSynced) return;
    this.isSynced = true;
    this.options.logger.debug({ objects: this.list().length }, `${this.options.what} cache synced`);
    this.options.onSynced?.();
  }

  /** @internal Tracks a doneHandler run of the informer so a restart can wait for it. */
  run<R>(p: Promise<R> | unknown): Promise<void> {
    if (!(p instanceof Promise)) return Promise.resolve();
    const settled = p.then(
      () => undefined,
      (err: unknown) => {
        // The informer rejects only on unexpected errors (e.g. credentials that cannot be read).
        if (!(err instanceof RetiredAttempt)) this.failed(err);
      },
    );
    this.running.add(settled);
    void settled.finally(() => this.running.delete(settled));
    return settled;
  }

  private async listFromApi(): Promise<KubernetesListObject<T>> {
    const attempt = this.attempt;
    let timer: NodeJS.Timeout | undefined;
    const timeoutMs = this.options.listTimeoutMs ?? 60_000;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`list timed out after ${timeoutMs} ms`)), timeoutMs);
      timer.unref();
    });
    const retired = this.retiredAfter(attempt).then(() => {
      throw new RetiredAttempt();
    });
    try {
      const result = await Promise.race([this.options.list(), timedOut, retired]);
      if (!this.isCurrent(attempt)) throw new RetiredAttempt();
      this.listedIn = attempt;
      this.lastProgress = Date.now();
      // ListWatch fills its cache synchronously once this resolves, before its next await.
      setImmediate(() => this.listProcessed());
      return result;
    } finally {
      clearTimeout(timer);
      retired.catch(() => undefined);
    }
  }

  private async delay(ms: number): Promise<void> {
    const attempt = this.attempt;
    this.listProcessed();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))),
      this.retiredAfter(attempt),
    ]);
    clearTimeout(timer);
  }

  private newAttempt(): void {
    this.retire?.();
    this.attempt++;
    this.retired = new Promise<void>((resolve) => (this.retire = resolve));
  }

  /** A failure of the current attempt: log once per episode, retry after a backoff. */
  private failed(err: unknown): void {
    if (this.current === "stopped") return;
    this.failures++;
    if (this.current !== "failing") {
      this.failingSince = Date.now();
      this.options.logger.warn(
        { err: describe(err), synced: this.isSynced },
        `${this.options.what} watch failed; retrying with backoff until it is back`,
      );
      this.current = "failing";
    } else {
      this.options.logger.debug(
        { err: describe(err), failures: this.failures },
        `${this.options.what} watch still failing`,
      );
    }
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    clearTimeout(this.restartTimer);
    const base = this.options.initialBackoffMs ?? 1000;
    const cap = this.options.maxBackoffMs ?? 30_000;
    const ceiling = Math.min(cap, base * 2 ** Math.min(this.failures - 1, 30));
    // "Equal jitter": at least half the ceiling, so replicas do not retry in lockstep.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      void this.restart();
    }, delay);
    this.restartTimer.unref();
  }

  private checkStall(): void {
    // While a restart waits for its backoff, silence is expected; the attempt after it is watched again.
    if (this.current === "stopped" || this.restarting || this.restartTimer) return;
    const silentMs = Date.now() - this.lastProgress;
    if (silentMs <= this.stallMs) return;
    // A stall is a failure too: repeated stalls back off like failed restarts.
    this.lastProgress = Date.now();
    this.failed(new Error(`no event, bookmark or listing for ${silentMs} ms (stalled)`));
  }

  /** Retires the current attempt, waits for its calls to finish, and starts a new one. */
  private restart(): Promise<void> {
    if (this.restarting || this.current === "stopped") return this.restarting ?? Promise.resolve();
    this.restarts++;
    this.restarting = (async () => {
      this.newAttempt();
      await this.informer.stop();
      await Promise.allSettled([...this.running]);
      if (this.current === "stopped") return;
      this.lastProgress = Date.now();
      await this.run(this.informer.start());
    })().finally(() => (this.restarting = undefined));
    return this.restarting;
  }
}

/**
 * client-node's Watch, asking for bookmarks (so a quiet but healthy watch shows
 * progress) and fenced by attempt: a retired attempt's events and end are dropped,
 * and its pending connect is released at once.
 */
class FencedWatch extends Watch {
  constructor(
    kubeConfig: KubeConfig,
    private readonly owner: KubeInformer<KubernetesObject>,
  ) {
    super(kubeConfig);
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    const owner = this.owner;
    const attempt = owner.attemptNumber;
    owner.listProcessed();
    if (!owner.isCurrent(attempt)) return aborted();
    let ended = false;
    const pending = super.watch(
      path,
      { ...queryParams, allowWatchBookmarks: true },
      (phase, obj, raw) => {
        if (!owner.isCurrent(attempt)) return;
        owner.progressed();
        callback(phase, obj, raw);
      },
      (err) => {
        ended = true;
        if (owner.isCurrent(attempt)) void owner.run(done(err));
      },
    );
    const first = await Promise.race([pending, owner.retiredAfter(attempt).then(() => undefined)]);
    if (!first || !owner.isCurrent(attempt)) {
      void pending.then((c) => c.abort());
      return aborted();
    }
    if (!ended) owner.connected();
    return first;
  }
}

function aborted(): AbortController {
  const c = new AbortController();
  c.abort();
  return c;
}

function describe(err: unknown): string {
  const e = err as { message?: string; statusCode?: number; code?: number | string };
  const status = e?.statusCode ?? e?.code;
  return `${status !== undefined ? `${status} ` : ""}${e?.message ?? String(err)}`;
}
