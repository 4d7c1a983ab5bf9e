/** Where the agent ships worker logs: VictoriaLogs, with optional HTTP Basic credentials. */
export interface LogShippingConfig {
  /** Base URL of VictoriaLogs (AGENT_LOGS_URL). */
  url: string;
  username?: string;
  password?: string;
  /** Most lines buffered while the store is down (AGENT_LOGS_BUFFER_LINES). */
  maxBufferedLines?: number;
}

/** The agent's log-shipping variables, with their meaning (for --help). */
export const LOG_SHIPPING_ENV_HELP: [string, string][] = [
  [
    "AGENT_LOGS_URL",
    "VictoriaLogs base URL that worker output is shipped to, e.g. http://127.0.0.1:9428 (default: not shipped)",
  ],
  ["AGENT_LOGS_USERNAME", "HTTP Basic user for AGENT_LOGS_URL (VictoriaLogs -httpAuth.username)"],
  ["AGENT_LOGS_PASSWORD", "HTTP Basic password for AGENT_LOGS_URL (VictoriaLogs -httpAuth.password)"],
  [
    "AGENT_LOGS_BUFFER_LINES",
    "worker log lines kept while the log store is down; beyond it the oldest are dropped and counted (default 20000)",
  ],
];

/**
 * Reads AGENT_LOGS_*; undefined when AGENT_LOGS_URL is unset. Throws an Error
 * naming the bad variable (the caller turns it into its configuration error).
 */
export function logShippingConfig(env: NodeJS.ProcessEnv): LogShippingConfig | undefined {
  const raw = env.AGENT_LOGS_URL;
  if (!raw) return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`AGENT_LOGS_URL="${raw}" is not a URL such as http://victoria-logs:9428`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw new Error(`AGENT_LOGS_URL="${raw}" must be an http:// or https:// URL`);
  if (url.username || url.password)
    throw new Error(
      "AGENT_LOGS_URL must not hold credentials: set AGENT_LOGS_USERNAME and AGENT_LOGS_PASSWORD",
    );
  let maxBufferedLines: number | undefined;
  if (env.AGENT_LOGS_BUFFER_LINES) {
    maxBufferedLines = Number(env.AGENT_LOGS_BUFFER_LINES);
    if (!Number.isInteger(maxBufferedLines) || maxBufferedLines < 1 || maxBufferedLines > 10_000_000)
      throw new Error(
        `AGENT_LOGS_BUFFER_LINES="${env.AGENT_LOGS_BUFFER_LINES}" must be a whole number of lines, 1 to 10000000`,
      );
  }
  if (env.AGENT_LOGS_PASSWORD && !env.AGENT_LOGS_USERNAME)
    throw new Error("AGENT_LOGS_PASSWORD is set but AGENT_LOGS_USERNAME is not");
  return {
    url: raw.replace(/\/+$/, ""),
    username: env.AGENT_LOGS_USERNAME || undefined,
    password: env.AGENT_LOGS_PASSWORD || undefined,
    maxBufferedLines,
  };
}
