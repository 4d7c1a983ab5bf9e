import { SignatureV4 } from "@smithy/signature-v4";
import { NodeSha256 } from "@esb/gateway/sigv4-verifier";

/** Options of `esb invoke`. */
export interface InvokeOptions {
  /** Gateway base URL, e.g. http://127.0.0.1:9000. */
  gateway: string;
  /** JSON payload. */
  payload: string;
  /** RequestResponse, Event or DryRun. */
  invocationType: string;
  /** Print the decoded log tail (X-Amz-Log-Type: Tail). */
  tail: boolean;
  /**
   * Sign the request with AWS SigV4 (service `lambda`), as the AWS CLI does,
   * for a gateway that verifies signatures. Absent: unsigned.
   */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Region of the signature's credential scope. Default `us-east-1`. */
  region?: string;
}

/**
 * Credentials from the standard AWS variables (AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), or undefined when unset.
 */
export function credentialsFromEnv(
  env: NodeJS.ProcessEnv = process.env,
): InvokeOptions["credentials"] | undefined {
  const accessKeyId = env.AWS_ACCESS_KEY_ID?.trim();
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY?.trim();
  if (!accessKeyId || !secretAccessKey) return undefined;
  return { accessKeyId, secretAccessKey, sessionToken: env.AWS_SESSION_TOKEN?.trim() || undefined };
}

/** What `esb invoke` prints and its exit code. */
export interface InvokeResult {
  status: number;
  functionError?: string;
  body: string;
  log?: string;
}

/**
 * Invokes a function through the gateway's Lambda Invoke API, as
 * `aws lambda invoke --endpoint-url` would. Throws when the gateway is
 * unreachable, with the URL in the message.
 */
export async function invokeFunction(name: string, options: InvokeOptions): Promise<InvokeResult> {
  const url = new URL(
    `${options.gateway.replace(/\/$/, "")}/2015-03-31/functions/${encodeURIComponent(name)}/invocations`,
  );
  let headers: Record<string, string> = {
    "content-type": "application/json",
    "x-amz-invocation-type": options.invocationType,
    ...(options.tail ? { "x-amz-log-type": "Tail" } : {}),
  };
  if (options.credentials) headers = await signedHeaders(url, headers, options);
  let res: Response;
  try {
    res = await fetch(url, { method: "POST", body: options.payload, headers });
  } catch (err) {
    throw new Error(
      `gateway ${options.gateway} is unreachable (is \`esb up\` running?): ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  const logHeader = res.headers.get("x-amz-log-result");
  return {
    status: res.status,
    functionError: res.headers.get("x-amz-function-error") ?? undefined,
    body: await res.text(),
    log: logHeader ? Buffer.from(logHeader, "base64").toString("utf8") : undefined,
  };
}

/** The headers of a POST to `url` signed with SigV4 by the AWS SDK's own signer. */
async function signedHeaders(
  url: URL,
  headers: Record<string, string>,
  options: InvokeOptions,
): Promise<Record<string, string>> {
  const signer = new SignatureV4({
    service: "lambda",
    region: options.region ?? "us-east-1",
    credentials: options.credentials!,
    sha256: NodeSha256,
  });
  const signed = await signer.sign({
    method: "POST",
    protocol: url.protocol,
    hostname: url.hostname,
    port: url.port ? Number(url.port) : undefined,
    path: url.pathname,
    query: {},
    headers: { ...headers, host: url.host },
    body: options.payload,
  });
  // fetch sets Host itself, from the URL that was signed.
  return Object.fromEntries(Object.entries(signed.headers).filter(([k]) => k.toLowerCase() !== "host"));
}
