import { existsSync, readFileSync } from "node:fs";

/** Warnings and errors of one component's log, grouped by message. */
export interface LogWarning {
  log: string;
  level: "warn" | "error" | "fatal";
  /** The log line's `msg`, with its `reason` or `err` cut to 100 characters when present. */
  message: string;
  count: number;
}

/**
 * Groups the pino lines at warn level and above of each log file (name →
 * path) by message, most frequent first, at most `limit` per log. What a run
 * survived without a failed check still shows here (a worker start that
 * failed, a release that was lost), which is where chaos finds its bugs.
 */
export function summarizeLogs(files: Record<string, string>, limit = 12): LogWarning[] {
  const out: LogWarning[] = [];
  for (const [log, path] of Object.entries(files)) {
    if (!existsSync(path)) continue;
    const groups = new Map<string, LogWarning>();
    for (const line of readFileSync(path, "utf8").split("\n")) {
      if (!line.startsWith("{")) continue;
      let rec: { level?: number; msg?: string; reason?: string; err?: unknown; error?: string };
      try {
        rec = JSON.parse(line) as typeof rec;
      } catch {
        continue;
      }
      if (!rec.level || rec.level < 40) continue;
      const level = rec.level >= 60 ? "fatal" : rec.level >= 50 ? "error" : "warn";
      const why = rec.reason ?? rec.error ?? errText(rec.err);
      // Ids and addresses vary per line: cut them so that one cause is one group.
      const message = `${rec.msg ?? ""}${why ? `: ${why}` : ""}`
        .replace(/[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}/g, "<id>")
        .replace(/-[0-9a-f]{8}\b/g, "-<id>")
        .replace(/\d+\.\d+\.\d+\.\d+(:\d+)?/g, "<ip>")
        .replace(/\d+(\.\d+)? ms\b/g, "<n> ms")
        .slice(0, 160);
      const key = `${level} ${message}`;
      const g = groups.get(key) ?? { log, level, message, count: 0 };
      g.count++;
      groups.set(key, g);
    }
    out.push(...[...groups.values()].sort((a, b) => b.count - a.count).slice(0, limit));
  }
  return out;
}

function errText(err: unknown): string | undefined {
  if (!err) return undefined;
  if (typeof err === "string") return err.slice(0, 100);
  const m = (err as { message?: unknown }).message;
  return typeof m === "string" ? m.slice(0, 100) : undefined;
}
