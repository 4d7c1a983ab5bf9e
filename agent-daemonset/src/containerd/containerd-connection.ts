import { resolve } from "node:path";
import * as grpc from "@grpc/grpc-js";
import {
  fromBinary,
  toBinary,
  create,
  type DescMessage,
  type DescMethod,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import { RuntimeUnavailableError } from "../runtime/runtime.js";

/** A generated method descriptor of the given kind with typed input and output. */
export type TypedMethod<
  K extends DescMethod["methodKind"],
  I extends DescMessage,
  O extends DescMessage,
> = Omit<DescMethod, "methodKind" | "input" | "output"> & {
  readonly methodKind: K;
  readonly input: I;
  readonly output: O;
};

/** Per-call options. */
export interface CallOptions {
  /** Lease id sent as `containerd-lease` so resources created by the call survive GC until the lease ends. */
  lease?: string;
  /** Deadline in milliseconds from now. */
  timeoutMs?: number;
}

/** A failed containerd call, with the gRPC status code containerd answered. */
export class ContainerdError extends Error {
  override name = "ContainerdError";
  constructor(
    /** `<Service>.<Method>` that failed. */
    readonly method: string,
    /** gRPC status code. */
    readonly code: grpc.status,
    message: string,
  ) {
    super(`containerd ${method}: ${message}`);
  }
}

/** True when `err` is containerd's NOT_FOUND. */
export function isNotFound(err: unknown): boolean {
  return err instanceof ContainerdError && err.code === grpc.status.NOT_FOUND;
}

/** True when `err` is containerd's ALREADY_EXISTS. */
export function isAlreadyExists(err: unknown): boolean {
  return err instanceof ContainerdError && err.code === grpc.status.ALREADY_EXISTS;
}

/** Options of {@link ContainerdConnection}. */
export interface ContainerdConnectionOptions {
  /** Path of containerd's gRPC unix socket. */
  socketPath: string;
  /** containerd namespace every call runs in (`containerd-namespace` metadata). Default `esb`. */
  namespace?: string;
}

/** A bidirectional call: write requests, read responses in order. */
export interface BidiCall<I extends DescMessage, O extends DescMessage> {
  /** Sends one request; resolves when the transport accepts more (back-pressure). */
  send(req: MessageInitShape<I>): Promise<void>;
  /** Waits for the next response; rejects with a {@link ContainerdError} when the call failed or ended. */
  recv(): Promise<MessageShape<O>>;
  /** Half-closes the request side. */
  end(): void;
  /** Cancels the call. */
  cancel(): void;
}

/**
 * One gRPC channel to containerd over its unix socket. Calls are made with the
 * generated @bufbuild/protobuf schemas of proto/containerd, so any method of the
 * subset can be called in a typed way: `conn.unary(TasksService.method.pause, {containerId})`.
 * Connection failures become {@link RuntimeUnavailableError}; other failures
 * {@link ContainerdError}.
 */
export class ContainerdConnection {
  readonly namespace: string;
  readonly socketPath: string;
  private readonly client: grpc.Client;

  constructor(opts: ContainerdConnectionOptions) {
    this.socketPath = opts.socketPath;
    this.namespace = opts.namespace ?? "esb";
    // "unix:<absolute path>" (grpc-js naming); a relative path is made absolute first.
    this.client = new grpc.Client(`unix:${resolve(opts.socketPath)}`, grpc.credentials.createInsecure(), {
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
      "grpc.max_send_message_length": 64 * 1024 * 1024,
      // containerd restarts: reconnect quickly instead of backing off for long.
      "grpc.initial_reconnect_backoff_ms": 200,
      "grpc.max_reconnect_backoff_ms": 2000,
    });
  }

  /** Calls a unary method. */
  unary<I extends DescMessage, O extends DescMessage>(
    method: TypedMethod<"unary", I, O>,
    input: MessageInitShape<I>,
    opts: CallOptions = {},
  ): Promise<MessageShape<O>> {
    const name = methodName(method);
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest<Uint8Array, MessageShape<O>>(
        path(method),
        (v) => Buffer.from(v),
        (buf) => fromBinary(method.output, buf),
        toBinary(method.input, create(method.input, input)),
        this.metadata(opts),
        callOptions(opts),
        (err, res) => {
          if (err) reject(this.mapError(name, err));
          else resolve(res as MessageShape<O>);
        },
      );
    });
  }

  /**
   * Calls a server-streaming method; the result is an async iterable of
   * responses. `cancel` ends it early (the iterator then finishes).
   */
  serverStream<I extends DescMessage, O extends DescMessage>(
    method: TypedMethod<"server_streaming", I, O>,
    input: MessageInitShape<I>,
    opts: CallOptions = {},
  ): AsyncIterable<MessageShape<O>> & { cancel(): void } {
    const name = methodName(method);
    const stream = this.client.makeServerStreamRequest<Uint8Array, MessageShape<O>>(
      path(method),
      (v) => Buffer.from(v),
      (buf) => fromBinary(method.output, buf),
      toBinary(method.input, create(method.input, input)),
      this.metadata(opts),
      callOptions(opts),
    );
    let cancelled = false;
    const mapError = (err: unknown): unknown => this.mapError(name, err as grpc.ServiceError);
    return {
      cancel() {
        cancelled = true;
        stream.cancel();
      },
      async *[Symbol.asyncIterator]() {
        try {
          for await (const msg of stream) yield msg as MessageShape<O>;
        } catch (err) {
          if (cancelled && (err as grpc.ServiceError).code === grpc.status.CANCELLED) return;
          throw mapError(err);
        }
      },
    };
  }

  /** Opens a bidirectional-streaming call. */
  bidi<I extends DescMessage, O extends DescMessage>(
    method: TypedMethod<"bidi_streaming", I, O>,
    opts: CallOptions = {},
  ): BidiCall<I, O> {
    const name = methodName(method);
    const stream = this.client.makeBidiStreamRequest<Uint8Array, MessageShape<O>>(
      path(method),
      (v) => Buffer.from(v),
      (buf) => fromBinary(method.output, buf),
      this.metadata(opts),
      callOptions(opts),
    );
    const queue: MessageShape<O>[] = [];
    const waiters: { resolve: (m: MessageShape<O>) => void; reject: (e: unknown) => void }[] = [];
    let failure: unknown;
    const fail = (err: unknown) => {
      failure ??= err;
      for (const w of waiters.splice(0)) w.reject(failure);
    };
    stream.on("data", (m: MessageShape<O>) => {
      const w = waiters.shift();
      if (w) w.resolve(m);
      else queue.push(m);
    });
    stream.on("error", (err: grpc.ServiceError) => fail(this.mapError(name, err)));
    stream.on("end", () => fail(new ContainerdError(name, grpc.status.UNKNOWN, "stream ended")));
    return {
      send: (req) =>
        new Promise<void>((resolve, reject) => {
          if (failure) return reject(failure);
          const ok = stream.write(toBinary(method.input, create(method.input, req)));
          if (ok) resolve();
          else stream.once("drain", () => resolve());
        }),
      recv: () =>
        new Promise((resolve, reject) => {
          const m = queue.shift();
          if (m) return resolve(m);
          if (failure) return reject(failure);
          waiters.push({ resolve, reject });
        }),
      end: () => stream.end(),
      cancel: () => stream.cancel(),
    };
  }

  /** Closes the channel. */
  close(): void {
    this.client.close();
  }

  private metadata(opts: CallOptions): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set("containerd-namespace", this.namespace);
    if (opts.lease) md.set("containerd-lease", opts.lease);
    return md;
  }

  private mapError(method: string, err: grpc.ServiceError): Error {
    if (
      err.code === grpc.status.UNAVAILABLE &&
      /connect|socket|ENOENT|ECONNREFUSED|No connection/i.test(err.details ?? err.message)
    ) {
      return new RuntimeUnavailableError(
        `containerd at ${this.socketPath} is unreachable: ${err.details || err.message}`,
      );
    }
    return new ContainerdError(method, err.code, err.details || err.message);
  }
}

function path(method: Pick<DescMethod, "name" | "parent">): string {
  return `/${method.parent.typeName}/${method.name}`;
}

function methodName(method: Pick<DescMethod, "name" | "parent">): string {
  return `${method.parent.name}.${method.name}`;
}

function callOptions(opts: CallOptions): grpc.CallOptions {
  return opts.timeoutMs ? { deadline: Date.now() + opts.timeoutMs } : {};
}
