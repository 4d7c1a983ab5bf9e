import { randomUUID } from "node:crypto";
import { functionRevision, type LambdaFunction } from "@esb/common";
import { ControlApiOperations, type ControlCall, type ControlResult } from "./control-api-operations.js";
import { functionArn, type FunctionKey } from "./function-name.js";
import { LAMBDA_ANNOTATIONS as A } from "./function-store.js";
import {
  ALIASES,
  LAST_VERSION,
  VERSION,
  VERSION_OF,
  aliasesOf,
  resolveQualified,
  versionObjectName,
  versionsOf,
  type StoredAlias,
} from "./function-versions.js";
import { LambdaApiError } from "./lambda-api-error.js";

const invalid = (message: string) => new LambdaApiError("InvalidParameterValueException", message);
const ALIAS_NAME = /^(?!\d+$)[a-zA-Z0-9_-]{1,128}$/;

/**
 * {@link ControlApiOperations} plus versions and aliases (see function-versions.ts for how they
 * map onto LambdaFunctions): PublishVersion, ListVersionsByFunction, Create/Get/Update/List/
 * DeleteAlias, GetFunction(Configuration) and DeleteFunction with a Qualifier, and provisioned
 * concurrency on a version or alias.
 */
export class LambdaApiOperations extends ControlApiOperations {
  async publishVersion(c: ControlCall): Promise<ControlResult> {
    const key = this.writable(c.key!);
    const base = this.found(key);
    const versions = versionsOf(this.registry, key);
    const revision = functionRevision(base.spec);
    // As AWS: nothing changed since the last version → that version, not a new one.
    const last = Math.max(0, ...versions.keys());
    const lastFn = versions.get(last);
    if (lastFn && functionRevision(lastFn.spec) === revision)
      return { status: 201, body: this.versionConfiguration(key, lastFn, last, c.region) };
    if (typeof c.body.RevisionId === "string" && c.body.RevisionId !== this.revisionOf(base))
      throw new LambdaApiError(
        "PreconditionFailedException",
        "The Revision Id provided does not match the latest Revision Id.",
      );
    const n = Math.max(last, Number(base.metadata.annotations?.[LAST_VERSION] ?? 0)) + 1;
    const { http: _http, reservedConcurrency: _r, provisionedConcurrency: _p, ...spec } = base.spec;
    const ann = base.metadata.annotations ?? {};
    const keep = [A.role, A.codeSha256, A.codeSize].filter((k) => ann[k] !== undefined);
    const version: LambdaFunction = {
      apiVersion: base.apiVersion,
      kind: base.kind,
      metadata: {
        name: versionObjectName(key.name, n),
        namespace: key.namespace,
        annotations: {
          ...Object.fromEntries(keep.map((k) => [k, ann[k]])),
          ...(typeof c.body.Description === "string" && c.body.Description
            ? { [A.description]: c.body.Description }
            : ann[A.description]
              ? { [A.description]: ann[A.description] }
              : {}),
          [VERSION_OF]: key.name,
          [VERSION]: String(n),
        },
      },
      spec: structuredClone(spec),
    };
    this.stamp(version);
    await this.store().create(version);
    await this.settled({ namespace: key.namespace, name: version.metadata.name }, version);
    await this.write(key, undefined, (fn) => {
      fn.metadata.annotations = { ...fn.metadata.annotations, [LAST_VERSION]: String(n) };
    });
    return { status: 201, body: this.versionConfiguration(key, version, n, c.region) };
  }

  /** CreateFunction; with `Publish: true` it also publishes version 1 and answers its configuration (as AWS). */
  override async createFunction(
    c: ControlCall,
    signed?: Parameters<ControlApiOperations["createFunction"]>[1],
  ) {
    const created = await super.createFunction(c, signed);
    if (c.body.Publish !== true) return created;
    const name = (created.body as { FunctionName: string }).FunctionName;
    return this.publishVersion({ ...c, key: { namespace: this.namespace, name }, body: {} });
  }

  /** UpdateFunctionCode; with `Publish: true` it also publishes a version and answers its configuration. */
  override async updateFunctionCode(c: ControlCall): Promise<ControlResult> {
    const updated = await super.updateFunctionCode(c);
    if (c.body.Publish !== true || c.body.DryRun === true) return updated;
    const published = await this.publishVersion({ ...c, body: {} });
    return { status: 200, body: published.body };
  }

  async listVersionsByFunction(c: ControlCall): Promise<ControlResult> {
    const key = c.key!;
    const all = [this.configuration(key, c.region)];
    for (const [n, fn] of [...versionsOf(this.registry, key)].sort((a, b) => a[0] - b[0]))
      all.push(this.versionConfiguration(key, fn, n, c.region));
    return { status: 200, body: page(all, c, "Versions") };
  }

