import { randomUUID } from "node:crypto";
import type { LambdaFunction, Logger } from "@esb/common";
import {
  applySettings,
  checkFunction,
  functionCodeLocation,
  functionConfiguration,
  newFunction,
  setTags,
  tagsOf,
  type FunctionSettings,
} from "./function-configuration.js";
import { functionArn, resolveFunctionName, type FunctionKey } from "./function-name.js";
import type { FunctionRegistry } from "./function-registry.js";
import { functionStateOf, type FunctionStatusLookup } from "./function-state.js";
import { LAMBDA_ANNOTATIONS as A, type FunctionStore } from "./function-store.js";
import { isVersionObject } from "./function-versions.js";
import { LambdaApiError } from "./lambda-api-error.js";
import type { AuthenticatedRequest } from "./sigv4-auth.js";

/** What an operation gets. */
export interface ControlCall {
  /** The function the call names (resolved); undefined for CreateFunction and ListFunctions. */
  key?: FunctionKey;
  /** The Qualifier (a version number or alias; never `$LATEST`), for the operations that take one. */
  qualifier?: string;
  /** The second path parameter (an alias name), decoded. */
  sub?: string;
  query: URLSearchParams;
  /** The JSON body (empty object when none). */
  body: Record<string, unknown>;
  /** The region the caller signed for (ARNs are shown in it). */
  region?: string;
}

/** What an operation answers: a status and a JSON body (none: an empty response). */
export interface ControlResult {
  status: number;
  body?: unknown;
}

/** How long a call waits for its write to reach the gateway's registry (Invoke sees it after that). */
const SETTLE_MS = 10_000;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

const invalid = (message: string) => new LambdaApiError("InvalidParameterValueException", message);

/**
 * The operations of the control-plane API (see {@link ControlApiHandler} for routing and
 * security). Each write goes to the {@link FunctionStore} and then waits (at most 10 s) until the
 * gateway's registry shows it, so an Invoke or GetFunction right after the answer sees the
 * change. Code is stored before the function that names it and removed again if the function
 * cannot be written: nothing is half-created.
 */
export class ControlApiOperations {
  constructor(
    /** Undefined: a gateway that can read functions but has nowhere to write them. */
    private readonly writer: FunctionStore | undefined,
    protected readonly registry: FunctionRegistry,
    protected readonly namespace: string,
    protected readonly logger: Logger,
    private readonly statusOf?: FunctionStatusLookup,
  ) {}

  async createFunction(c: ControlCall, signed?: AuthenticatedRequest): Promise<ControlResult> {
    const b = c.body;
    if (typeof b.FunctionName !== "string" || b.FunctionName === "")
      throw invalid("FunctionName is required");
    let key: FunctionKey;
    try {
      key = resolveFunctionName(b.FunctionName, undefined, this.namespace);
    } catch {
      throw invalid(
        `FunctionName ${JSON.stringify(b.FunctionName)} must be a lowercase Kubernetes object name (letters a-z, digits, '-' and '.'), optionally as an ARN`,
      );
    }
    const denied = signed?.authorize(key.namespace, "lambda:CreateFunction", functionArn(key, c.region));
    if (denied) throw denied;
    this.writable(key);
    const packageType = b.PackageType ?? "Zip";
    if (packageType !== "Zip" && packageType !== "Image")
      throw invalid(`PackageType must be Zip or Image, not ${JSON.stringify(packageType)}`);
    const code = (b.Code ?? {}) as Record<string, unknown>;
    const fn = newFunction(key);
    applySettings(fn, b as FunctionSettings);
    if (b.Tags !== undefined) setTags(fn, stringMap(b.Tags, "Tags"));
    let zip: Buffer | undefined;
    if (packageType === "Image") {
      if (typeof code.ImageUri !== "string" || code.ImageUri === "")
        throw invalid("Code.ImageUri is required for PackageType Image");
      if (b.Runtime !== undefined || b.Handler !== undefined)
        throw invalid(
          "Runtime and Handler are not supported for PackageType Image (the image brings its own)",
        );
      fn.spec.image = code.ImageUri;
    } else {
      if (code.ImageUri !== undefined) throw invalid("Code.ImageUri needs PackageType Image");
      zip = zipOf(code);
      if (fn.spec.runtime === undefined) throw invalid("Runtime is required for PackageType Zip");
    }
    this.stamp(fn);
    // Everything but the code is checked before the code is stored.
    checkFunction(zip ? { ...fn, spec: { ...fn.spec, code: { inline: { placeholder: "" } } } } : fn);
    if (await this.store().get(key.namespace, key.name))
      throw new LambdaApiError("ResourceConflictException", `Function already exist: ${key.name}`);
    if (zip) {
      const stored = await this.store().storeCode(key.namespace, key.name, zip);
      fn.spec.code = stored.code;
      fn.metadata.annotations![A.codeSha256] = stored.summary.codeSha256;
      fn.metadata.annotations![A.codeSize] = String(stored.summary.codeSize);
    }
    try {
      checkFunction(fn);
      await this.store().create(fn);
    } catch (err) {
      if (zip) await this.prune(key);
      throw err;
    }
    await this.settled(key, fn);
    return { status: 201, body: this.configuration(key, c.region) };
  }

