// jest globalTeardown: stop the test environment if the global setup started it.
import { stopTestEnvironment } from "./test-environment.js";

/** Called by jest after every test file; see {@link stopTestEnvironment}. */
export default async function globalTeardown(): Promise<void> {
  await stopTestEnvironment();
}
