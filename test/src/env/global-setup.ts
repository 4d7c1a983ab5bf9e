// jest globalSetup: start (or reuse) the real test environment once per run.
import { startTestEnvironment } from "./test-environment.js";

/**
 * Called by jest before any test file; see {@link startTestEnvironment}. Components
 * under test log errors only unless ESB_LOG_LEVEL says otherwise (the workers jest
 * starts next inherit this environment), so that a passing run stays readable.
 */
export default async function globalSetup(): Promise<void> {
  process.env.ESB_LOG_LEVEL ??= "error";
  await startTestEnvironment();
}
