import {
  extractZipCode as extract,
  readZipCode as read,
  ZipCodeError,
  type ZipFileEntry,
  type ZipSummary,
} from "@esb/common/zip-code";
import { LambdaApiError } from "./lambda-api-error.js";

export { ZIP_LIMITS, type ZipFileEntry, type ZipSummary } from "@esb/common/zip-code";

/** A refused package as the Lambda API's error (the type AWS answers with). */
function asApiError(err: unknown): unknown {
  return err instanceof ZipCodeError ? new LambdaApiError(err.awsType, err.message) : err;
}

/** {@link read} of @esb/common/zip-code, refusals as {@link LambdaApiError}s. */
export async function readZipCode(
  zip: Buffer,
  visit: (file: ZipFileEntry) => Promise<void>,
): Promise<ZipSummary> {
  try {
    return await read(zip, visit);
  } catch (err) {
    throw asApiError(err);
  }
}

/** {@link extract} of @esb/common/zip-code, refusals as {@link LambdaApiError}s. */
export async function extractZipCode(zip: Buffer, dest: string): Promise<ZipSummary> {
  try {
    return await extract(zip, dest);
  } catch (err) {
    throw asApiError(err);
  }
}
