// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, expect, it } from "@jest/globals";
import { loadAgentConfig, AgentConfigError } from "./agent-config.js";
import { loadWorkerAwsEnv } from "./worker-aws-env.js";

describe("loadWorkerAwsEnv", () => {
  it("splits endpoints (overridable defaults) from credentials (reserved)", () => {
    expect(
      loadWorkerAwsEnv({
        WORKER_AWS_ENDPOINT_URL_S3: "http://10.88.0.1:4510",
        WORKER_AWS_ENDPOINT_URL_DYNAMODB: "http://10.88.0.1:4510",
        WORKER_AWS_ACCESS_KEY_ID: "AKIDLOCAL",
        WORKER_AWS_SECRET_ACCESS_KEY: "s3cr3t",
        WORKER_AWS_SESSION_TOKEN: "tok",
      }),
    ).toEqual({
      endpoints: {
        AWS_ENDPOINT_URL_S3: "http://10.88.0.1:4510",
        AWS_ENDPOINT_URL_DYNAMODB: "http://10.88.0.1:4510",
      },
      credentials: {
        AWS_ACCESS_KEY_ID: "AKIDLOCAL",
        AWS_SECRET_ACCESS_KEY: "s3cr3t",
        AWS_SESSION_TOKEN: "tok",
      },
    });
    expect(loadWorkerAwsEnv({})).toEqual({ endpoints: {}, credentials: {} });
  });

  it.each([
    [{ WORKER_AWS_ENDPOINT_URL_S3: "10.88.0.1:4510" }, /WORKER_AWS_ENDPOINT_URL_S3.*not a URL/],
    [{ WORKER_AWS_ENDPOINT_URL_DYNAMODB: "ftp://x" }, /WORKER_AWS_ENDPOINT_URL_DYNAMODB.*http or https/],
    [{ WORKER_AWS_ENDPOINT_URL_S3: "http://k:s@10.0.0.1" }, /must not carry credentials/],
    [{ WORKER_AWS_ACCESS_KEY_ID: "AKID" }, /must be set together/],
    [{ WORKER_AWS_SESSION_TOKEN: "t" }, /needs WORKER_AWS_ACCESS_KEY_ID/],
  ])("refuses %j, naming the variable (an AgentConfigError from loadAgentConfig)", (env, message) => {
    expect(() => loadWorkerAwsEnv(env)).toThrow(message);
    expect(() => loadAgentConfig({ ...env, AGENT_AUTH: "token" }, () => false)).toThrow(AgentConfigError);
  });
});
