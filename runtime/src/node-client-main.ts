// Entry point of the Node.js runtime client inside a worker (`/var/runtime/bootstrap` runs
// `node /var/runtime/esb/node-client-main.js`). Handler from _HANDLER (or the first argument),
// code from LAMBDA_TASK_ROOT (default /var/task), Runtime API from AWS_LAMBDA_RUNTIME_API.
// Booted ahead of its function in a generic sandbox, it first reads its environment from
// stdin (see sandbox-standby.ts).
import { NodeRuntimeClient } from "./node-client.js";
import { readStandbyEnvironment } from "./sandbox-standby.js";

async function main(): Promise<void> {
  await readStandbyEnvironment();
  const handler = process.argv[2] || process.env._HANDLER;
  if (handler) process.env._HANDLER = handler;
  await new NodeRuntimeClient({ handler }).run();
}

main().catch((err: unknown) => {
  process.stderr.write(`esb node runtime client failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
