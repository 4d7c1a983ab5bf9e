import { randomBytes } from "node:crypto";
import { InvokeCommand, LambdaClient } from "@aws-sdk/client-lambda";
import { CHAOS_FUNCTION, CHAOS_ROUTE } from "./chaos-stack.js";

/** How a call reached the function. */
export type CallMode = "sync" | "event" | "http";

/**
 * What one call ended as. `ok`: the caller's own token came back (sync, http)
 * or the Event was accepted (202). `misrouted`: an answer with another token.
 * `failure`: an error response; `shaped` says whether it is AWS-shaped.
 * `transport`: no HTTP response at all (connection refused or reset).
 * `hung`: no end within the hang bound (the call was aborted then).
 */
export interface CallOutcome {
  mode: CallMode;
  token: string;
  /** ms since the load started. */
  start: number;
  end: number;
  kind: "ok" | "misrouted" | "failure" | "transport" | "hung";
  /** Failure or transport error type, e.g. `ServiceException`, `Function:Runtime.ExitError`, `HTTP 502`, `ECONNRESET`. */
  type?: string;
  shaped?: boolean;
  /** For `misrouted`: the token that came back. */
  got?: string;
}

/** Options of {@link ChaosLoad}. */
export interface ChaosLoadOptions {
  gatewayUrl: string;
  /** Total calls. */
  invocations: number;
  /** Callers running at once. */
  concurrency: number;
  /** A call not ended after this long counts as hung. */
  hangMs: number;
  /** A caller's pause after a failed call (what an SDK retry would wait), so an outage does not use up the run. */
  failureBackoffMs: number;
  /** Called before each call with its index; resolves when the call may go (fault gates). */
  gate: (index: number) => Promise<void>;
}

/**
 * The chaos workload: `concurrency` callers share `invocations` calls, mixed
 * half synchronous Invoke (AWS SDK v3), a quarter Event Invoke (SDK), a
 * quarter HTTP route (fetch); each call carries a fresh random token.
 */
export class ChaosLoad {
  readonly outcomes: CallOutcome[] = [];
  /** Calls started so far. */
  issued = 0;
  /** performance.now() when {@link run} started: the zero of every time in the outcomes. */
  t0 = 0;
  private readonly lambda: LambdaClient;

  constructor(private readonly options: ChaosLoadOptions) {
    this.lambda = new LambdaClient({
      endpoint: options.gatewayUrl,
      region: "us-east-1",
      credentials: { accessKeyId: "chaos", secretAccessKey: "chaos" },
      // Every failure must reach the suite, not be hidden by a retry.
      maxAttempts: 1,
    });
  }

  /** ms since {@link run} started. */
  now(): number {
    return performance.now() - this.t0;
  }

  /** Runs every call; resolves when all have ended (each within the hang bound). */
  async run(): Promise<void> {
    this.t0 = performance.now();
    const caller = async () => {
      for (;;) {
        const index = this.issued;
        if (index >= this.options.invocations) return;
        await this.options.gate(index);
        // Another caller took this call meanwhile: ask the gate again for the next one.
        if (this.issued !== index) continue;
        const n = this.issued++;
        const mode: CallMode = n % 4 === 1 ? "event" : n % 4 === 3 ? "http" : "sync";
        const outcome = await this.call(mode);
        this.outcomes.push(outcome);
        if (outcome.kind !== "ok") await sleep(this.options.failureBackoffMs);
      }
    };
    await Promise.all(Array.from({ length: this.options.concurrency }, caller));
    this.lambda.destroy();
  }