  override async getFunctionConfiguration(c: ControlCall): Promise<ControlResult> {
    if (c.qualifier === undefined) return super.getFunctionConfiguration(c);
    return { status: 200, body: this.qualifiedConfiguration(c) };
  }

  override async getFunction(c: ControlCall): Promise<ControlResult> {
    const res = await super.getFunction({ ...c, qualifier: undefined });
    if (c.qualifier === undefined) return res;
    return { status: 200, body: { ...(res.body as object), Configuration: this.qualifiedConfiguration(c) } };
  }

  override async deleteFunction(c: ControlCall): Promise<ControlResult> {
    const key = this.writable(c.key!);
    if (c.qualifier !== undefined) {
      if (!/^\d+$/.test(c.qualifier))
        throw invalid("Deletion of aliases is not supported by DeleteFunction: use DeleteAlias");
      const target = resolveQualified(this.registry, key, c.qualifier);
      const used = Object.entries(aliasesOf(this.found(key))).find(
        ([, a]) =>
          a.FunctionVersion === c.qualifier ||
          a.RoutingConfig?.AdditionalVersionWeights?.[c.qualifier!] !== undefined,
      );
      if (used)
        throw new LambdaApiError(
          "ResourceConflictException",
          `Unable to delete version because the following aliases reference it: [${used[0]}]`,
        );
      await this.store().delete(target.key.namespace, target.key.name);
      await this.settled(target.key, undefined);
      await this.prune(key);
      return { status: 204 };
    }
    this.found(key);
    for (const fn of versionsOf(this.registry, key).values()) {
      const vkey = { namespace: key.namespace, name: fn.metadata.name };
      await this.store().delete(vkey.namespace, vkey.name);
      await this.settled(vkey, undefined);
    }
    return super.deleteFunction(c);
  }

  async createAlias(c: ControlCall): Promise<ControlResult> {
    const key = this.writable(c.key!);
    const name = c.body.Name;
    if (typeof name !== "string" || !ALIAS_NAME.test(name))
      throw invalid("Name must be 1 to 128 letters, digits, '-' or '_', and not only digits");
    const alias = this.checkedAlias(key, c.body, undefined);
    await this.write(key, undefined, (fn) => {
      const all = aliasesOf(fn);
      if (all[name])
        throw new LambdaApiError(
          "ResourceConflictException",
          `Alias already exists: ${functionArn(key, c.region)}:${name}`,
        );
      all[name] = alias;
      fn.metadata.annotations = { ...fn.metadata.annotations, [ALIASES]: JSON.stringify(all) };
    });
    return { status: 201, body: aliasConfiguration(key, name, alias, c.region) };
  }

  async getAlias(c: ControlCall): Promise<ControlResult> {
    const key = c.key!;
    const alias = aliasesOf(this.found(key))[c.sub!];
    if (!alias) throw aliasNotFound(key, c.sub!, c.region);
    return { status: 200, body: aliasConfiguration(key, c.sub!, alias, c.region) };
  }

  async listAliases(c: ControlCall): Promise<ControlResult> {
    const key = c.key!;
    const version = c.query.get("FunctionVersion");
    const all = Object.entries(aliasesOf(this.found(key)))
      .filter(([, a]) => version === null || a.FunctionVersion === version)
      .sort((x, y) => (x[0] < y[0] ? -1 : 1))
      .map(([n, a]) => aliasConfiguration(key, n, a, c.region));
    return { status: 200, body: page(all, c, "Aliases") };
  }

  async updateAlias(c: ControlCall): Promise<ControlResult> {
    const key = this.writable(c.key!);
    const name = c.sub!;
    let updated: StoredAlias | undefined;
    await this.write(key, undefined, (fn) => {
      const all = aliasesOf(fn);
      const current = all[name];
      if (!current) throw aliasNotFound(key, name, c.region);
      if (typeof c.body.RevisionId === "string" && c.body.RevisionId !== current.RevisionId)
        throw new LambdaApiError(
          "PreconditionFailedException",
          "The Revision Id provided does not match the latest Revision Id.",
        );
      updated = this.checkedAlias(key, c.body, current);
      all[name] = updated;
      fn.metadata.annotations = { ...fn.metadata.annotations, [ALIASES]: JSON.stringify(all) };
    });
    return { status: 200, body: aliasConfiguration(key, name, updated!, c.region) };
  }

  async deleteAlias(c: ControlCall): Promise<ControlResult> {
    const key = this.writable(c.key!);
    await this.write(key, undefined, (fn) => {
      const all = aliasesOf(fn);
      if (!all[c.sub!]) throw aliasNotFound(key, c.sub!, c.region);
      delete all[c.sub!];
      fn.metadata.annotations = { ...fn.metadata.annotations, [ALIASES]: JSON.stringify(all) };
    });
    return { status: 204 };
  }

