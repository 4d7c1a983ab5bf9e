import { createHash, timingSafeEqual } from "node:crypto";
import { AGENT_ROLES, readAgentTokensFile, type AgentTokens } from "@esb/common/agent-credentials";
import type { AgentAuthenticator, AgentCaller } from "./agent-auth.js";

/**
 * Standalone authentication: one secret token per role, from a file readable by
 * its owner only (`esb up` writes it, root-owned, in its state folder). Tokens
 * are compared in constant time.
 */
export class StaticTokenAuthenticator implements AgentAuthenticator {
  readonly name = "token";
  private readonly digests: { role: AgentCaller["role"]; digest: Buffer }[];

  constructor(tokens: AgentTokens) {
    this.digests = AGENT_ROLES.map((role) => ({ role, digest: sha256(tokens[role]) }));
  }

  /** Reads the tokens with {@link readAgentTokensFile} (which refuses a file others may read). */
  static fromFile(path: string): StaticTokenAuthenticator {
    return new StaticTokenAuthenticator(readAgentTokensFile(path));
  }

  authenticate(token: string): Promise<AgentCaller | undefined> {
    // Comparing fixed-size digests keeps the comparison constant-time whatever the token's length.
    const d = sha256(token);
    let found: AgentCaller | undefined;
    for (const { role, digest } of this.digests) {
      if (timingSafeEqual(d, digest)) found = { identity: `standalone:${role}`, role };
    }
    return Promise.resolve(found);
  }
}

function sha256(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}