  private async call(mode: CallMode): Promise<CallOutcome> {
    const token = randomBytes(12).toString("base64url");
    const start = this.now();
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.options.hangMs);
    let result: Omit<CallOutcome, "mode" | "token" | "start" | "end">;
    try {
      result =
        mode === "http" ? await this.http(token, abort.signal) : await this.invoke(mode, token, abort.signal);
    } catch (err) {
      result = abort.signal.aborted ? { kind: "hung" } : { kind: "transport", type: transportType(err) };
    } finally {
      clearTimeout(timer);
    }
    return { mode, token, start, end: this.now(), ...result };
  }

  /** Invoke through the SDK; the raw status and headers are captured to judge the error's shape. */
  private async invoke(
    mode: "sync" | "event",
    token: string,
    signal: AbortSignal,
  ): Promise<Omit<CallOutcome, "mode" | "token" | "start" | "end">> {
    const command = new InvokeCommand({
      FunctionName: CHAOS_FUNCTION,
      InvocationType: mode === "event" ? "Event" : "RequestResponse",
      Payload: Buffer.from(JSON.stringify({ token, record: mode === "event" })),
    });
    let raw: { statusCode: number; headers: Record<string, string> } | undefined;
    command.middlewareStack.add(
      (next) => async (args) => {
        const out = await next(args);
        raw = out.response as typeof raw;
        return out;
      },
      { step: "deserialize", priority: "low", name: "chaosRawResponse" },
    );
    try {
      const out = await this.lambda.send(command, { abortSignal: signal });
      if (mode === "event") {
        return out.StatusCode === 202
          ? { kind: "ok" }
          : { kind: "failure", type: `status ${out.StatusCode}`, shaped: false };
      }
      const text = Buffer.from(out.Payload ?? new Uint8Array()).toString("utf8");
      const body = parseJson(text);
      if (out.FunctionError) {
        const errorType = typeof body?.errorType === "string" ? body.errorType : undefined;
        return { kind: "failure", type: `Function:${errorType ?? "?"}`, shaped: errorType !== undefined };
      }
      if (body?.token === token) return { kind: "ok" };
      return { kind: "misrouted", got: String(body?.token ?? text.slice(0, 80)) };
    } catch (err) {
      if (signal.aborted) return { kind: "hung" };
      if (!raw) throw err;
      const header = raw.headers["x-amzn-errortype"];
      const name = (err as Error).name;
      return {
        kind: "failure",
        type: header ? header.split(":")[0] : `${raw.statusCode} ${name}`,
        shaped: Boolean(header) && raw.statusCode >= 400,
      };
    }
  }

  /**
   * POST to the function's HTTP route. An error is API-Gateway-shaped when it
   * is one of the statuses the route handler documents with a JSON `message`.
   */
  private async http(
    token: string,
    signal: AbortSignal,
  ): Promise<Omit<CallOutcome, "mode" | "token" | "start" | "end">> {
    const res = await fetch(`${this.options.gatewayUrl}${CHAOS_ROUTE}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token }),
      signal,
    });
    const text = await res.text();
    const body = parseJson(text);
    if (res.status === 200) {
      if (body?.token === token) return { kind: "ok" };
      return { kind: "misrouted", got: String(body?.token ?? text.slice(0, 80)) };
    }
    const shaped = ROUTE_ERROR_STATUSES.has(res.status) && typeof body?.message === "string";
    return {
      kind: "failure",
      type: `HTTP ${res.status}${body?.message ? ` ${String(body.message)}` : ""}`,
      shaped,
    };
  }
}

/** Statuses gateway/src/http-route-handler.ts answers route errors with, as API Gateway does. */
const ROUTE_ERROR_STATUSES = new Set([429, 500, 502, 503]);

function parseJson(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return v && typeof v === "object" ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** ECONNREFUSED, ECONNRESET, … of a failed request (fetch wraps it in `cause`); else the message. */
function transportType(err: unknown): string {
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const message = (e.message || e.cause?.message || "Error").replace(/^AWS SDK error wrapper for /, "");
  // The SDK wraps a socket error in an "AWS SDK error wrapper for Error: connect ECONNREFUSED …".
  return (
    e.code ?? e.cause?.code ?? /\b(E[A-Z_]{3,}|UND_ERR_[A-Z_]+)\b/.exec(message)?.[1] ?? message.slice(0, 60)
  );
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
