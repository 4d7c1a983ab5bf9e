import { realpathSync, statSync, watch, type FSWatcher } from "node:fs";
import { join, resolve, sep } from "node:path";
import {
  functionRevision,
  readManifestFolder,
  type LambdaFunction,
  type LambdaFunctionStatus,
  type Logger,
} from "@esb/common";
import { CodeSnapshots } from "./code-snapshots.js";
import { functionKey, type FunctionSource } from "./function-source.js";

/** Options of {@link FolderFunctionSource}. */
export interface FolderFunctionSourceOptions {
  /** Namespace of manifests that do not name one. Default `default`. */
  defaultNamespace?: string;
  /** Rescan interval, a fallback for file-system events that get lost. Default 2 s. */
  pollMs?: number;
  /**
   * Folders besides the functions folder that `code.path` may name. A code path must
   * resolve (symlinks included) inside one of them; never `/`.
   */
  codeRoots?: string[];
  /**
   * Where content-addressed snapshots of `code.path` folders go. When set, workers run a
   * snapshot, every `code.path` folder is watched, and an edit is a new revision (old workers
   * drain). Unset: the live folder is mounted as it is.
   */
  codeSnapshotDir?: string;
  /** How long an unused snapshot is kept for workers of the previous revision to finish. Default 15 min (the longest timeout). */
  snapshotGraceMs?: number;
  /** Called when a function's code changed under `code.path` (not its manifest), with the new revision. */
  onCodeChange?: (fn: LambdaFunction, revision: string) => void;
  /** Called with each status the controller records (after the logger has it). */
  onStatus?: (fn: LambdaFunction, status: LambdaFunctionStatus) => void;
  logger: Logger;
}

interface Entry {
  fn: LambdaFunction;
  file: string;
  specJson: string;
  /** The live `code.path` folder when `fn.spec.code.path` names its snapshot. */
  liveCodePath?: string;
}

/**
 * LambdaFunctions read from the YAML/JSON manifests in one folder (standalone
 * `esb up`). Files may hold several documents. Manifests are checked with
 * {@link validateLambdaFunction} (the CRD's rules and messages); invalid ones
 * are logged with those messages and skipped, never fatal. The folder is
 * watched: added, changed and removed manifests are applied like `kubectl
 * apply`/`delete` would (a changed spec bumps `metadata.generation`). A
 * relative `code.path` is taken relative to the manifest's folder, and every code
 * path must resolve (symlinks included) inside the functions folder or one of
 * `codeRoots`: a manifest cannot hand the host's `/` to a function. Status lives
 * in memory and is logged.
 */
export class FolderFunctionSource implements FunctionSource {
  readonly mode = "standalone" as const;
  private entries = new Map<string, Entry>();
  private readonly statuses = new Map<string, LambdaFunctionStatus>();
  private readonly generations = new Map<string, { specJson: string; generation: number }>();
  private readonly reported = new Map<string, string>();
  private invalid = new Map<string, string[]>();
  private watcher?: FSWatcher;
  private poll?: NodeJS.Timeout;
  private debounce?: NodeJS.Timeout;
  private enqueue: (key: string) => void = () => undefined;
  private scanning: Promise<void> = Promise.resolve();
  private folderRead = false;
  private readonly dir: string;
  private readonly snapshots?: CodeSnapshots;
  private readonly codeWatchers = new Map<string, FSWatcher>();
  private stopped = false;

  constructor(
    dir: string,
    private readonly options: FolderFunctionSourceOptions,
  ) {
    this.dir = resolve(dir);
    if (options.codeSnapshotDir) this.snapshots = new CodeSnapshots(resolve(options.codeSnapshotDir));
  }

  /** Why `path` may not be a function's code (outside every allowed folder, missing, not a folder), or undefined. */
  private confineCodePath(path: string): string | undefined {
    let real: string;
    try {
      real = realpathSync(path);
    } catch {
      return `spec.code.path ${path} does not exist`;
    }
    const roots: string[] = [];
    for (const root of [this.dir, ...(this.options.codeRoots ?? [])]) {
      try {
        const r = realpathSync(root);
        if (r !== "/") roots.push(r);
      } catch {
        // a missing allowed folder allows nothing
      }
    }
    if (!roots.some((r) => real === r || real.startsWith(`${r}${sep}`))) {
      const where = real === path ? "" : ` (resolves to ${real})`;
      return `spec.code.path ${path}${where} is outside the functions folder ${this.dir}; code must stay inside it (esb up --code-root DIR allows another folder)`;
    }
    if (!statSync(real).isDirectory()) return `spec.code.path ${path} is not a folder`;
    return undefined;
  }