  async listFunctions(c: ControlCall, signed?: AuthenticatedRequest): Promise<ControlResult> {
    const denied = signed?.authorize(this.namespace, "lambda:ListFunctions", "*");
    if (denied) throw denied;
    const max = c.query.get("MaxItems");
    const maxItems = max === null ? 50 : Number(max);
    if (!Number.isInteger(maxItems) || maxItems < 1 || maxItems > 10_000)
      throw invalid("MaxItems must be an integer from 1 to 10000");
    const marker = c.query.get("Marker");
    let after = "";
    if (marker !== null) {
      after = Buffer.from(marker, "base64url").toString("utf8");
      if (!after) throw invalid("Marker is not one that ListFunctions returned");
    }
    const all = this.registry
      .list()
      .filter((f) => f.metadata.namespace === this.namespace && !isVersionObject(f))
      .sort((x, y) => (x.metadata.name < y.metadata.name ? -1 : x.metadata.name > y.metadata.name ? 1 : 0));
    const rest = all.filter((f) => f.metadata.name > after);
    const page = rest.slice(0, maxItems);
    const functions = page.map((f) => {
      const key = { namespace: this.namespace, name: f.metadata.name };
      return functionConfiguration(f, key, this.stateOf(key, f), c.region);
    });
    const body: Record<string, unknown> = { Functions: functions };
    if (rest.length > page.length)
      body.NextMarker = Buffer.from(page[page.length - 1].metadata.name).toString("base64url");
    return { status: 200, body };
  }

  async getFunction(c: ControlCall): Promise<ControlResult> {
    const key = c.key!;
    const fn = this.found(key);
    const tags = tagsOf(fn);
    return {
      status: 200,
      body: {
        Configuration: this.configuration(key, c.region),
        Code: functionCodeLocation(fn),
        ...(Object.keys(tags).length > 0 ? { Tags: tags } : {}),
        ...(fn.spec.reservedConcurrency !== undefined
          ? { Concurrency: { ReservedConcurrentExecutions: fn.spec.reservedConcurrency } }
          : {}),
      },
    };
  }

  async getFunctionConfiguration(c: ControlCall): Promise<ControlResult> {
    return { status: 200, body: this.configuration(c.key!, c.region) };
  }

  async deleteFunction(c: ControlCall): Promise<ControlResult> {
    const key = this.writable(c.key!);
    await this.store().delete(key.namespace, key.name);
    await this.settled(key, undefined);
    await this.prune(key);
    return { status: 204 };
  }

