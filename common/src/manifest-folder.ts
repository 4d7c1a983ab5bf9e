import { readdir, readFile } from "node:fs/promises";
import { isAbsolute, join, resolve } from "node:path";
import { parseAllDocuments } from "yaml";
import type { LambdaFunction } from "./lambda-function.js";
import { validateLambdaFunction } from "./lambda-function-validation.js";

/** Files of a manifest folder that are read: YAML and JSON. */
const MANIFEST = /\.(ya?ml|json)$/i;

/** A valid LambdaFunction read from a manifest folder. */
export interface FolderManifest {
  fn: LambdaFunction;
  /** File name inside the folder. */
  file: string;
}

/** What {@link readManifestFolder} found. */
export interface ManifestFolderScan {
  /** Valid functions, in file order; a `namespace/name` appears once (the first file defining it). */
  functions: FolderManifest[];
  /** Files with problems → their messages (each prefixed with the file name, and the document number when the file has several). */
  invalid: Map<string, string[]>;
  /** False when the folder itself could not be read (then both lists are empty). */
  folderRead: boolean;
  /** Why the folder could not be read. */
  folderError?: string;
}

/**
 * Reads every `*.yaml`, `*.yml` and `*.json` file of `dir` (several documents per file allowed)
 * as LambdaFunctions, with the CRD's rules and messages ({@link validateLambdaFunction}), the
 * one reader of manifest folders (esb up's controller and gateway, a gateway with FUNCTIONS_DIR).
 * A relative `spec.code.path` is made absolute against `dir`; `check` may refuse a valid
 * function with a message (e.g. a code path outside the allowed folders). A second definition of
 * a `namespace/name` is an error of its file, and the first one stays. Never throws.
 */
export async function readManifestFolder(
  dir: string,
  defaultNamespace: string,
  check: (fn: LambdaFunction) => string | undefined = () => undefined,
): Promise<ManifestFolderScan> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => MANIFEST.test(n)).sort();
  } catch (err) {
    return { functions: [], invalid: new Map(), folderRead: false, folderError: (err as Error).message };
  }
  const functions: FolderManifest[] = [];
  const files = new Map<string, string>();
  const invalid = new Map<string, string[]>();
  for (const name of names) {
    let text: string;
    try {
      text = await readFile(join(dir, name), "utf8");
    } catch {
      continue; // removed between readdir and read: the next scan sees the folder as it is
    }
    const docs = parseAllDocuments(text);
    const list = Array.isArray(docs) ? docs : [docs];
    const errors: string[] = [];
    list.forEach((doc, i) => {
      const where = list.length > 1 ? `${name} (document ${i + 1})` : name;
      if (doc.errors.length > 0) {
        errors.push(`${where}: invalid YAML: ${doc.errors[0].message}`);
        return;
      }
      const obj = doc.toJS() as unknown;
      if (obj === null || obj === undefined) return; // an empty document
      const r = validateLambdaFunction(obj, defaultNamespace);
      if (!r.ok) {
        errors.push(...r.errors.map((e) => `${where}: ${e}`));
        return;
      }
      const fn = r.fn;
      delete fn.status;
      if (fn.spec.code?.path && !isAbsolute(fn.spec.code.path))
        fn.spec.code.path = resolve(dir, fn.spec.code.path);
      const refused = check(fn);
      if (refused) {
        errors.push(`${where}: ${refused}`);
        return;
      }
      const key = `${fn.metadata.namespace ?? defaultNamespace}/${fn.metadata.name}`;
      const first = files.get(key);
      if (first) {
        errors.push(`${where}: LambdaFunction ${key} is already defined in ${first}; ignored`);
        return;
      }
      files.set(key, name);
      functions.push({ fn, file: name });
    });
    if (errors.length > 0) invalid.set(name, errors);
  }
  return { functions, invalid, folderRead: true };
}
