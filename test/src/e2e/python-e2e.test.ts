// The managed Python runtimes end to end, every part real: AWS SDK → gateway → agent →
// containerd worker (the same sandbox as every worker) → emulator → the official runtime
// client (awslambdaric from PyPI) on Debian's CPython → handler, with the functions
// prepared by the controller from a folder of manifests, as `esb up` wires them.
// Needs the root file systems of hack/build-python-runtime.sh (`make test` builds them).
import { describe, it, expect, beforeAll, afterAll } from "@jest/globals";
import { InvokeCommand, type InvokeCommandOutput, type LambdaClient } from "@aws-sdk/client-lambda";
import { E2eStack, waitFor, type E2eFunction } from "./e2e-stack.js";

/** One module for every scenario; the event says what to do. */
const APP_PY = `
import json, logging, os, sys, time, uuid

logger = logging.getLogger()
logger.setLevel(logging.INFO)
INIT_ID = uuid.uuid4().hex

def handler(event, context):
    action = event.get("action") if isinstance(event, dict) else None
    if action == "fail":
        raise ValueError("bad input: " + event["why"] + " in " + INIT_ID)
    if action == "sleep":
        time.sleep(event["seconds"])
    if action == "oom":
        hog = []
        while True:
            hog.append(bytearray(16 * 1024 * 1024))
    print("printed", json.dumps(event))
    logger.info("logged %s", event.get("n") if isinstance(event, dict) else None)
    return {
        "event": event,
        "initId": INIT_ID,
        "requestId": context.aws_request_id,
        "functionName": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remainingMs": context.get_remaining_time_in_millis(),
        "arn": context.invoked_function_arn,
        "version": sys.version.split()[0],
        "executionEnv": os.environ.get("AWS_EXECUTION_ENV"),
        "pythonPath": os.environ.get("PYTHONPATH"),
        "sysPath": sys.path[:4],
        "cwd": os.getcwd(),
    }
`;

/** boto3 as the runtime ships it, plus a package in a subfolder and a dependency the zip carries. */
const PKG_FILES: Record<string, string> = {
  "pkg/__init__.py": "",
  "pkg/mod.py": `
import boto3, botocore, vendored_dep

def handler(event, context):
    client = boto3.client("s3", region_name="us-east-1")
    return {
        "boto3": boto3.__version__,
        "botocore": botocore.__version__,
        "boto3Path": boto3.__file__,
        "s3": client.meta.service_model.service_name,
        "dep": vendored_dep.VALUE,
    }
`,
  "vendored_dep/__init__.py": 'VALUE = "from the zip"\n',
};

/** The sandbox seen from inside, as the Node probe of sandbox-probe.ts sees it. */
const PROBE_PY = `
def _try_write(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return "written"
    except OSError as e:
        import errno
        return errno.errorcode.get(e.errno, str(e.errno))

def handler(event, context):
    with open("/proc/self/status") as f:
        status = dict(l.split(":\\t", 1) for l in f.read().splitlines() if ":\\t" in l)
    return {"status": status, "writes": {"root": _try_write("/probe"), "task": _try_write("/var/task/probe"), "tmp": _try_write("/tmp/probe")}}
`;

const py = (
  runtime: "python3.13" | "python3.11",
  extra: Partial<E2eFunction["spec"]> = {},
): E2eFunction["spec"] => ({
  runtime,
  handler: "app.handler",
  code: { inline: { "app.py": APP_PY } },
  ...extra,
});

const FUNCTIONS: E2eFunction[] = [
  { name: "py313", spec: py("python3.13") },
  { name: "py311", spec: py("python3.11") },
  { name: "pyerr", spec: py("python3.13") },
  { name: "pyslow", spec: py("python3.13", { timeout: 1 }) },
  { name: "pyhog", spec: py("python3.13", { memorySize: 128 }) },
  {
    name: "pypkg",
    spec: { runtime: "python3.13", handler: "pkg/mod.handler", code: { inline: PKG_FILES } },
  },
  {
    name: "pyprobe",
    spec: { runtime: "python3.13", handler: "probe.handler", code: { inline: { "probe.py": PROBE_PY } } },
  },
  {
    name: "pynomodule",
    spec: { runtime: "python3.13", handler: "missing.handler", code: { inline: { "app.py": APP_PY } } },
  },
];

interface Answer {
  functionError: string | undefined;
  body: Record<string, unknown>;
  log: string;
}

async function invoke(lambda: LambdaClient, name: string, event: unknown, tail = false): Promise<Answer> {
  const out: InvokeCommandOutput = await lambda.send(
    new InvokeCommand({
      FunctionName: name,
      Payload: new TextEncoder().encode(JSON.stringify(event)),
      LogType: tail ? "Tail" : undefined,
    }),
  );
  const text = new TextDecoder().decode(out.Payload ?? new Uint8Array());
  return {
    functionError: out.FunctionError,
    body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
    log: out.LogResult ? Buffer.from(out.LogResult, "base64").toString("utf8") : "",
  };
}