  async updateFunctionConfiguration(c: ControlCall): Promise<ControlResult> {
    const b = c.body;
    const key = this.writable(c.key!);
    await this.write(key, b.RevisionId, (fn) => {
      if (fn.spec.image && (b.Runtime !== undefined || b.Handler !== undefined))
        throw invalid(
          "Runtime and Handler are not supported for PackageType Image (the image brings its own)",
        );
      if (!fn.spec.image && b.ImageConfig) throw invalid("ImageConfig needs PackageType Image");
      applySettings(fn, b as FunctionSettings);
    });
    return { status: 200, body: this.configuration(key, c.region) };
  }

  async updateFunctionCode(c: ControlCall): Promise<ControlResult> {
    const b = c.body;
    const key = this.writable(c.key!);
    const current = this.found(key);
    if (b.Architectures !== undefined) applySettings(newFunction(key), { Architectures: b.Architectures });
    if (current.spec.image) {
      if (typeof b.ImageUri !== "string" || b.ImageUri === "")
        throw invalid("Please provide ImageUri when updating a function with packageType Image.");
      if (b.DryRun === true) return { status: 200, body: this.configuration(key, c.region) };
      await this.write(key, b.RevisionId, (fn) => {
        fn.spec.image = b.ImageUri as string;
      });
      return { status: 200, body: this.configuration(key, c.region) };
    }
    if (b.ImageUri !== undefined)
      throw invalid("Please don't provide ImageUri when updating a function with packageType Zip.");
    const zip = zipOf(b);
    if (b.DryRun === true) {
      await this.store().storeCode(key.namespace, key.name, zip);
      await this.prune(key);
      return { status: 200, body: this.configuration(key, c.region) };
    }
    const stored = await this.store().storeCode(key.namespace, key.name, zip);
    try {
      await this.write(key, b.RevisionId, (fn) => {
        fn.spec.code = stored.code;
        fn.metadata.annotations ??= {};
        fn.metadata.annotations[A.codeSha256] = stored.summary.codeSha256;
        fn.metadata.annotations[A.codeSize] = String(stored.summary.codeSize);
      });
    } finally {
      await this.prune(key);
    }
    return { status: 200, body: this.configuration(key, c.region) };
  }

