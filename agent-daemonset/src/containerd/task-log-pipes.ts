import { execFile } from "node:child_process";
import { constants, openSync } from "node:fs";
import { access, mkdir, rm } from "node:fs/promises";
import { Socket } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import type { WorkerLogLine } from "../runtime/runtime.js";

const run = promisify(execFile);
/** Longest line passed on; longer output is split (keeps memory bounded). */
const MAX_LINE = 64 * 1024;

/**
 * The stdout/stderr FIFOs of worker tasks, under `<stateDir>/<id>/`. containerd's
 * shim writes the task's output into them; this side reads them line by line.
 * The FIFOs are opened read-write and non-blocking, so opening never waits for
 * the shim and a shim restart does not end the stream; they are closed on {@link close}.
 */
export class TaskLogPipes {
  private readonly open = new Map<string, Socket[]>();

  constructor(
    private readonly stateDir: string,
    private readonly emit: (line: WorkerLogLine) => void,
  ) {}

  /** Paths of the worker's FIFOs. */
  paths(id: string): { dir: string; stdout: string; stderr: string } {
    const dir = join(this.stateDir, id);
    return { dir, stdout: join(dir, "stdout"), stderr: join(dir, "stderr") };
  }

  /** Creates (if needed) and starts reading the worker's FIFOs; returns their paths. */
  async attach(id: string): Promise<{ stdout: string; stderr: string }> {
    const p = this.paths(id);
    if (this.open.has(id)) return p;
    await mkdir(p.dir, { recursive: true, mode: 0o700 });
    for (const f of [p.stdout, p.stderr]) {
      if (!(await exists(f))) await run("mkfifo", ["-m", "600", f]);
    }
    this.open.set(id, [this.read(id, "stdout", p.stdout), this.read(id, "stderr", p.stderr)]);
    return p;
  }

  /** Reattaches to FIFOs left by a previous agent process, when they exist. */
  async reattach(id: string): Promise<void> {
    if (this.open.has(id)) return;
    const p = this.paths(id);
    if ((await exists(p.stdout)) && (await exists(p.stderr))) await this.attach(id);
  }

  /** Stops reading and removes the worker's FIFOs. */
  async remove(id: string): Promise<void> {
    this.detach(id);
    await rm(this.paths(id).dir, { recursive: true, force: true });
  }

  /** Stops reading every FIFO (files stay). */
  close(): void {
    for (const id of [...this.open.keys()]) this.detach(id);
  }

  private detach(id: string): void {
    for (const s of this.open.get(id) ?? []) s.destroy();
    this.open.delete(id);
  }

  private read(id: string, stream: "stdout" | "stderr", path: string): Socket {
    const fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
    const sock = new Socket({ fd, readable: true, writable: false });
    let rest = "";
    sock.setEncoding("utf8");
    sock.on("data", (chunk: string) => {
      rest += chunk;
      let nl: number;
      while ((nl = rest.indexOf("\n")) >= 0) {
        this.emit({ id, stream, line: rest.slice(0, nl) });
        rest = rest.slice(nl + 1);
      }
      if (rest.length > MAX_LINE) {
        this.emit({ id, stream, line: rest });
        rest = "";
      }
    });
    sock.on("error", () => undefined);
    return sock;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
