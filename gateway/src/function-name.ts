import { LambdaApiError } from "./lambda-api-error.js";

import type { FunctionKey } from "@esb/common";

/** A LambdaFunction, identified by Kubernetes namespace and name (defined with the route table). */
export type { FunctionKey };

const K8S_NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
const K8S_NAMESPACE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** The ARN that ESB shows for a function in messages (account 000000000000). */
export function functionArn(key: FunctionKey, region = "us-east-1"): string {
  return `arn:aws:lambda:${region}:000000000000:function:${key.namespace}/${key.name}`;
}

/**
 * Resolves the `FunctionName` of a Lambda API call (already URL-decoded) and its
 * optional `Qualifier` to a LambdaFunction.
 *
 * Accepted forms, as AWS accepts them: `name`, `name:qualifier`,
 * `account:function:name[:qualifier]` (partial ARN) and
 * `arn:aws:lambda:region:account:function:name[:qualifier]` (full ARN). Region and
 * account are ignored. A bare `name` lives in `defaultNamespace`; a function in
 * another namespace is written `namespace/name` in any of these forms (URL-encoded
 * as `namespace%2Fname` in the path; the AWS SDKs and CLI encode it themselves).
 *
 * A qualifier other than `$LATEST` throws ResourceNotFoundException here; callers that serve
 * versions and aliases use {@link parseFunctionName}.
 */
export function resolveFunctionName(
  raw: string,
  qualifier: string | undefined,
  defaultNamespace: string,
): FunctionKey {
  const { key, qualifier: q } = parseFunctionName(raw, qualifier, defaultNamespace);
  if (q !== undefined)
    throw new LambdaApiError("ResourceNotFoundException", `Function not found: ${functionArn(key)}:${q}`);
  return key;
}

/**
 * {@link resolveFunctionName}'s parsing, keeping a qualifier other than `$LATEST` (a version
 * number or an alias name) for the caller to resolve (see function-versions.ts); `$LATEST` and
 * none give `qualifier` undefined.
 */
export function parseFunctionName(
  raw: string,
  qualifier: string | undefined,
  defaultNamespace: string,
): { key: FunctionKey; qualifier?: string } {
  const notFound = (what: string) =>
    new LambdaApiError("ResourceNotFoundException", `Function not found: ${what}`);
  const parts = raw.split(":");
  let nameAndQualifier: string[];
  if (parts[0] === "arn") {
    // arn:aws:lambda:region:account:function:name[:qualifier]
    if (parts.length < 7 || parts.length > 8 || parts[2] !== "lambda" || parts[5] !== "function")
      throw notFound(raw);
    nameAndQualifier = parts.slice(6);
  } else if (parts.length >= 3 && parts[1] === "function") {
    if (parts.length > 4) throw notFound(raw);
    nameAndQualifier = parts.slice(2);
  } else {
    if (parts.length > 2) throw notFound(raw);
    nameAndQualifier = parts;
  }
  const rest = nameAndQualifier[0] ?? "";
  const nameQualifier = nameAndQualifier[1];
  if (nameQualifier !== undefined && qualifier !== undefined && nameQualifier !== qualifier) {
    throw new LambdaApiError(
      "InvalidParameterValueException",
      "The derived qualifier from the function name does not match the specified qualifier.",
    );
  }
  const effectiveQualifier = qualifier ?? nameQualifier;
  const slash = rest.split("/");
  if (slash.length > 2) throw notFound(raw);
  const key: FunctionKey =
    slash.length === 2
      ? { namespace: slash[0], name: slash[1] }
      : { namespace: defaultNamespace, name: rest };
  if (!K8S_NAMESPACE.test(key.namespace) || !K8S_NAME.test(key.name) || key.name.length > 253)
    throw notFound(raw);
  if (effectiveQualifier !== undefined && effectiveQualifier !== "" && effectiveQualifier !== "$LATEST") {
    if (!/^[a-zA-Z0-9$_-]{1,128}$/.test(effectiveQualifier))
      throw notFound(`${functionArn(key)}:${effectiveQualifier}`);
    return { key, qualifier: effectiveQualifier };
  }
  return { key };
}
