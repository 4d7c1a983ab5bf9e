import {
  LOGSQL_DURATION,
  VictoriaLogsClient,
  type FunctionLogQuery,
  type StoredLogLine,
} from "@esb/common/victoria-logs-query";
import { readLogStoreConnection, type LogStoreConnection } from "./log-store.js";

/** Options of `esb logs`. */
export interface LogsCommandOptions {
  /** A bare name (namespace `default`) or `namespace/name`. */
  function: string;
  /** LogsQL duration of the history shown, e.g. `10m`. */
  since: string;
  requestId?: string;
  /** Keep printing new lines until `signal` aborts. */
  follow: boolean;
  /** One JSON object per line instead of readable lines. */
  json: boolean;
  /** Most history lines (the newest). */
  limit: number;
  connection: LogStoreConnection;
  /** Receives each output line (without newline). */
  out: (line: string) => void;
  signal?: AbortSignal;
}

/** Bad `esb logs` arguments or no store to read; the message says what to do. */
export class LogsCommandError extends Error {
  override name = "LogsCommandError";
}

/**
 * The log store `esb logs` reads: `--logs-url` (with ESB_LOGS_USERNAME /
 * ESB_LOGS_PASSWORD) when given, else the one a running `esb up` on
 * `stateDir` wrote down.
 */
export function logsConnection(
  url: string | undefined,
  stateDir: string,
  env: NodeJS.ProcessEnv = process.env,
): LogStoreConnection {
  if (url)
    return {
      url,
      username: env.ESB_LOGS_USERNAME || undefined,
      password: env.ESB_LOGS_PASSWORD || undefined,
    };
  const found = readLogStoreConnection(stateDir);
  if (!found)
    throw new LogsCommandError(
      `no log store found in ${stateDir}: is esb up running there (as root, with logs on)? Or name one with --logs-url`,
    );
  return found;
}

/** "namespace/name" of a function argument (a bare name is in `default`, as the gateway resolves it). */
export function functionRef(name: string): string {
  const parts = name.split("/");
  if (parts.length > 2 || parts.some((p) => !p))
    throw new LogsCommandError(`"${name}" is not a function name or namespace/name`);
  return parts.length === 2 ? name : `default/${name}`;
}

/** One stored line for people: UTC time with milliseconds, then the line as the worker wrote it. */
export function formatLogLine(line: StoredLogLine): string {
  // VictoriaLogs trims trailing zeros of the fraction (…:04.16Z): pad or cut it to three digits.
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?Z$/.exec(line.time);
  const time = m ? `${m[1]}.${(m[2] ?? "").padEnd(3, "0").slice(0, 3)}Z` : line.time;
  return `${time} ${line.message}`;
}

/** Prints the history (and with `follow`, new lines as they come); resolves with the number of lines printed. */
export async function runLogsCommand(opts: LogsCommandOptions): Promise<number> {
  if (!LOGSQL_DURATION.test(opts.since))
    throw new LogsCommandError(`--since "${opts.since}" is not a duration such as 30s, 10m, 2h or 1d`);
  const client = new VictoriaLogsClient(opts.connection);
  const query: FunctionLogQuery = {
    function: functionRef(opts.function),
    since: opts.since,
    requestId: opts.requestId,
    limit: opts.limit,
  };
  const print = (l: StoredLogLine) => opts.out(opts.json ? JSON.stringify(l) : formatLogLine(l));
  const history = await client.query(query);
  history.forEach(print);
  let n = history.length;
  if (!opts.follow) return n;
  const signal = opts.signal ?? new AbortController().signal;
  for await (const line of client.tail(query, signal, history.at(-1)?.time)) {
    print(line);
    n++;
  }
  return n;
}
