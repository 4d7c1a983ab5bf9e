import { readFileSync } from "node:fs";
import { InvalidArgumentError } from "commander";
import type { AwsCredentials, DataServiceSetting } from "./data-services.js";

/** Parses `--s3` / `--dynamodb`: `embedded`, `off`, or an http(s) URL of an existing endpoint. */
export function dataServiceSetting(value: string): DataServiceSetting {
  if (value === "embedded" || value === "off") return value;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError("embedded, off, or an http(s) URL such as http://10.0.0.5:8000");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw new InvalidArgumentError("the endpoint must be an http or https URL");
  if (url.username || url.password)
    throw new InvalidArgumentError(
      "the URL must not carry credentials (functions see it); use --worker-aws-credentials",
    );
  return { url: value };
}

/**
 * The `[default]` profile of an AWS shared-credentials file (what `aws
 * configure` writes): the credentials workers get instead of the local
 * services' own. Throws an InvalidArgumentError naming the file and the missing key.
 */
export function readWorkerCredentials(file: string): AwsCredentials {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new InvalidArgumentError(`--worker-aws-credentials: ${(err as Error).message}`);
  }
  const start = text.search(/^\s*\[default\]\s*$/m);
  const section = start < 0 ? "" : text.slice(start).split(/^\s*\[(?!default\])/m)[0];
  const value = (key: string) => new RegExp(`^\\s*${key}\\s*=\\s*(\\S+)`, "m").exec(section)?.[1];
  const accessKeyId = value("aws_access_key_id");
  const secretAccessKey = value("aws_secret_access_key");
  if (!accessKeyId || !secretAccessKey)
    throw new InvalidArgumentError(
      `--worker-aws-credentials: ${file} has no [default] profile with aws_access_key_id and aws_secret_access_key`,
    );
  return { accessKeyId, secretAccessKey, sessionToken: value("aws_session_token") };
}
