import { realpathSync, statSync, watch, type FSWatcher } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { isAbsolute, join, resolve, sep } from "node:path";
import { parseAllDocuments } from "yaml";
import {
  validateLambdaFunction,
  type LambdaFunction,
  type LambdaFunctionStatus,
  type Logger,
} from "@esb/common";
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
  logger: Logger;
}

interface Entry {
  fn: LambdaFunction;
  file: string;
  specJson: string;
}

const MANIFEST = /\.(ya?ml|json)$/i;

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

  constructor(
    dir: string,
    private readonly options: FolderFunctionSourceOptions,
  ) {
    this.dir = resolve(dir);
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
      this.watcher = watch(this.dir, () => {
        clearTimeout(this.debounce);
        this.debounce = setTimeout(() => void this.rescan(), 100);
      });
      this.watcher.on("error", (err) =>
        this.options.logger.warn({ err, dir: this.dir }, "folder watch failed; polling only"),
      );
    } catch (err) {
      this.options.logger.warn({ err, dir: this.dir }, "cannot watch folder; polling only");
    }
    this.poll = setInterval(() => void this.rescan(), this.options.pollMs ?? 2000);
    this.poll.unref();
  }

  async stop(): Promise<void> {
    this.watcher?.close();
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
    let names: string[];
    let folderRead = false;
    try {
      names = (await readdir(this.dir)).filter((n) => MANIFEST.test(n)).sort();
      folderRead = true;
    } catch (err) {
      this.options.logger.warn(
        { err: String((err as Error).message), dir: this.dir },
        "cannot read functions folder",
      );
      names = [];
    }
    const next = new Map<string, Entry>();
    const invalid = new Map<string, string[]>();
    for (const name of names) {
      const file = join(this.dir, name);
      let text: string;
      try {
        text = await readFile(file, "utf8");
      } catch {
        continue; // removed between readdir and read
      }
      const docs = parseAllDocuments(text);
      const fileErrors: string[] = [];
      (Array.isArray(docs) ? docs : [docs]).forEach((doc, i) => {
        const where = docs.length > 1 ? `${name} (document ${i + 1})` : name;
        if (doc.errors.length > 0) {
          fileErrors.push(`${where}: invalid YAML: ${doc.errors[0].message}`);
          return;
        }
        const obj = doc.toJS() as unknown;
        if (obj === null || obj === undefined) return; // empty document
        const r = validateLambdaFunction(obj, this.options.defaultNamespace ?? "default");
        if (!r.ok) {
          fileErrors.push(...r.errors.map((e) => `${where}: ${e}`));
          return;
        }
        const fn = r.fn;
        if (fn.spec.code?.path && !isAbsolute(fn.spec.code.path))
          fn.spec.code.path = resolve(this.dir, fn.spec.code.path);
        const confined = fn.spec.code?.path ? this.confineCodePath(fn.spec.code.path) : undefined;
        if (confined) {
          fileErrors.push(`${where}: ${confined}`);
          return;
        }
        const key = functionKey(fn);
        if (next.has(key)) {
          fileErrors.push(
            `${where}: LambdaFunction ${key} is already defined in ${next.get(key)!.file}; ignored`,
          );
          return;
        }
        delete fn.status;
        next.set(key, { fn, file: name, specJson: JSON.stringify(fn.spec) });
      });
      if (fileErrors.length > 0) invalid.set(name, fileErrors);
    }
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
    const removed = [...this.entries.keys()].filter((k) => !next.has(k));
    for (const k of removed) {
      this.statuses.delete(k);
      this.generations.delete(k);
    }
    this.entries = next;
    this.folderRead = folderRead;
    for (const k of [...changed, ...removed]) this.enqueue(k);
  }
}
