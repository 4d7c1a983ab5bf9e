#!/usr/bin/env node
import { mkdirSync, readFileSync, realpathSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Command, InvalidArgumentError, Option } from "commander";
import { pino } from "pino";
import { createLogger, setLogDestination } from "@esb/common";
import { parseDestinations } from "@esb/agent/network/worker-firewall";
import { parseCredentials } from "@esb/gateway/sigv4-credentials";
import { credentialsFromEnv, invokeFunction } from "./invoke-command.js";
import type { LogStoreChoice } from "./log-store.js";
import { LogsCommandError, logsConnection, runLogsCommand } from "./logs-command.js";
import { StandaloneStack, esbVersion } from "./standalone-stack.js";
import { TerminalLogStream, functionLogText } from "./terminal-log.js";
import { dataServiceSetting, readWorkerCredentials } from "./data-services/data-service-options.js";
import { DEFAULT_DATA_PROXY_PORT, type DataServiceSetting } from "./data-services/data-services.js";

function portNumber(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new InvalidArgumentError("not a port number (0-65535)");
  return n;
}

function workerEgress(value: string): "allow" | "deny" {
  if (value !== "allow" && value !== "deny") throw new InvalidArgumentError("allow or deny");
  return value;
}

function workerDestination(value: string, list: string[]): string[] {
  try {
    parseDestinations(value, "--worker-allow");
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  return [...list, value];
}

/** Builds the `esb` command line. */
export function buildProgram(): Command {
  const program = new Command("esb")
    .description("ESB (Edge Serverless Box): AWS Lambda functions on your own machine or Kubernetes cluster")
    .version(esbVersion());

  program
    .command("up")
    .description(
      "run agent, gateway and controller on this machine (containerd-backed), serving the functions in a folder",
    )
    .option("-f, --functions <dir>", "folder of LambdaFunction manifests (watched)", "examples/functions")
    .option(
      "--code-root <dir>",
      "another folder that spec.code.path may name (repeatable; default: only the functions folder)",
      (dir: string, dirs: string[]) => [...dirs, dir],
      [] as string[],
    )
    .option("-p, --port <port>", "gateway port", portNumber, 9000)
    .option("--host <address>", "gateway listen address", "127.0.0.1")
    .option("--state-dir <dir>", "containerd, agent and CNI state", "/var/lib/esb/standalone")
    .option("--agent-port <port>", "agent gRPC port on 127.0.0.1 (0: any free port)", portNumber, 0)
    .option("--bridge <name>", "worker bridge", "esb-cni0")
    .option("--subnet <cidr>", "worker subnet", "10.88.0.0/16")
    .option(
      "--worker-egress <policy>",
      "allow: workers reach the public internet; deny: only --worker-allow destinations",
      workerEgress,
      "allow",
    )
    .option(
      "--worker-allow <ipv4[/prefix][:port]>",
      "a destination workers may reach although private, e.g. a database on the bridge address 10.88.0.1:5432 (repeatable)",
      workerDestination,
      [] as string[],
    )
    .addOption(
      new Option(
        "--credentials <file>",
        "YAML/JSON file of access keys callers sign with (AWS SigV4), each scoped to namespaces (default: no auth)",
      ).env("ESB_GATEWAY_CREDENTIALS"),
    )
    .addOption(
      new Option("--auth-scope <scope>", "with --credentials: what must be signed (all: HTTP routes too)")
        .choices(["invokeApi", "all"])
        .default("invokeApi"),
    )
    .option(
      "--logs-port <port>",
      "port of the embedded VictoriaLogs on 127.0.0.1 (0: any free port)",
      portNumber,
      9428,
    )
    .option(
      "--logs-retention <period>",
      "how long the embedded VictoriaLogs keeps function logs, e.g. 7d, 4w",
      "7d",
    )
    .addOption(
      new Option(
        "--logs-url <url>",
        "ship function logs to this existing VictoriaLogs instead (credentials: ESB_LOGS_USERNAME, ESB_LOGS_PASSWORD)",
      ).env("ESB_LOGS_URL"),
    )
    .option("--no-logs", "keep no function logs (esb logs then has nothing to read; Tail still works)")
    .option(
      "--s3 <embedded|off|url>",
      "S3 for functions: run here (versitygw), off, or an existing endpoint's URL",
      dataServiceSetting,
      "embedded" as DataServiceSetting,
    )
    .option(
      "--dynamodb <embedded|off|url>",
      "DynamoDB for functions: run here (Dynoxide), off, or an existing endpoint's URL",
      dataServiceSetting,
      "embedded" as DataServiceSetting,
    )
    .option(
      "--data-port <port>",
      "port of the S3/DynamoDB proxy on the worker bridge's gateway address",
      portNumber,
      DEFAULT_DATA_PROXY_PORT,
    )
    .option(
      "--worker-aws-credentials <file>",
      "AWS shared-credentials file whose [default] keys workers get (only with --s3 and --dynamodb off or URLs)",
    )
    .addOption(
      new Option(
        "--log-format <format>",
        "human: progress, function changes and warnings here, JSON logs in <state-dir>/esb.log; json: every JSON log line here",
      )
        .choices(["human", "json"])
        .default("human"),
    )
    .action(
      async (opts: {
        functions: string;
        codeRoot: string[];
        port: number;
        host: string;
        stateDir: string;
        agentPort: number;
        bridge: string;
        subnet: string;
        workerEgress: "allow" | "deny";
        workerAllow: string[];
        credentials?: string;
        authScope: "invokeApi" | "all";
        logFormat: "human" | "json";
        logs: boolean;
        logsPort: number;
        logsRetention: string;
        logsUrl?: string;
        s3: DataServiceSetting;
        dynamodb: DataServiceSetting;
        dataPort: number;
        workerAwsCredentials?: string;
      }) => {
        const progress = (line: string) => process.stderr.write(`esb up: ${line}\n`);
        if (opts.logFormat === "human") {
          // JSON logs go to a file; people see progress, function changes and warnings.
          const logFile = join(opts.stateDir, "esb.log");
          mkdirSync(opts.stateDir, { recursive: true });
          setLogDestination(
            pino.multistream([
              { level: "trace", stream: pino.destination({ dest: logFile, append: true, sync: true }) },
              { level: "warn", stream: new TerminalLogStream(process.stderr) },
            ]),
          );
          progress(`logs (JSON) in ${logFile}; warnings and errors also here`);
        }
        const logger = createLogger("esb");
        let started = false;
        if (opts.credentials) {
          // Checked before anything starts: a typo should not cost a containerd start-up.
          try {
            parseCredentials(readFileSync(opts.credentials, "utf8"), opts.credentials);
          } catch (err) {
            process.stderr.write(`esb up: --credentials: ${(err as Error).message}\n`);
            process.exit(2);
          }
          if (statSync(opts.credentials).mode & 0o077)
            progress(`warning: ${opts.credentials} holds secrets but others may read it (chmod 600)`);
        }
        const stack = new StandaloneStack({
          functionsDir: opts.functions,
          codeRoots: opts.codeRoot,
          port: opts.port,
          host: opts.host,
          stateDir: opts.stateDir,
          agentPort: opts.agentPort,
          bridge: opts.bridge,
          subnet: opts.subnet,
          workerEgress: opts.workerEgress,
          workerAllowedDestinations: opts.workerAllow,
          credentialsFile: opts.credentials,
          authScope: opts.authScope,
          logs: logStoreChoice(opts),
          // Function output on the terminal, one readable line each (the JSON mode prints JSON only).
          onFunctionLog:
            opts.logFormat === "human" ? (r) => process.stderr.write(`${functionLogText(r)}\n`) : undefined,
          dataServices: {
            s3: opts.s3,
            dynamodb: opts.dynamodb,
            proxyPort: opts.dataPort,
            workerCredentials: opts.workerAwsCredentials
              ? readWorkerCredentials(opts.workerAwsCredentials)
              : undefined,
          },
          logger,
          progress,
          onFunctionChange: (f) => {
            if (started) progress(`${f.name}: ${f.ready ? "ready" : `not ready: ${f.reason} ${f.message}`}`);
          },
        });
        let stopping = false;
        const shutdown = (signal: string) => {
          if (stopping) return;
          stopping = true;
          progress(`${signal}: stopping, removing workers`);
          stack.stop().then(
            () => {
              progress("stopped; no workers left");
              process.exit(0);
            },
            (err: unknown) => {
              process.stderr.write(`esb up: stop failed: ${(err as Error).message}\n`);
              process.exit(1);
            },
          );
        };
        process.on("SIGINT", () => shutdown("SIGINT"));
        process.on("SIGTERM", () => shutdown("SIGTERM"));
        try {
          await stack.start();
        } catch (err) {
          process.stderr.write(`esb up: ${(err as Error).message}\n`);
          process.exit(1);
        }
        progress("preparing functions (the first start builds the runtime images)...");
        const functions = await stack.waitForFunctions(180_000);
        const { invalid } = stack.report();
        for (const f of functions) {
          progress(
            `  ${f.ready ? "ready " : "FAILED"} ${f.name}${f.ready ? "" : `: ${f.reason} ${f.message}`}`,
          );
        }
        // Each message already names its file.
        for (const errors of invalid.values()) progress(`  invalid manifest skipped: ${errors.join("; ")}`);
        const example = functions.find((f) => f.ready)?.name ?? "<name>";
        if (!opts.credentials && !["127.0.0.1", "localhost", "::1"].includes(opts.host))
          progress(
            `warning: anyone who reaches ${opts.host}:${opts.port} can invoke every function (see --credentials)`,
          );
        started = true;
        progress(
          opts.credentials
            ? `ESB is up. Try (with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY of a key in ${opts.credentials}): ` +
                `aws lambda invoke --endpoint-url ${stack.gatewayUrl} --function-name ${example} out.json   (Ctrl-C stops)`
            : `ESB is up. Try: curl -s -XPOST ${stack.gatewayUrl}/2015-03-31/functions/${example}/invocations -d '{}'   (Ctrl-C stops)`,
        );
      },
    );

  program
    .command("invoke")
    .description("invoke a function through the gateway (like aws lambda invoke --endpoint-url)")
    .argument("<function>", "function name (namespace/name for another namespace)")
    .option("-d, --payload <json>", "event payload", "{}")
    .option("-g, --gateway <url>", "gateway URL", "http://127.0.0.1:9000")
    .option("-t, --type <type>", "RequestResponse, Event or DryRun", "RequestResponse")
    .option("--tail", "print the invocation's log tail", false)
    .addHelpText(
      "after",
      "\nWith AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set, the request is signed (SigV4), as the AWS CLI signs it.",
    )
    .action(async (name: string, opts: { payload: string; gateway: string; type: string; tail: boolean }) => {
      try {
        JSON.parse(opts.payload);
      } catch {
        process.stderr.write("esb invoke: --payload is not valid JSON\n");
        process.exit(2);
      }
      const result = await invokeFunction(name, {
        gateway: opts.gateway,
        payload: opts.payload,
        invocationType: opts.type,
        tail: opts.tail,
        // Signed like the AWS CLI when the standard AWS variables are set (a gateway with --credentials).
        credentials: credentialsFromEnv(),
        region: process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || undefined,
      }).catch((err: unknown) => {
        process.stderr.write(`esb invoke: ${(err as Error).message}\n`);
        process.exit(1);
      });
      if (result.log) process.stderr.write(result.log);
      if (result.body) process.stdout.write(`${result.body}\n`);
      if (result.status >= 300 || result.functionError) {
        process.stderr.write(
          `esb invoke: status ${result.status}${result.functionError ? `, function error ${result.functionError}` : ""}\n`,
        );
        process.exitCode = 1;
      }
    });
  program
    .command("logs")
    .description(
      "print a function's logs from the log store (VictoriaLogs) that esb up or the chart ships them to",
    )
    .argument("<function>", "function name (namespace/name for another namespace)")
    .option("-f, --follow", "keep printing new lines (Ctrl-C stops)", false)
    .option("--since <duration>", "how far back, e.g. 30s, 10m, 2h, 1d", "10m")
    .option("--request-id <id>", "only the lines of one invocation")
    .option(
      "--json",
      "one JSON object per line (time, message, function, node, worker, stream, requestId…)",
      false,
    )
    .option("--limit <n>", "most lines of history (the newest)", (v: string) => positive(v), 1000)
    .addOption(
      new Option(
        "--logs-url <url>",
        "VictoriaLogs base URL (default: the one esb up on --state-dir runs)",
      ).env("ESB_LOGS_URL"),
    )
    .option("--state-dir <dir>", "state folder of the esb up whose logs are read", "/var/lib/esb/standalone")
    .addHelpText(
      "after",
      "\nWith --logs-url, ESB_LOGS_USERNAME and ESB_LOGS_PASSWORD give the store's Basic credentials.",
    )
    .action(
      async (
        name: string,
        opts: {
          follow: boolean;
          since: string;
          requestId?: string;
          json: boolean;
          limit: number;
          logsUrl?: string;
          stateDir: string;
        },
      ) => {
        const controller = new AbortController();
        process.on("SIGINT", () => controller.abort());
        try {
          const n = await runLogsCommand({
            function: name,
            since: opts.since,
            requestId: opts.requestId,
            follow: opts.follow,
            json: opts.json,
            limit: opts.limit,
            connection: logsConnection(opts.logsUrl, opts.stateDir),
            out: (line) => process.stdout.write(`${line}\n`),
            signal: controller.signal,
          });
          if (n === 0 && !opts.follow)
            process.stderr.write(`esb logs: no lines of ${name} in the last ${opts.since}\n`);
        } catch (err) {
          process.stderr.write(`esb logs: ${(err as Error).message}\n`);
          process.exit(err instanceof LogsCommandError ? 2 : 1);
        }
      },
    );
  return program;
}

function positive(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("a whole number, at least 1");
  return n;
}

/** `esb up`'s log store from --no-logs, --logs-url and --logs-port. */
function logStoreChoice(opts: {
  logs: boolean;
  logsPort: number;
  logsRetention: string;
  logsUrl?: string;
}): LogStoreChoice {
  if (!opts.logs) return { kind: "off" };
  if (opts.logsUrl)
    return {
      kind: "external",
      url: opts.logsUrl,
      username: process.env.ESB_LOGS_USERNAME || undefined,
      password: process.env.ESB_LOGS_PASSWORD || undefined,
    };
  return { kind: "embedded", port: opts.logsPort, retention: opts.logsRetention };
}

const invokedDirectly =
  process.argv[1] && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
if (invokedDirectly) {
  buildProgram()
    .parseAsync(process.argv)
    .catch((err: unknown) => {
      process.stderr.write(`esb: ${(err as Error).message}\n`);
      process.exit(1);
    });
}
