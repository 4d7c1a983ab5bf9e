import { createReadStream } from "node:fs";
import { Readable } from "node:stream";

/** One entry of a tar archive. Paths are relative (no leading `/`), `/`-separated. */
export type TarEntry =
  | {
      type: "file";
      path: string;
      /** Permission bits (e.g. 0o644); setuid/setgid/sticky bits are kept. */
      mode: number;
      uid?: number;
      gid?: number;
      /** Exactly one of `content` (bytes in memory) or `sourcePath` (a host file read when the archive is written). */
      content?: Buffer;
      sourcePath?: string;
      /** Size of `sourcePath` in bytes; required with `sourcePath` (the header is written before the data). */
      size?: number;
    }
  | { type: "directory"; path: string; mode: number; uid?: number; gid?: number }
  | { type: "symlink"; path: string; target: string; uid?: number; gid?: number };

/** Options shared by every entry of one archive. */
export interface TarOptions {
  /** Modification time written into every header, in seconds since the epoch (default 0) — fixed so archives are reproducible. */
  mtime?: number;
}

const BLOCK = 512;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

/**
 * Streams a POSIX ustar archive (with pax extended headers for long or
 * non-ASCII names) of `entries`, in the given order. The output depends only
 * on the entries and `options`, so identical inputs give byte-identical
 * archives (and therefore identical digests).
 *
 * A `sourcePath` file whose size differs from the declared `size` when it is
 * read makes the stream fail rather than produce a corrupt archive.
 */
export function tarStream(entries: readonly TarEntry[], options: TarOptions = {}): Readable {
  return Readable.from(tarChunks(entries, options), { objectMode: false });
}

async function* tarChunks(entries: readonly TarEntry[], options: TarOptions): AsyncGenerator<Buffer> {
  const mtime = options.mtime ?? 0;
  for (const entry of entries) {
    const path = entry.type === "directory" && !entry.path.endsWith("/") ? `${entry.path}/` : entry.path;
    if (path === "" || path.startsWith("/"))
      throw new Error(`tar entry path must be relative and non-empty: "${entry.path}"`);
    let size = 0;
    let mode: number;
    let typeflag: string;
    let linkname = "";
    switch (entry.type) {
      case "file":
        if ((entry.content === undefined) === (entry.sourcePath === undefined)) {
          throw new Error(`tar entry ${path}: give exactly one of content or sourcePath`);
        }
        if (entry.content !== undefined) size = entry.content.length;
        else if (entry.size === undefined)
          throw new Error(`tar entry ${path}: size is required with sourcePath`);
        else size = entry.size;
        mode = entry.mode;
        typeflag = "0";
        break;
      case "directory":
        mode = entry.mode;
        typeflag = "5";
        break;
      case "symlink":
        mode = 0o777;
        typeflag = "2";
        linkname = entry.target;
        break;
    }
    yield* headerBlocks({
      path,
      mode,
      uid: entry.uid ?? 0,
      gid: entry.gid ?? 0,
      size,
      mtime,
      typeflag,
      linkname,
    });
    if (entry.type !== "file") continue;
    if (entry.content !== undefined) {
      yield entry.content;
    } else {
      let read = 0;
      for await (const chunk of createReadStream(entry.sourcePath!)) {
        const buf = chunk as Buffer;
        read += buf.length;
        if (read > size)
          throw new Error(`tar entry ${path}: ${entry.sourcePath} grew while it was being archived`);
        yield buf;
      }
      if (read !== size)
        throw new Error(`tar entry ${path}: ${entry.sourcePath} shrank while it was being archived`);
    }
    const pad = (BLOCK - (size % BLOCK)) % BLOCK;
    if (pad > 0) yield Buffer.alloc(pad);
  }
  // End of archive: two zero blocks.
  yield ZERO_BLOCK;
  yield ZERO_BLOCK;
}

interface Header {
  path: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: string;
}

