/** One entry of a tar archive built by {@link writeTar}. */
export type TarEntry =
  | { type: "dir"; path: string; mode?: number }
  | { type: "file"; path: string; data: Buffer; mode?: number }
  | { type: "symlink"; path: string; target: string };

/**
 * Writes a POSIX ustar archive (enough for image layers in tests: directories,
 * regular files, symlinks; paths up to 100 bytes, owned by root).
 */
export function writeTar(entries: TarEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const h = Buffer.alloc(512);
    const name = e.type === "dir" && !e.path.endsWith("/") ? `${e.path}/` : e.path;
    if (Buffer.byteLength(name) > 100) throw new Error(`tar path too long: ${name}`);
    const size = e.type === "file" ? e.data.length : 0;
    const mode = e.type === "symlink" ? 0o777 : (e.mode ?? (e.type === "dir" ? 0o755 : 0o644));
    h.write(name, 0, 100, "utf8");
    h.write(octal(mode, 8), 100);
    h.write(octal(0, 8), 108);
    h.write(octal(0, 8), 116);
    h.write(octal(size, 12), 124);
    h.write(octal(0, 12), 136);
    h.fill(" ", 148, 156); // checksum placeholder
    h.write(e.type === "dir" ? "5" : e.type === "symlink" ? "2" : "0", 156);
    if (e.type === "symlink") h.write(e.target, 157, 100, "utf8");
    h.write("ustar\u0000", 257);
    h.write("00", 263);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, "0")}\u0000 `, 148);
    blocks.push(h);
    if (e.type === "file") {
      blocks.push(e.data);
      const pad = (512 - (e.data.length % 512)) % 512;
      if (pad) blocks.push(Buffer.alloc(pad));
    }
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

function octal(n: number, width: number): string {
  return `${n.toString(8).padStart(width - 1, "0")}\u0000`;
}
