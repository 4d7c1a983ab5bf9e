// jest globalSetup: start (or reuse) the real test environment once per run.
import { startTestEnvironment } from "./test-environment.js";

/** Called by jest before any test file; see {@link startTestEnvironment}. */
export default async function globalSetup(): Promise<void> {
  await startTestEnvironment();
}