  async start(enqueue: (key: string) => void): Promise<void> {
    this.enqueue = enqueue;
    await this.rescan();
    try {
      this.watcher = watch(this.dir, () => this.rescanSoon());
      this.watcher.on("error", (err) =>
        this.options.logger.warn({ err, dir: this.dir }, "folder watch failed; polling only"),
      );
    } catch (err) {
      this.options.logger.warn({ err, dir: this.dir }, "cannot watch folder; polling only");
    }
    this.poll = setInterval(() => void this.rescan(), this.options.pollMs ?? 2000);
    this.poll.unref();
  }

  // Editors write a file in several steps: one rescan once they are done.
  private rescanSoon(): void {
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => void this.rescan(), 100);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    for (const w of this.codeWatchers.values()) w.close();
    this.codeWatchers.clear();
    clearInterval(this.poll);
    clearTimeout(this.debounce);
    await this.scanning;
  }

  /** Re-reads the folder now (also done on file-system events and by polling). */
  rescan(): Promise<void> {
    this.scanning = this.scanning
      .then(() => this.scan())
      .catch((err) => this.options.logger.error({ err, dir: this.dir }, "scanning manifests failed"));
    return this.scanning;
  }

  /** Manifest files that failed validation, with their messages (file → errors). */
  invalidManifests(): Map<string, string[]> {
    return new Map(this.invalid);
  }

  /** All valid functions with their current status. */
  list(): LambdaFunction[] {
    return [...this.entries.keys()].map((k) => this.get(k)!);
  }

  keys(): string[] {
    return [...this.entries.keys()];
  }

  /** True when the last scan could read the folder (its functions are then all known). */
  isSynced(): boolean {
    return this.folderRead;
  }

  /** Every namespace: the folder is the only source of `esb up`'s functions. */
  watches(): boolean {
    return true;
  }

  get(key: string): LambdaFunction | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    const status = this.statuses.get(key);
    return { ...e.fn, status: status ? structuredClone(status) : undefined };
  }

  async ensureFinalizer(fn: LambdaFunction): Promise<LambdaFunction> {
    return fn;
  }

  async removeFinalizer(): Promise<void> {}

  async updateStatus(fn: LambdaFunction, status: LambdaFunctionStatus): Promise<void> {
    const key = functionKey(fn);
    if (!this.entries.has(key)) return;
    this.statuses.set(key, structuredClone(status));
    const ready = status.conditions?.find((c) => c.type === "Ready");
    this.options.logger.info(
      {
        function: key,
        ready: ready?.status,
        reason: ready?.reason,
        message: ready?.message,
        warm: status.warmWorkers,
        url: status.url,
      },
      "function status",
    );
    this.options.onStatus?.(fn, status);
  }

  async readConfigMap(): Promise<Record<string, Uint8Array> | undefined> {
    return undefined;
  }

  async recordEvent(
    fn: LambdaFunction,
    type: "Normal" | "Warning",
    reason: string,
    message: string,
  ): Promise<void> {
    const log =
      type === "Warning"
        ? this.options.logger.warn.bind(this.options.logger)
        : this.options.logger.info.bind(this.options.logger);
    log({ function: functionKey(fn), reason }, message);
  }

  private async scan(): Promise<void> {
    const scan = await readManifestFolder(this.dir, this.options.defaultNamespace ?? "default", (fn) =>
      fn.spec.code?.path ? this.confineCodePath(fn.spec.code.path) : undefined,
    );
    const folderRead = scan.folderRead;
    if (!folderRead)
      this.options.logger.warn({ err: scan.folderError, dir: this.dir }, "cannot read functions folder");
    const invalid = scan.invalid;
    const next = new Map<string, Entry>();
    for (const { fn, file } of scan.functions)
      next.set(functionKey(fn), { fn, file, specJson: JSON.stringify(fn.spec) });
    // Log each file's problems once per distinct content of the messages.
    for (const [file, errors] of invalid) {
      const sig = errors.join("\n");
      if (this.reported.get(file) !== sig) {
        this.reported.set(file, sig);
        this.options.logger.error(
          { file: join(this.dir, file), errors },
          `invalid LambdaFunction manifest skipped: ${errors.join("; ")}`,
        );
      }
    }
    for (const file of this.reported.keys()) if (!invalid.has(file)) this.reported.delete(file);
    this.invalid = invalid;
    if (this.snapshots) await this.snapshotCode(next);

    const changed: string[] = [];
    for (const [key, e] of next) {
      const g = this.generations.get(key);
      const generation = !g ? 1 : g.specJson === e.specJson ? g.generation : g.generation + 1;
      this.generations.set(key, { specJson: e.specJson, generation });
      e.fn.metadata.generation = generation;
      e.fn.metadata.uid ??= `folder:${key}`;
      const prev = this.entries.get(key);
      if (
        !prev ||
        prev.specJson !== e.specJson ||
        JSON.stringify(prev.fn.metadata) !== JSON.stringify(e.fn.metadata)
      )
        changed.push(key);
    }
    for (const key of changed) {
      const prev = this.entries.get(key);
      const e = next.get(key)!;
      const code = e.fn.spec.code;
      if (
        prev?.liveCodePath &&
        prev.liveCodePath === e.liveCodePath &&
        prev.fn.spec.code?.path !== code?.path
      ) {
        const revision = functionRevision(e.fn.spec, { hostPath: code!.path });
        this.options.logger.info({ function: key, code: e.liveCodePath, revision }, "code changed");
        this.options.onCodeChange?.(e.fn, revision);
      }
    }
    const removed = [...this.entries.keys()].filter((k) => !next.has(k));
    for (const k of removed) {
      this.statuses.delete(k);
      this.generations.delete(k);
    }
    this.entries = next;
    this.folderRead = folderRead;
    for (const k of [...changed, ...removed]) this.enqueue(k);
    if (this.snapshots && !this.stopped) {
      this.watchCode(next);
      const inUse = new Set(
        [...next.values()].flatMap((e) => (e.liveCodePath ? [e.fn.spec.code!.path!] : [])),
      );
      const pruned = await this.snapshots.prune(inUse, this.options.snapshotGraceMs ?? 15 * 60_000);
      if (pruned.length) this.options.logger.info({ removed: pruned }, "removed unused code snapshots");
    }
  }

  /** Points every function with a `code.path` at the snapshot of that folder's current content. */
  private async snapshotCode(next: Map<string, Entry>): Promise<void> {
    for (const [key, e] of next) {
      const live = e.fn.spec.code?.path;
      if (!live) continue;
      try {
        e.fn.spec.code!.path = await this.snapshots!.snapshot(live);
        e.liveCodePath = live;
        e.specJson = JSON.stringify(e.fn.spec);
      } catch (err) {
        // Unreadable right now (mid-rename, permissions): keep the previous snapshot, if any.
        const prev = this.entries.get(key);
        if (prev?.liveCodePath === live) {
          e.fn.spec.code!.path = prev.fn.spec.code!.path;
          e.liveCodePath = live;
          e.specJson = JSON.stringify(e.fn.spec);
        }
        this.options.logger.warn(
          { function: key, code: live, err: String(err) },
          "cannot snapshot code.path",
        );
      }
    }
  }

  /** Watches each live `code.path` folder (recursively), so an edit is seen within ~100 ms, not at the next poll. */
  private watchCode(next: Map<string, Entry>): void {
    const wanted = new Set([...next.values()].flatMap((e) => (e.liveCodePath ? [e.liveCodePath] : [])));
    for (const [dir, w] of this.codeWatchers)
      if (!wanted.has(dir)) {
        w.close();
        this.codeWatchers.delete(dir);
      }
    for (const dir of wanted) {
      if (this.codeWatchers.has(dir)) continue;
      try {
        const w = watch(dir, { recursive: true }, () => this.rescanSoon());
        w.on("error", (err) => {
          this.options.logger.warn({ err, dir }, "code.path watch failed; polling only");
          w.close();
          this.codeWatchers.delete(dir);
        });
        this.codeWatchers.set(dir, w);
      } catch (err) {
        this.options.logger.warn({ err, dir }, "cannot watch code.path; polling only");
      }
    }
  }
}
