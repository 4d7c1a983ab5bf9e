import type { ServerResponse } from "node:http";

/** AWS Lambda error types the gateway answers with, and their HTTP status. */
export const LAMBDA_ERROR_STATUS = {
  ResourceNotFoundException: 404,
  ResourceConflictException: 409,
  InvalidRequestContentException: 400,
  InvalidParameterValueException: 400,
  RequestTooLargeException: 413,
  /** CreateFunction/UpdateFunctionCode: the request (the base64 zip) or the zip is over AWS's limit. */
  RequestEntityTooLargeException: 413,
  /** A RevisionId that is no longer the function's. */
  PreconditionFailedException: 412,
  /** GetProvisionedConcurrencyConfig of a function that has none. */
  ProvisionedConcurrencyConfigNotFoundException: 404,
  TooManyRequestsException: 429,
  ServiceException: 500,
  UnsupportedMediaTypeException: 415,
  /** A path under the Lambda API's prefixes that names no operation ESB serves, or a wrong method. */
  UnknownOperationException: 404,
  /** SigV4 verification (gateway auth on): no signature, unknown key, wrong or expired signature. */
  MissingAuthenticationTokenException: 403,
  IncompleteSignatureException: 403,
  UnrecognizedClientException: 403,
  InvalidSignatureException: 403,
  /** The caller's key may not invoke functions of that namespace. */
  AccessDeniedException: 403,
} as const;

/** One of {@link LAMBDA_ERROR_STATUS}'s keys. */
export type LambdaErrorType = keyof typeof LAMBDA_ERROR_STATUS;

/**
 * An error of the Lambda API in AWS's shape: the type goes in the
 * `x-amzn-errortype` header (which the AWS SDKs read first to pick the exception
 * class) and the body is `{"Type": "User"|"Service", "message": ...}`.
 */
export class LambdaApiError extends Error {
  override name = "LambdaApiError";
  /** HTTP status AWS uses for this type. */
  readonly statusCode: number;

  constructor(
    readonly type: LambdaErrorType,
    message: string,
    /** Extra body fields, e.g. `Reason` for TooManyRequestsException. */
    readonly extra: Record<string, string> = {},
    /** Seconds the caller should wait (TooManyRequestsException's `Retry-After`). */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.statusCode = LAMBDA_ERROR_STATUS[type];
  }

  /** Writes the error as the response, closing the connection if the request body was not read. */
  send(res: ServerResponse, requestId: string, closeConnection = false): void {
    const body = JSON.stringify({
      Type: this.statusCode >= 500 ? "Service" : "User",
      message: this.message,
      ...this.extra,
    });
    const headers: Record<string, string | number> = {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
      "x-amzn-errortype": this.type,
      "x-amzn-requestid": requestId,
    };
    if (this.retryAfterSeconds !== undefined) headers["retry-after"] = this.retryAfterSeconds;
    if (closeConnection) headers.connection = "close";
    res.writeHead(this.statusCode, headers);
    res.end(body);
  }
}