function* headerBlocks(h: Header): Generator<Buffer> {
  const pax: Record<string, string> = {};
  let name = h.path;
  let prefix = "";
  if (!fitsUstar(h.path, 100)) {
    const split = splitPrefix(h.path);
    if (split) [prefix, name] = split;
    else {
      pax.path = h.path;
      name = asciiTail(h.path, 100);
    }
  }
  let linkname = h.linkname;
  if (!fitsUstar(linkname, 100)) {
    pax.linkpath = linkname;
    linkname = asciiTail(linkname, 100);
  }
  if (Object.keys(pax).length > 0) {
    const body = Buffer.from(
      Object.entries(pax)
        .map(([k, v]) => paxRecord(k, v))
        .join(""),
      "utf8",
    );
    yield ustarHeader({
      name: asciiTail(`PaxHeader/${h.path.replace(/\/$/, "").split("/").pop() ?? "x"}`, 100),
      prefix: "",
      mode: 0o644,
      uid: 0,
      gid: 0,
      size: body.length,
      mtime: h.mtime,
      typeflag: "x",
      linkname: "",
    });
    yield body;
    const pad = (BLOCK - (body.length % BLOCK)) % BLOCK;
    if (pad > 0) yield Buffer.alloc(pad);
  }
  yield ustarHeader({ ...h, name, prefix, linkname });
}

/** A pax record is "<len> <key>=<value>\n" where <len> counts the whole record, itself included. */
function paxRecord(key: string, value: string): string {
  const rest = ` ${key}=${value}\n`;
  const restLen = Buffer.byteLength(rest, "utf8");
  let len = restLen + 1;
  while (String(len).length + restLen !== len) len = String(len).length + restLen;
  return `${len}${rest}`;
}

function fitsUstar(s: string, max: number): boolean {
  return Buffer.byteLength(s, "utf8") <= max && /^[\x20-\x7e]*$/.test(s);
}

/** Splits a long path into ustar prefix (≤155) and name (≤100) at a `/`, if possible. */
function splitPrefix(path: string): [string, string] | undefined {
  if (!/^[\x20-\x7e]*$/.test(path)) return undefined;
  for (let i = path.length - 1; i > 0; i--) {
    if (path[i] !== "/") continue;
    const prefix = path.slice(0, i);
    const name = path.slice(i + 1);
    if (prefix.length <= 155 && name.length <= 100 && name.length > 0) return [prefix, name];
    if (name.length > 100) return undefined;
  }
  return undefined;
}

function asciiTail(s: string, max: number): string {
  const ascii = s.replace(/[^\x20-\x7e]/g, "_");
  return ascii.length <= max ? ascii : ascii.slice(ascii.length - max);
}

function ustarHeader(h: Omit<Header, "path"> & { name: string; prefix: string }): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.write(h.name, 0, 100, "ascii");
  writeOctal(b, h.mode & 0o7777, 100, 8);
  writeOctal(b, h.uid, 108, 8);
  writeOctal(b, h.gid, 116, 8);
  writeOctal(b, h.size, 124, 12);
  writeOctal(b, h.mtime, 136, 12);
  b.fill(0x20, 148, 156); // checksum is computed with its own field as spaces
  b.write(h.typeflag, 156, 1, "ascii");
  b.write(h.linkname, 157, 100, "ascii");
  b.write("ustar\0", 257, 6, "ascii");
  b.write("00", 263, 2, "ascii");
  b.write(h.uid === 0 ? "root" : "", 265, 32, "ascii");
  b.write(h.gid === 0 ? "root" : "", 297, 32, "ascii");
  writeOctal(b, 0, 329, 8);
  writeOctal(b, 0, 337, 8);
  b.write(h.prefix, 345, 155, "ascii");
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i];
  b.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8, "ascii");
  return b;
}

function writeOctal(b: Buffer, value: number, offset: number, length: number): void {
  const digits = value.toString(8);
  if (!Number.isSafeInteger(value) || value < 0 || digits.length > length - 1) {
    throw new Error(`tar header value ${value} does not fit in ${length - 1} octal digits`);
  }
  b.write(digits.padStart(length - 1, "0") + "\0", offset, length, "ascii");
}
