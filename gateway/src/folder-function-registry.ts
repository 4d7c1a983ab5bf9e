import { watch, type FSWatcher } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { LAMBDA_FUNCTION_KIND, validateLambdaFunction, type LambdaFunction, type Logger } from "@esb/common";
import { FunctionCatalog } from "./function-catalog.js";

/**
 * Functions from a folder of LambdaFunction manifests (standalone mode, `esb up`).
 * Every `*.yaml`, `*.yml` and `*.json` file in the folder is read (multi-document
 * YAML allowed); documents of another kind are ignored. A manifest without
 * `metadata.namespace` belongs to `defaultNamespace`. The folder is watched and
 * re-read (debounced) on every change; an unreadable document is logged and
 * skipped, never taking the other functions down.
 */
export class FolderFunctionRegistry extends FunctionCatalog {
  private watcher: FSWatcher | undefined;
  private reloadTimer: NodeJS.Timeout | undefined;
  private reloading: Promise<void> = Promise.resolve();

  constructor(
    private readonly dir: string,
    private readonly defaultNamespace: string,
    logger: Logger,
    onRouteConflicts?: (count: number) => void,
  ) {
    super(logger, onRouteConflicts, [defaultNamespace]);
  }

  async start(): Promise<void> {
    await this.reload();
    this.watcher = watch(this.dir, () => {
      clearTimeout(this.reloadTimer);
      this.reloadTimer = setTimeout(() => {
        this.reloading = this.reloading.then(() => this.reload());
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
    let names: string[];
    try {
      names = (await readdir(this.dir)).filter((n) => /\.(ya?ml|json)$/.test(n)).sort();
    } catch (err) {
      this.logger.error({ err, dir: this.dir }, "cannot read the functions folder");
      throw err;
    }
    const functions: LambdaFunction[] = [];
    for (const name of names) {
      const file = join(this.dir, name);
      let text: string;
      try {
        text = await readFile(file, "utf8");
      } catch (err) {
        // Deleted between readdir and readFile: the next watch event reloads.
        this.logger.debug({ err, file }, "manifest vanished while reading");
        continue;
      }
      for (const doc of parseAllDocuments(text)) {
        if (doc.errors.length > 0) {
          this.logger.warn(
            { file, error: doc.errors[0].message },
            "skipping a manifest that is not valid YAML",
          );
          continue;
        }
        const value = doc.toJS() as Partial<LambdaFunction> | null;
        if (!value || value.kind !== LAMBDA_FUNCTION_KIND) continue;
        // The same rules as the CRD (and the controller's folder source): an invalid
        // manifest is not a function, as kubectl apply would have refused it.
        const checked = validateLambdaFunction(value, this.defaultNamespace);
        if (!checked.ok) {
          this.logger.warn(
            { file, name: value.metadata?.name, errors: checked.errors },
            "skipping an invalid LambdaFunction",
          );
          continue;
        }
        functions.push(checked.fn);
      }
    }
    this.replaceAll(functions, this.defaultNamespace);
    this.logger.info({ dir: this.dir, functions: functions.length }, "functions loaded from folder");
  }
}