describe("Python runtimes end to end (SDK → gateway → agent → containerd worker → awslambdaric)", () => {
  const stack = new E2eStack();
  let lambda: LambdaClient;

  beforeAll(async () => {
    // pynomodule is Ready too: without provisioned concurrency its init runs at the first invocation.
    await stack.start(FUNCTIONS);
    lambda = stack.lambda();
  }, 900_000);

  afterAll(async () => {
    lambda?.destroy();
    try {
      await stack.stop();
      expect([...(await stack.tasks()).entries()]).toEqual([]);
      expect(await stack.containers()).toEqual([]);
    } finally {
      await stack.cleanup();
    }
  }, 300_000);

  it.each([
    ["py313", "python3.13", /^3\.13\./],
    ["py311", "python3.11", /^3\.11\./],
  ])(
    "%s: event, context and AWS's environment, warm from the same runtime",
    async (name, runtime, version) => {
      const first = await invoke(lambda, name, { n: 1 });
      expect(first.functionError).toBeUndefined();
      expect(first.body).toMatchObject({
        event: { n: 1 },
        functionName: name,
        memory: "128",
        executionEnv: `AWS_Lambda_${runtime}`,
        pythonPath: "/var/runtime",
        cwd: "/var/task",
      });
      expect(String(first.body.version)).toMatch(version);
      expect(first.body.sysPath).toEqual([
        "/var/task",
        `/opt/python/lib/${runtime}/site-packages`,
        "/opt/python",
        "/var/runtime",
      ]);
      expect(first.body.requestId).toMatch(/^[0-9a-f-]{36}$/);
      expect(String(first.body.arn)).toMatch(new RegExp(`:function:${name}$`));
      expect(first.body.remainingMs as number).toBeGreaterThan(0);
      const warm = await invoke(lambda, name, { n: 2 });
      expect(warm.body.initId).toBe(first.body.initId);
      expect(warm.body.requestId).not.toBe(first.body.requestId);
    },
  );

  it("puts print and logging lines in the log tail, between START and END", async () => {
    const res = await invoke(lambda, "py313", { n: "tail" }, true);
    expect(res.functionError).toBeUndefined();
    expect(res.log).toMatch(/^START RequestId: \S+/m);
    expect(res.log).toContain('printed {"n": "tail"}');
    // awslambdaric's log format: [LEVEL]\ttimestamp\trequest id\tmessage
    expect(res.log).toMatch(/\[INFO\]\t\S+\t[0-9a-f-]{36}\tlogged tail/);
    expect(res.log).toMatch(/^END RequestId: \S+/m);
    expect(res.log).toMatch(/^REPORT RequestId: \S+\s+Duration: [\d.]+ ms/m);
  });

  it("reports a raised exception as {errorMessage, errorType, stackTrace} and keeps the runtime", async () => {
    // A function of its own: its one worker raises, and then serves the next invocation.
    const res = await invoke(lambda, "pyerr", { action: "fail", why: "nope" });
    expect(res.functionError).toBe("Unhandled");
    expect(res.body.errorType).toBe("ValueError");
    const m = /^bad input: nope in ([0-9a-f]{32})$/.exec(String(res.body.errorMessage));
    expect(m).not.toBeNull();
    expect(Array.isArray(res.body.stackTrace)).toBe(true);
    expect((res.body.stackTrace as string[]).join("\n")).toContain("app.py");
    // The gateway gives the worker back in the background: wait for it, so the next call is its.
    const workers = () => stack.agent.agent.listWorkers({ namespace: "default", name: "pyerr" });
    await waitFor(() => workers().length === 1 && workers()[0].state !== "busy", 60_000, "pyerr idle");
    const after = await invoke(lambda, "pyerr", { n: "after" });
    expect(after.functionError).toBeUndefined();
    expect(after.body.initId).toBe(m![1]);
  });

  it("times out after the function timeout and recovers", async () => {
    expect((await invoke(lambda, "pyslow", { n: 0 })).functionError).toBeUndefined();
    const res = await invoke(lambda, "pyslow", { action: "sleep", seconds: 3 });
    expect(res.functionError).toBe("Unhandled");
    expect(String(res.body.errorMessage)).toContain("Task timed out after 1.00 seconds");
    const next = await invoke(lambda, "pyslow", { n: 1 });
    expect(next.functionError).toBeUndefined();
    expect(next.body).toMatchObject({ event: { n: 1 } });
  });

  it("stops a function that allocates past memorySize with a Runtime error, and recovers", async () => {
    const res = await invoke(lambda, "pyhog", { action: "oom" });
    expect(res.functionError).toBe("Unhandled");
    expect(String(res.body.errorType)).toMatch(/^Runtime\./);
    const next = await invoke(lambda, "pyhog", { n: 1 });
    expect(next.body).toMatchObject({ event: { n: 1 } });
  });

  it("imports boto3 from the runtime, a handler in a package subfolder and a dependency from the code", async () => {
    const res = await invoke(lambda, "pypkg", {});
    expect(res.functionError).toBeUndefined();
    expect(res.body).toMatchObject({ boto3: "1.44.8", s3: "s3", dep: "from the zip" });
    expect(String(res.body.boto3Path)).toMatch(/^\/var\/runtime\/boto3\//);
  });

  it("reports a missing handler module as Runtime.ImportModuleError", async () => {
    const res = await invoke(lambda, "pynomodule", {});
    expect(res.functionError).toBe("Unhandled");
    expect(res.body.errorType).toBe("Runtime.ImportModuleError");
    expect(String(res.body.errorMessage)).toContain("No module named 'missing'");
  });

  it("runs sandboxed like every worker: seccomp, no capabilities, not root, read-only root and code", async () => {
    const res = await invoke(lambda, "pyprobe", {});
    expect(res.functionError).toBeUndefined();
    const status = res.body.status as Record<string, string>;
    expect(status).toMatchObject({
      Seccomp: "2",
      NoNewPrivs: "1",
      CapEff: "0000000000000000",
      CapPrm: "0000000000000000",
    });
    expect(status.Uid.split("\t")[0]).not.toBe("0");
    expect(res.body.writes).toEqual({ root: "EROFS", task: "EROFS", tmp: "written" });
  });
});
