import { watch, type FSWatcher } from "node:fs";
import { join } from "node:path";
import { readManifestFolder, type Logger } from "@esb/common";
import { FunctionCatalog } from "./function-catalog.js";

/**
 * Functions from a folder of LambdaFunction manifests (standalone mode, `esb up`),
 * read as the controller reads them ({@link readManifestFolder}). A manifest without
 * `metadata.namespace` belongs to `defaultNamespace`. The folder is watched and
 * re-read (debounced) on every change; an invalid document is logged (once per
 * content, at `invalidLevel`) and skipped, never taking the other functions down.
 */
export class FolderFunctionRegistry extends FunctionCatalog {
  private watcher: FSWatcher | undefined;
  private reloadTimer: NodeJS.Timeout | undefined;
  private reloading: Promise<void> = Promise.resolve();
  /** Messages last logged per invalid file, so that each problem is told once. */
  private readonly reported = new Map<string, string>();

  constructor(
    private readonly dir: string,
    private readonly defaultNamespace: string,
    logger: Logger,
    onRouteConflicts?: (count: number) => void,
    /** Level of the invalid-manifest lines: `warn`, or `debug` where another component reports them (esb up's controller). */
    private readonly invalidLevel: "warn" | "debug" = "warn",
  ) {
    super(logger, onRouteConflicts, [defaultNamespace]);
  }

  async start(): Promise<void> {
    await this.reload();
    this.watcher = watch(this.dir, () => {
      clearTimeout(this.reloadTimer);
      this.reloadTimer = setTimeout(() => {
        // reload() logs what went wrong (e.g. the folder was removed); the watcher keeps going.
        this.reloading = this.reloading.then(() => this.reload()).catch(() => undefined);
      }, 100);
    });
    this.watcher.on("error", (err) =>
      this.logger.error({ err, dir: this.dir }, "watching the functions folder failed"),
    );
  }

  async stop(): Promise<void> {
    clearTimeout(this.reloadTimer);
    this.watcher?.close();
    this.watcher = undefined;
    await this.reloading;
  }

  /** Re-reads the folder now (the watcher does this by itself after changes). */
  async reload(): Promise<void> {
    const scan = await readManifestFolder(this.dir, this.defaultNamespace);
    if (!scan.folderRead) {
      this.logger.error({ err: scan.folderError, dir: this.dir }, "cannot read the functions folder");
      throw new Error(`cannot read the functions folder ${this.dir}: ${scan.folderError}`);
    }
    // An invalid manifest is not a function, as kubectl apply would have refused it.
    for (const [file, errors] of scan.invalid) {
      if (this.reported.get(file) === errors.join("\n")) continue;
      this.reported.set(file, errors.join("\n"));
      this.logger[this.invalidLevel]({ file: join(this.dir, file), errors }, "skipping an invalid manifest");
    }
    for (const file of this.reported.keys()) if (!scan.invalid.has(file)) this.reported.delete(file);
    const functions = scan.functions.map((m) => m.fn);
    this.replaceAll(functions, this.defaultNamespace);
    this.logger.info({ dir: this.dir, functions: functions.length }, "functions loaded from folder");
  }
}
