import { createHash } from "node:crypto";
import type { AgentEndpoint } from "./agent-directory.js";

/** Each agent's share of a function's provisioned and reserved concurrency, by agent URL. */
export interface Shares {
  provisioned: Map<string, number>;
  /** Undefined: no reservedConcurrency (each agent limited by its memory only). */
  reserved?: Map<string, number>;
}

/**
 * Splits `total` workers (provisioned or reserved) over `agents` (sorted by name): every agent
 * gets ⌊total/n⌋ and the remainder goes to consecutive agents starting at an
 * offset derived from the function key, so that functions spread over nodes.
 * The shares always sum to `total`.
 */
export function distribute(total: number, agents: AgentEndpoint[], key: string): Map<string, number> {
  const shares = new Map<string, number>();
  const n = agents.length;
  if (n === 0) return shares;
  const base = Math.floor(total / n);
  const extra = total % n;
  const offset = createHash("sha256").update(key).digest().readUInt32BE(0) % n;
  agents.forEach((a, i) => shares.set(a.url, base + ((i - offset + n) % n < extra ? 1 : 0)));
  return shares;
}
