import { pino, type DestinationStream, type Logger, type LoggerOptions } from "pino";

/** Where loggers created from now on write (undefined: standard output). */
let destination: DestinationStream | undefined;

/**
 * Sends the lines of every logger created afterwards to `stream` instead of
 * standard output; `esb up` uses it to keep JSON in a file and show people a
 * readable terminal. Loggers created before keep their destination.
 */
export function setLogDestination(stream: DestinationStream | undefined): void {
  destination = stream;
}

/**
 * Creates the structured (JSON, one event per line) logger every ESB component
 * uses. The level comes from `ESB_LOG_LEVEL` (default `info`); `component` is
 * added to every line.
 */
export function createLogger(component: string, options: LoggerOptions = {}): Logger {
  const settings: LoggerOptions = {
    level: process.env.ESB_LOG_LEVEL ?? "info",
    base: { component },
    timestamp: pino.stdTimeFunctions.isoTime,
    ...options,
  };
  return destination ? pino(settings, destination) : pino(settings);
}

export type { Logger } from "pino";