  async putFunctionConcurrency(c: ControlCall): Promise<ControlResult> {
    const n = c.body.ReservedConcurrentExecutions;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 0)
      throw invalid("ReservedConcurrentExecutions must be an integer >= 0");
    const key = this.writable(c.key!);
    await this.write(key, undefined, (fn) => {
      fn.spec.reservedConcurrency = n;
    });
    return { status: 200, body: { ReservedConcurrentExecutions: n } };
  }

  async deleteFunctionConcurrency(c: ControlCall): Promise<ControlResult> {
    const key = this.writable(c.key!);
    await this.write(key, undefined, (fn) => {
      delete fn.spec.reservedConcurrency;
    });
    return { status: 204 };
  }

  async getFunctionConcurrency(c: ControlCall): Promise<ControlResult> {
    const fn = this.found(c.key!);
    return {
      status: 200,
      body:
        fn.spec.reservedConcurrency !== undefined
          ? { ReservedConcurrentExecutions: fn.spec.reservedConcurrency }
          : {},
    };
  }

  async putProvisionedConcurrencyConfig(c: ControlCall): Promise<ControlResult> {
    const key = this.writable(this.latest(c));
    const n = c.body.ProvisionedConcurrentExecutions;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 1)
      throw invalid("ProvisionedConcurrentExecutions must be an integer >= 1");
    await this.write(key, undefined, (fn) => {
      fn.spec.provisionedConcurrency = n;
    });
    return { status: 202, body: this.provisioned(key) };
  }

  async getProvisionedConcurrencyConfig(c: ControlCall): Promise<ControlResult> {
    const key = this.latest(c);
    const fn = this.found(key);
    if (!fn.spec.provisionedConcurrency)
      throw new LambdaApiError(
        "ProvisionedConcurrencyConfigNotFoundException",
        `No Provisioned Concurrency Config found for this function`,
      );
    return { status: 200, body: this.provisioned(key) };
  }

  async deleteProvisionedConcurrencyConfig(c: ControlCall): Promise<ControlResult> {
    const key = this.writable(this.latest(c));
    await this.write(key, undefined, (fn) => {
      delete fn.spec.provisionedConcurrency;
    });
    return { status: 204 };
  }

  async tagResource(c: ControlCall): Promise<ControlResult> {
    const key = this.writable(c.key!);
    const tags = stringMap(c.body.Tags, "Tags");
    await this.write(key, undefined, (fn) => setTags(fn, { ...tagsOf(fn), ...tags }));
    return { status: 204 };
  }

  async untagResource(c: ControlCall): Promise<ControlResult> {
    const key = this.writable(c.key!);
    const keys = c.query.getAll("tagKeys");
    if (keys.length === 0) throw invalid("tagKeys is required");
    await this.write(key, undefined, (fn) => {
      const tags = tagsOf(fn);
      for (const k of keys) delete tags[k];
      setTags(fn, tags);
    });
    return { status: 204 };
  }

  async listTags(c: ControlCall): Promise<ControlResult> {
    return { status: 200, body: { Tags: tagsOf(this.found(c.key!)) } };
  }

  protected store(): FunctionStore {
    if (!this.writer)
      throw new LambdaApiError(
        "ServiceException",
        "This gateway has no function store: it cannot change functions",
      );
    return this.writer;
  }

  /** Changes the stored function with `change` (checked with the one validator), then waits for the registry. */
  protected async write(
    key: FunctionKey,
    revisionId: unknown,
    change: (fn: LambdaFunction) => void,
  ): Promise<void> {
    const written = await this.store().update(key.namespace, key.name, (fn) => {
      const revision = fn.metadata.resourceVersion ?? fn.metadata.annotations?.[A.revisionId] ?? "";
      if (revisionId !== undefined && revisionId !== revision)
        throw new LambdaApiError(
          "PreconditionFailedException",
          "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id",
        );
      change(fn);
      this.stamp(fn);
      checkFunction(fn);
      return fn;
    });
    await this.settled(key, written);
  }

  /** A new RevisionId and LastModified on every write. */
  protected stamp(fn: LambdaFunction): void {
    fn.metadata.annotations ??= {};
    fn.metadata.annotations[A.revisionId] = randomUUID();
    fn.metadata.annotations[A.lastModified] = new Date().toISOString();
  }

  /** Waits until the registry has `fn`'s write (or, with `fn` undefined, no longer has the function). */
  protected async settled(key: FunctionKey, fn: LambdaFunction | undefined): Promise<void> {
    const want = fn?.metadata.annotations?.[A.revisionId];
    const done = () => {
      const seen = this.registry.get(key.namespace, key.name);
      return fn ? seen?.metadata.annotations?.[A.revisionId] === want : seen === undefined;
    };
    if (done()) return;
    await new Promise<void>((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        off();
        resolve();
      };
      const timer = setTimeout(() => {
        this.logger.warn(
          { function: `${key.namespace}/${key.name}` },
          "the registry did not show a control-plane write within 10 s",
        );
        finish();
      }, SETTLE_MS);
      const off = this.registry.onChange(() => {
        if (done()) finish();
      });
    });
  }

  protected async prune(key: FunctionKey): Promise<void> {
    try {
      await this.store().pruneCode(key.namespace, key.name);
    } catch (err) {
      this.logger.warn(
        { err, function: `${key.namespace}/${key.name}` },
        "could not remove unused function code",
      );
    }
  }

  protected found(key: FunctionKey): LambdaFunction {
    const fn = this.registry.get(key.namespace, key.name);
    if (!fn) throw new LambdaApiError("ResourceNotFoundException", `Function not found: ${functionArn(key)}`);
    return fn;
  }

  /** The API writes only in the gateway's own namespace (the one its Kubernetes Role covers). */
  protected writable(key: FunctionKey): FunctionKey {
    if (key.namespace !== this.namespace)
      throw new LambdaApiError(
        "AccessDeniedException",
        `ESB's control-plane API manages functions of namespace ${this.namespace} only (the gateway's namespace); ${key.namespace}/${key.name} is managed with kubectl`,
      );
    return key;
  }

  /** Provisioned concurrency applies to a version or alias; ESB has `$LATEST` only. */
  protected latest(c: ControlCall): FunctionKey {
    const q = c.query.get("Qualifier");
    if (q === null || q === "") throw invalid("Qualifier is required (ESB serves $LATEST only)");
    if (q !== "$LATEST")
      throw new LambdaApiError(
        "ResourceNotFoundException",
        `Function not found: ${functionArn(c.key!)}:${q}`,
      );
    return c.key!;
  }

  protected provisioned(key: FunctionKey): Record<string, unknown> {
    const fn = this.found(key);
    const requested = fn.spec.provisionedConcurrency ?? 0;
    const seen = this.stateOf(key, fn);
    const warm = Math.min(seen.status?.warmWorkers ?? 0, requested);
    const state = functionStateOf(seen);
    return {
      RequestedProvisionedConcurrentExecutions: requested,
      AllocatedProvisionedConcurrentExecutions: warm,
      AvailableProvisionedConcurrentExecutions: warm,
      Status:
        state.State === "Failed"
          ? "FAILED"
          : state.LastUpdateStatus === "Successful" && warm >= requested
            ? "READY"
            : "IN_PROGRESS",
      ...(state.StateReason ? { StatusReason: state.StateReason } : {}),
      LastModified: new Date(fn.metadata.annotations?.[A.lastModified] ?? 0)
        .toISOString()
        .replace("Z", "+0000"),
    };
  }

  protected configuration(key: FunctionKey, region?: string): Record<string, unknown> {
    const fn = this.found(key);
    return functionConfiguration(fn, key, this.stateOf(key, fn), region);
  }

  /**
   * The function as the controller last saw it, for State and LastUpdateStatus. Kubernetes: the
   * registry's object carries the controller's status. Standalone: the controller's view; when it
   * has not yet seen the latest write (another RevisionId), it is treated as a newer generation,
   * i.e. an update in progress.
   */
  protected stateOf(key: FunctionKey, fn: LambdaFunction): LambdaFunction {
    const seen = this.statusOf?.(key.namespace, key.name);
    if (!seen) return fn;
    if (seen.metadata.annotations?.[A.revisionId] === fn.metadata.annotations?.[A.revisionId]) return seen;
    const observed = seen.status?.observedGeneration ?? seen.metadata.generation ?? 1;
    return { ...seen, metadata: { ...seen.metadata, generation: observed + 1 } };
  }
}

function zipOf(code: Record<string, unknown>): Buffer {
  if (code.S3Bucket !== undefined || code.S3Key !== undefined)
    throw invalid("S3 code locations are not supported by ESB yet: upload the zip as ZipFile");
  if (typeof code.ZipFile !== "string" || code.ZipFile === "")
    throw invalid("ZipFile is required (the deployment package)");
  if (!BASE64.test(code.ZipFile))
    throw invalid("Could not unzip uploaded file. Please check your file, then try to upload again.");
  return Buffer.from(code.ZipFile, "base64");
}

function stringMap(v: unknown, what: string): Record<string, string> {
  if (typeof v !== "object" || v === null || Array.isArray(v))
    throw invalid(`${what} must be a map of strings`);
  for (const x of Object.values(v))
    if (typeof x !== "string") throw invalid(`${what} values must be strings`);
  return v as Record<string, string>;
}
