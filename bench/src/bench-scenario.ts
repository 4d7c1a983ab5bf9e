import type { BenchEnvironment } from "./bench-environment.js";
import type { BenchResults } from "./bench-results.js";

/** Sample counts and durations of one run (`--quick` shortens them). */
export interface BenchSizes {
  /** Cold starts per runtime. */
  coldStarts: number;
  /** Thaws. */
  thaws: number;
  /** Warm invocations per path. */
  warm: number;
  /** Container-per-request invocations (each ~0.7 s). */
  perRequest: number;
  /** Seconds per throughput run. */
  throughputS: number;
  /** Paused workers in the density scenario. */
  densityWorkers: number;
  /** Seconds over which idle CPU is measured. */
  idleCpuS: number;
  /** Warm-up iterations before timed ones (latency scenarios). */
  warmup: number;
  /** LambdaFunctions created at once in the function-scale scenario. */
  scaleFunctions: number;
}

/** Full run: n ≥ 100 for every latency figure. */
export const FULL_SIZES: BenchSizes = {
  coldStarts: 100,
  thaws: 100,
  warm: 1000,
  perRequest: 100,
  throughputS: 10,
  densityWorkers: 50,
  idleCpuS: 10,
  warmup: 5,
  scaleFunctions: 1000,
};

/** `--quick`: a smoke run of every scenario in about a minute and a half. */
export const QUICK_SIZES: BenchSizes = {
  coldStarts: 10,
  thaws: 20,
  warm: 200,
  perRequest: 3,
  throughputS: 2,
  densityWorkers: 10,
  idleCpuS: 3,
  warmup: 2,
  scaleFunctions: 100,
};

/** What a scenario gets. */
export interface BenchContext {
  env: BenchEnvironment;
  results: BenchResults;
  sizes: BenchSizes;
}

/** One scenario of `make bench`; selected by `--only <id,...>`. */
export interface BenchScenario {
  /** Short id used by `--only`. */
  id: string;
  /** Row names it produces (for `--help`). */
  rows: string[];
  /** Needs the Podman Docker-compatible API. */
  needsPodman?: boolean;
  /** Needs a kube-apiserver (the environment then starts etcd + kube-apiserver too). */
  needsKube?: boolean;
  /** Measures and adds its rows to `ctx.results`. */
  run(ctx: BenchContext): Promise<void>;
}
