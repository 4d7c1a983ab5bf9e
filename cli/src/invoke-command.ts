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
  const url = `${options.gateway.replace(/\/$/, "")}/2015-03-31/functions/${encodeURIComponent(name)}/invocations`;
  let res: Response;
  try {
    res = await fetch(url, {
      method: "POST",
      body: options.payload,
      headers: {
        "content-type": "application/json",
        "x-amz-invocation-type": options.invocationType,
        ...(options.tail ? { "x-amz-log-type": "Tail" } : {}),
      },
    });
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
