/**
 * The AWS settings every worker gets besides the Lambda variables: where the
 * data services (S3, DynamoDB) are and the credentials functions sign their
 * calls with. The AWS SDKs read these variables natively, so a function calls
 * the local services with unchanged code.
 */

/** What the agent injects into every worker's environment. */
export interface WorkerAwsEnv {
  /**
   * `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_DYNAMODB`: defaults that a
   * function's own variables override (they are not reserved on Lambda either).
   */
  endpoints: Record<string, string>;
  /**
   * `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`: reserved,
   * as on Lambda (where they hold the execution role's credentials); a function
   * cannot set them.
   */
  credentials: Record<string, string>;
}

/** The agent variables {@link loadWorkerAwsEnv} reads, with their meaning (for --help). */
export const WORKER_AWS_ENV_HELP: [string, string][] = [
  ["WORKER_AWS_ENDPOINT_URL_S3", "S3 endpoint workers use (AWS_ENDPOINT_URL_S3; default: none, i.e. AWS)"],
  [
    "WORKER_AWS_ENDPOINT_URL_DYNAMODB",
    "DynamoDB endpoint workers use (AWS_ENDPOINT_URL_DYNAMODB; default: none, i.e. AWS)",
  ],
  ["WORKER_AWS_ACCESS_KEY_ID", "access key id workers get as AWS_ACCESS_KEY_ID (with the secret below)"],
  ["WORKER_AWS_SECRET_ACCESS_KEY", "secret workers get as AWS_SECRET_ACCESS_KEY"],
  ["WORKER_AWS_SESSION_TOKEN", "session token workers get as AWS_SESSION_TOKEN (optional)"],
];

/** A bad WORKER_AWS_* variable; the message names it. */
export class WorkerAwsEnvError extends Error {
  override name = "WorkerAwsEnvError";
}

/**
 * Reads the WORKER_AWS_* variables (see {@link WORKER_AWS_ENV_HELP}). An
 * endpoint must be an http(s) URL without credentials; a key id needs its
 * secret and the other way round; a session token needs both. Throws
 * {@link WorkerAwsEnvError} naming the variable otherwise.
 */
export function loadWorkerAwsEnv(env: NodeJS.ProcessEnv): WorkerAwsEnv {
  const endpoints: Record<string, string> = {};
  for (const service of ["S3", "DYNAMODB"]) {
    const name = `WORKER_AWS_ENDPOINT_URL_${service}`;
    const raw = env[name];
    if (!raw) continue;
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new WorkerAwsEnvError(`${name}="${raw}" is not a URL such as http://10.88.0.1:4510`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:")
      throw new WorkerAwsEnvError(`${name}="${raw}" must be an http or https URL`);
    // Functions see this variable: a secret in it would reach every function's code and logs.
    if (url.username || url.password)
      throw new WorkerAwsEnvError(`${name} must not carry credentials; use WORKER_AWS_ACCESS_KEY_ID`);
    endpoints[`AWS_ENDPOINT_URL_${service}`] = raw;
  }
  const id = env.WORKER_AWS_ACCESS_KEY_ID ?? "";
  const secret = env.WORKER_AWS_SECRET_ACCESS_KEY ?? "";
  const token = env.WORKER_AWS_SESSION_TOKEN ?? "";
  if (Boolean(id) !== Boolean(secret))
    throw new WorkerAwsEnvError(
      "WORKER_AWS_ACCESS_KEY_ID and WORKER_AWS_SECRET_ACCESS_KEY must be set together",
    );
  if (token && !id)
    throw new WorkerAwsEnvError("WORKER_AWS_SESSION_TOKEN needs WORKER_AWS_ACCESS_KEY_ID and the secret");
  const credentials: Record<string, string> = {};
  if (id) {
    credentials.AWS_ACCESS_KEY_ID = id;
    credentials.AWS_SECRET_ACCESS_KEY = secret;
    if (token) credentials.AWS_SESSION_TOKEN = token;
  }
  return { endpoints, credentials };
}
