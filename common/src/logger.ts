import { pino, type Logger, type LoggerOptions } from "pino";

/**
 * Creates the structured (JSON, one event per line) logger every ESB component
 * uses. The level comes from `ESB_LOG_LEVEL` (default `info`); `component` is
 * added to every line.
 */
export function createLogger(component: string, options: LoggerOptions = {}): Logger {
  return pino({
    level: process.env.ESB_LOG_LEVEL ?? "info",
    base: { component },
    timestamp: pino.stdTimeFunctions.isoTime,
    ...options,
  });
}

export type { Logger } from "pino";
