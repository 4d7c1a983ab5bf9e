import { readdir, readFile, rename, rm, stat, unlink, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { basename, join, relative, resolve } from "node:path";
import { parseAllDocuments, stringify } from "yaml";
import { readManifestFolder, type LambdaFunction } from "@esb/common";
import { extractZipCode, readZipCode } from "./function-code-zip.js";
import type { FunctionStore, StoredCode } from "./function-store.js";
import { LambdaApiError } from "./lambda-api-error.js";

/** Folder (inside the functions folder) that holds unpacked deployment packages, one per zip content. */
export const CODE_FOLDER = ".esb-code";

/**
 * {@link FunctionStore} of standalone ESB (`esb up`, a gateway with FUNCTIONS_DIR): each function
 * is a manifest in the functions folder, the one the controller and the gateway's registry read.
 * A new function gets its own `<name>.yaml`; an existing one is edited in the file that defines it
 * (a document of a multi-document file is replaced in place, the others kept). Files are replaced
 * atomically (write then rename), so a reader never sees half a manifest.
 *
 * Code: a zip is unpacked into `<functions folder>/.esb-code/<sha256 of the zip>/` and the
 * manifest names it as `spec.code.path`, so it is inside the folder that code paths may use and
 * the controller snapshots and serves it like any other code path (one machine: every "node" reads
 * this disk). Writes are serialised in this process; the gateway is the folder's only API writer.
 */
export class FolderFunctionStore implements FunctionStore {
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly dir: string,
    private readonly defaultNamespace: string,
  ) {}

  async get(namespace: string, name: string): Promise<LambdaFunction | undefined> {
    return (await this.find(namespace, name))?.fn;
  }

  create(fn: LambdaFunction): Promise<LambdaFunction> {
    return this.serial(async () => {
      const ns = fn.metadata.namespace ?? this.defaultNamespace;
      if (await this.find(ns, fn.metadata.name))
        throw new LambdaApiError("ResourceConflictException", `Function already exist: ${fn.metadata.name}`);
      let file = `${fn.metadata.name}.yaml`;
      for (let i = 2; await exists(join(this.dir, file)); i++) file = `${fn.metadata.name}-${i}.yaml`;
      await this.writeAtomically(file, stringify(manifestOf(fn)));
      return fn;
    });
  }

  update(
    namespace: string,
    name: string,
    change: (current: LambdaFunction) => LambdaFunction,
  ): Promise<LambdaFunction> {
    return this.serial(async () => {
      const found = await this.find(namespace, name);
      if (!found) throw notFound(name);
      const next = change(found.fn);
      await this.rewrite(found.file, namespace, name, manifestOf(next));
      return next;
    });
  }

  delete(namespace: string, name: string): Promise<void> {
    return this.serial(async () => {
      const found = await this.find(namespace, name);
      if (!found) throw notFound(name);
      await this.rewrite(found.file, namespace, name, undefined);
    });
  }

  storeCode(_namespace: string, _name: string, zip: Buffer): Promise<StoredCode> {
    return this.serial(async () => {
      const hex = createHash("sha256").update(zip).digest("hex").slice(0, 32);
      const dest = join(this.dir, CODE_FOLDER, hex);
      // Same content already unpacked (another function, or an unchanged upload): checked again, not rewritten.
      const summary = (await exists(dest))
        ? await readZipCode(zip, async () => {})
        : await extractZipCode(zip, dest);
      return { code: { path: `${CODE_FOLDER}/${hex}` }, summary };
    });
  }

  /** Removes every unpacked package that no manifest of the folder names (the namespace and name do not matter). */
  pruneCode(): Promise<void> {
    return this.serial(async () => {
      const root = join(this.dir, CODE_FOLDER);
      let names: string[];
      try {
        names = await readdir(root);
      } catch {
        return;
      }
      const scan = await readManifestFolder(this.dir, this.defaultNamespace);
      // An invalid manifest may still name code: keep everything while one exists.
      if (!scan.folderRead || scan.invalid.size > 0) return;
      const used = new Set(
        scan.functions.flatMap((m) => (m.fn.spec.code?.path ? [basename(m.fn.spec.code.path)] : [])),
      );
      for (const n of names) if (!used.has(n)) await rm(join(root, n), { recursive: true, force: true });
    });
  }

  private async find(
    namespace: string,
    name: string,
  ): Promise<{ fn: LambdaFunction; file: string } | undefined> {
    const scan = await readManifestFolder(this.dir, this.defaultNamespace);
    const m = scan.functions.find(
      (f) => f.fn.metadata.name === name && (f.fn.metadata.namespace ?? this.defaultNamespace) === namespace,
    );
    if (!m) return undefined;
    const fn = m.fn;
    // The reader made code.path absolute; the API writes it back as the manifest had it.
    if (fn.spec.code?.path) {
      const rel = relative(this.dir, fn.spec.code.path);
      if (!rel.startsWith("..")) fn.spec.code.path = rel;
    }
    return { fn, file: m.file };
  }

  /** Replaces (or, with `next` undefined, removes) the document of `namespace/name` in `file`. */
  private async rewrite(
    file: string,
    namespace: string,
    name: string,
    next: object | undefined,
  ): Promise<void> {
    const text = await readFile(join(this.dir, file), "utf8");
    const docs = parseAllDocuments(text);
    const list = Array.isArray(docs) ? docs : [docs];
    const parts: string[] = [];
    let replaced = false;
    for (const doc of list) {
      const obj = doc.toJS() as { metadata?: { name?: string; namespace?: string } } | null;
      const isIt =
        !replaced &&
        obj?.metadata?.name === name &&
        (obj.metadata.namespace ?? this.defaultNamespace) === namespace;
      if (isIt) {
        replaced = true;
        if (next) parts.push(stringify(next));
        continue;
      }
      if (obj === null || obj === undefined) continue;
      parts.push(doc.toString().replace(/^---[ \t]*\n/, ""));
    }
    if (parts.length === 0) await unlink(join(this.dir, file));
    else await this.writeAtomically(file, parts.join("---\n"));
  }

  private async writeAtomically(file: string, text: string): Promise<void> {
    const path = resolve(this.dir, file);
    // Not *.yaml: readers of the folder ignore it until the rename.
    const tmp = join(this.dir, `.${basename(file)}.tmp-${process.pid}-${Date.now()}`);
    await writeFile(tmp, text, { mode: 0o644 });
    await rename(tmp, path);
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work, work);
    this.queue = run.catch(() => undefined);
    return run;
  }
}

/** The manifest as written: no status, no server-set metadata. */
function manifestOf(fn: LambdaFunction): object {
  const { name, namespace, labels, annotations } = fn.metadata;
  return {
    apiVersion: fn.apiVersion,
    kind: fn.kind,
    metadata: {
      name,
      ...(namespace ? { namespace } : {}),
      ...(labels ? { labels } : {}),
      ...(annotations ? { annotations } : {}),
    },
    spec: fn.spec,
  };
}

function notFound(name: string): LambdaApiError {
  return new LambdaApiError("ResourceNotFoundException", `Function not found: ${name}`);
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
