import type { Logger } from "@esb/common";
import type { Registry } from "prom-client";
import type { Runtime } from "../runtime/runtime.js";
import { FunctionLogRecords, type FunctionLogRecord } from "./function-log-records.js";
import type { LogShippingConfig } from "./log-shipping-config.js";
import { VictoriaLogsShipper } from "./victoria-logs-shipper.js";

/** Options of {@link WorkerLogShipping}. */
export interface WorkerLogShippingOptions {
  runtime: Pick<Runtime, "onWorkerLog">;
  node: string;
  /** "namespace/name" of a worker's function (the agent's pools know it). */
  functionOf: (workerId: string) => string | undefined;
  /** The log store; undefined = records go to {@link WorkerLogShipping.onRecord} listeners only. */
  config?: LogShippingConfig;
  registry?: Registry;
  logger?: Logger;
}

/**
 * The agent's worker logs: every line a worker writes (the runtime reads its
 * stdout and stderr) becomes a {@link FunctionLogRecord} with its function,
 * node, worker, request id and version; records go to VictoriaLogs when one is
 * configured, and to local listeners (`esb up`'s terminal).
 */
export class WorkerLogShipping {
  private readonly records: FunctionLogRecords;
  private readonly shipper?: VictoriaLogsShipper;
  private readonly listeners = new Set<(r: FunctionLogRecord) => void>();
  private readonly unsubscribe: () => void;

  constructor(opts: WorkerLogShippingOptions) {
    this.records = new FunctionLogRecords({ node: opts.node, functionOf: opts.functionOf });
    if (opts.config) {
      this.shipper = new VictoriaLogsShipper({
        url: opts.config.url,
        username: opts.config.username,
        password: opts.config.password,
        maxBufferedLines: opts.config.maxBufferedLines,
        registry: opts.registry,
        logger: opts.logger?.child({ component: "log-shipper" }),
      });
    }
    this.unsubscribe = opts.runtime.onWorkerLog((line) => {
      const record = this.records.record(line);
      this.shipper?.push(record);
      for (const l of this.listeners) l(record);
    });
  }

  /** True when lines go to a log store. */
  get shipping(): boolean {
    return this.shipper !== undefined;
  }

  /** Calls `listener` with every record; returns the unsubscribe function. */
  onRecord(listener: (record: FunctionLogRecord) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Stops listening and ships what is buffered (at most `timeoutMs`). */
  async close(timeoutMs?: number): Promise<void> {
    this.unsubscribe();
    this.listeners.clear();
    await this.shipper?.close(timeoutMs);
  }
}
