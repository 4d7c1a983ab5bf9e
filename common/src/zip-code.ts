import { createHash } from "node:crypto";
import { chmod, mkdir, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import yauzl, { type Entry, type ZipFile } from "yauzl";
import { isValidCodeFileName } from "./lambda-function-validation.js";

/** AWS Lambda's code limits, which ESB keeps (Lambda quotas: "Deployment package (.zip file archive) size"). */
export const ZIP_LIMITS = {
  /** Zipped size of a direct upload (ZipFile): 50 MB. */
  maxZippedBytes: 50 * 1024 * 1024,
  /** Sum of the uncompressed sizes: 250 MB. */
  maxUnzippedBytes: 250 * 1024 * 1024,
  /** The request body of CreateFunction/UpdateFunctionCode (the base64 zip in JSON), as AWS states it. */
  maxRequestBytes: 70_167_211,
  /** Entries in one archive; far beyond any real function, it bounds the work a crafted zip causes. */
  maxEntries: 100_000,
} as const;

/** One regular file of a deployment package. */
export interface ZipFileEntry {
  /** Path relative to /var/task (checked: no leading '/', no '.' or '..' segments). */
  name: string;
  /** True when any execute bit is set in the zip's Unix mode (e.g. a `provided` runtime's `bootstrap`). */
  executable: boolean;
  data: Buffer;
}

/** What a zip held, with AWS's CodeSha256 (base64 sha256 of the zip) and CodeSize (zipped bytes). */
export interface ZipSummary {
  codeSha256: string;
  codeSize: number;
  /** Uncompressed bytes of all files. */
  unzippedSize: number;
  files: number;
}

/**
 * A deployment package refused, with the AWS Lambda error type that CreateFunction answers for
 * it (the controller reports the message as the function's InvalidCode reason).
 */
export class ZipCodeError extends Error {
  override name = "ZipCodeError";
  constructor(
    readonly awsType: "InvalidParameterValueException" | "RequestEntityTooLargeException",
    message: string,
  ) {
    super(message);
  }
}

const notAZip = () =>
  new ZipCodeError(
    "InvalidParameterValueException",
    "Could not unzip uploaded file. Please check your file, then try to upload again.",
  );

function badEntry(name: string, why: string): ZipCodeError {
  return new ZipCodeError("InvalidParameterValueException", `Zip entry ${JSON.stringify(name)} ${why}.`);
}

/**
 * Reads a deployment package safely and hands each regular file to `visit`, one at a time: the
 * one zip reader of ESB (the gateway's CreateFunction, the controller's `configMap.zipKey`).
 * Refused with a {@link ZipCodeError} carrying AWS's error: not a zip (InvalidParameterValueException "Could not unzip uploaded
 * file…"), larger than 50 MB zipped (RequestEntityTooLargeException) or 250 MB unzipped
 * (InvalidParameterValueException "Unzipped size must be smaller than 262144000 bytes"), an entry
 * whose name leaves the code folder (absolute, `..`, backslashes, characters outside letters,
 * digits, `._-/`), a symbolic link, or an encrypted entry. The declared sizes are checked before
 * anything is inflated, and yauzl checks that each entry inflates to exactly its declared size, so
 * a zip bomb costs no more than the limits.
 */
export async function readZipCode(
  zip: Buffer,
  visit: (file: ZipFileEntry) => Promise<void>,
): Promise<ZipSummary> {
  if (zip.length > ZIP_LIMITS.maxZippedBytes)
    throw new ZipCodeError(
      "RequestEntityTooLargeException",
      `Zipped size must be smaller than ${ZIP_LIMITS.maxZippedBytes} bytes`,
    );
  let archive: ZipFile;
  try {
    archive = await yauzl.fromBufferPromise(zip, {
      lazyEntries: true,
      validateEntrySizes: true,
      strictFileNames: true,
    });
  } catch {
    throw notAZip();
  }
  try {
    if (archive.entryCount > ZIP_LIMITS.maxEntries)
      throw new ZipCodeError(
        "InvalidParameterValueException",
        `The zip has ${archive.entryCount} entries; at most ${ZIP_LIMITS.maxEntries} are accepted.`,
      );
    const entries = await listEntries(archive);
    let declared = 0;
    for (const e of entries) declared += e.uncompressedSize;
    if (declared > ZIP_LIMITS.maxUnzippedBytes)
      throw new ZipCodeError(
        "InvalidParameterValueException",
        `Unzipped size must be smaller than ${ZIP_LIMITS.maxUnzippedBytes} bytes`,
      );
    let files = 0;
    for (const entry of entries) {
      const name = entry.fileName;
      const mode = (entry.externalFileAttributes >>> 16) & 0o170777;
      const isDir = name.endsWith("/");
      const path = isDir ? name.slice(0, -1) : name;
      if (yauzl.validateFileName(name) !== null || !isValidCodeFileName(path))
        throw badEntry(
          name,
          "is not a relative path inside the code folder (letters, digits, '.', '_', '-', '/')",
        );
      if (entry.isEncrypted()) throw badEntry(name, "is encrypted");
      if ((mode & 0o170000) === 0o120000)
        throw badEntry(name, "is a symbolic link; ESB accepts files and folders only");
      if (isDir) continue;
      const data = await readEntry(archive, entry);
      await visit({ name, executable: (mode & 0o111) !== 0, data });
      files++;
    }
    return {
      codeSha256: createHash("sha256").update(zip).digest("base64"),
      codeSize: zip.length,
      unzippedSize: declared,
      files,
    };
  } finally {
    archive.close();
  }
}

/**
 * Unpacks a deployment package into `dest` (created; must not exist), with the checks of
 * {@link readZipCode}. Files get mode 0644 (0755 when executable), folders 0755, so workers
 * (another uid) can read them and nothing is writable but by the owner. Written to a sibling
 * temporary folder first and renamed: `dest` either holds the whole package or does not exist.
 */
export async function extractZipCode(zip: Buffer, dest: string): Promise<ZipSummary> {
  const tmp = `${dest}.tmp-${process.pid}-${Date.now()}`;
  await mkdir(tmp, { recursive: true, mode: 0o755 });
  try {
    const summary = await readZipCode(zip, async (file) => {
      const path = join(tmp, file.name);
      await mkdir(dirname(path), { recursive: true, mode: 0o755 });
      // 'wx': a second entry of the same name is refused rather than silently replacing the first.
      await writeFile(path, file.data, { flag: "wx", mode: file.executable ? 0o755 : 0o644 }).catch(
        (err: NodeJS.ErrnoException) => {
          if (err.code === "EEXIST" || err.code === "EISDIR")
            throw badEntry(file.name, "appears twice (or as both a file and a folder)");
          throw err;
        },
      );
      // The process umask must not take read bits away from the worker user.
      await chmod(path, file.executable ? 0o755 : 0o644);
    });
    await chmod(tmp, 0o755);
    await rename(tmp, dest);
    return summary;
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

function listEntries(archive: ZipFile): Promise<Entry[]> {
  return new Promise((resolve, reject) => {
    const out: Entry[] = [];
    archive.on("entry", (e: Entry) => {
      out.push(e);
      archive.readEntry();
    });
    archive.on("end", () => resolve(out));
    archive.on("error", () => reject(notAZip()));
    archive.readEntry();
  });
}

async function readEntry(archive: ZipFile, entry: Entry): Promise<Buffer> {
  let stream;
  try {
    stream = await archive.openReadStreamPromise(entry);
  } catch {
    throw notAZip();
  }
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of stream) chunks.push(chunk as Buffer);
  } catch {
    // A corrupt deflate stream, or one that inflates to more than it declared.
    throw notAZip();
  }
  return Buffer.concat(chunks);
}
