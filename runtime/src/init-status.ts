/** Path of the emulator's init status on its invoke port (GET; `?waitMs=` long-polls while pending). */
export const INIT_STATUS_PATH = "/esb/init";

/** Whether the function's runtime has initialised in this worker. */
export type InitState =
  { state: "pending" } | { state: "ready" } | { state: "failed"; errorType: string; errorMessage: string };

/**
 * The outcome of the runtime's init (its first `/next`, or an init error / exit before it),
 * for the agent: a provisioned worker whose function cannot initialise is reported, not
 * handed out as warm. The latest outcome wins (a later runtime may succeed).
 */
export class InitStatus {
  private current: InitState = { state: "pending" };
  private readonly waiters = new Set<() => void>();

  get(): InitState {
    return this.current;
  }

  ready(): void {
    this.set({ state: "ready" });
  }

  failed(errorType: string, errorMessage: string): void {
    this.set({ state: "failed", errorType, errorMessage });
  }

  /** The state now, or the first one other than pending within `ms`. */
  async wait(ms: number): Promise<InitState> {
    if (this.current.state !== "pending" || ms <= 0) return this.current;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
    });
    return this.current;
  }

  private set(next: InitState): void {
    this.current = next;
    for (const w of [...this.waiters]) w();
  }
}
