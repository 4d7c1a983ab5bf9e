// Entry point of the Node.js runtime client inside a worker (`/var/runtime/bootstrap` runs
// `node /var/runtime/esb/node-client-main.js`). Handler from _HANDLER (or the first argument),
// code from LAMBDA_TASK_ROOT (default /var/task), Runtime API from AWS_LAMBDA_RUNTIME_API.
import { NodeRuntimeClient } from "./node-client.js";

const handler = process.argv[2] || process.env._HANDLER;
if (handler) process.env._HANDLER = handler;
new NodeRuntimeClient({ handler }).run().catch((err: unknown) => {
  process.stderr.write(`esb node runtime client failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