  /** Provisioned concurrency of `$LATEST`, a version, or an alias (its main version). */
  protected override latest(c: ControlCall): FunctionKey {
    const q = c.query.get("Qualifier");
    if (q === null || q === "") throw invalid("Qualifier is required: a version or an alias");
    return resolveQualified(this.registry, c.key!, q, () => 1).key;
  }

  /** An alias of `body` (Create/UpdateAlias) checked against the function's versions; `current` fills what Update leaves out. */
  private checkedAlias(
    key: FunctionKey,
    body: Record<string, unknown>,
    current: StoredAlias | undefined,
  ): StoredAlias {
    const exists = (v: string) => v === "$LATEST" || versionsOf(this.registry, key).has(Number(v));
    const version = body.FunctionVersion ?? current?.FunctionVersion;
    if (typeof version !== "string" || !(version === "$LATEST" || /^\d+$/.test(version)))
      throw invalid("FunctionVersion must be a version number or $LATEST");
    if (!exists(version))
      throw new LambdaApiError(
        "ResourceNotFoundException",
        `Function not found: ${functionArn(key)}:${version}`,
      );
    const routing = (body.RoutingConfig ?? current?.RoutingConfig) as
      StoredAlias["RoutingConfig"] | undefined;
    const weights = Object.entries(routing?.AdditionalVersionWeights ?? {});
    if (weights.length > 1) throw invalid("RoutingConfig may name one additional version");
    for (const [v, w] of weights) {
      if (!/^\d+$/.test(v) || !exists(v) || v === version)
        throw invalid(`RoutingConfig: ${v} must be another published version than FunctionVersion`);
      if (typeof w !== "number" || !(w >= 0 && w <= 1))
        throw invalid("RoutingConfig weights must be from 0.0 to 1.0");
    }
    const description = body.Description ?? current?.Description;
    return {
      FunctionVersion: version,
      ...(typeof description === "string" && description ? { Description: description } : {}),
      ...(weights.length > 0
        ? {
            RoutingConfig: {
              AdditionalVersionWeights: Object.fromEntries(weights) as Record<string, number>,
            },
          }
        : {}),
      RevisionId: randomUUID(),
    };
  }

  private qualifiedConfiguration(c: ControlCall): Record<string, unknown> {
    const key = c.key!;
    // An alias reads as its main version (the weighted one is a routing choice, not a configuration).
    const target = resolveQualified(this.registry, key, c.qualifier, () => 1);
    if (target.version === "$LATEST") return this.configuration(key, c.region);
    return this.versionConfiguration(key, target.fn, Number(target.version), c.region);
  }

  private versionConfiguration(key: FunctionKey, fn: LambdaFunction, n: number, region?: string) {
    const conf = this.configuration({ namespace: key.namespace, name: fn.metadata.name }, region);
    return {
      ...conf,
      FunctionName: key.name,
      FunctionArn: `${functionArn(key, region)}:${n}`,
      Version: String(n),
    };
  }

  private revisionOf(fn: LambdaFunction): string {
    return fn.metadata.resourceVersion ?? fn.metadata.annotations?.[A.revisionId] ?? "";
  }
}

function aliasConfiguration(key: FunctionKey, name: string, a: StoredAlias, region?: string) {
  return { AliasArn: `${functionArn(key, region)}:${name}`, Name: name, ...a };
}

function aliasNotFound(key: FunctionKey, name: string, region?: string): LambdaApiError {
  return new LambdaApiError(
    "ResourceNotFoundException",
    `Alias not found: ${functionArn(key, region)}:${name}`,
  );
}

/** One page of `items` with AWS's Marker/MaxItems (a Marker is the index of the next item). */
function page(items: unknown[], c: ControlCall, field: string): Record<string, unknown> {
  const max = c.query.get("MaxItems");
  const maxItems = max === null ? 50 : Number(max);
  if (!Number.isInteger(maxItems) || maxItems < 1 || maxItems > 10_000)
    throw invalid("MaxItems must be an integer from 1 to 10000");
  const from =
    c.query.get("Marker") === null ? 0 : Number(Buffer.from(c.query.get("Marker")!, "base64url").toString());
  if (!Number.isInteger(from) || from < 0) throw invalid("Marker is not one that this operation returned");
  const out: Record<string, unknown> = { [field]: items.slice(from, from + maxItems) };
  if (from + maxItems < items.length)
    out.NextMarker = Buffer.from(String(from + maxItems)).toString("base64url");
  return out;
}
