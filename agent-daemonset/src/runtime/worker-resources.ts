/** Memory (MiB) that buys one full vCPU in AWS Lambda. */
const MB_PER_VCPU = 1769;

/**
 * CPU shares for a memory size: proportional like Lambda (1024 shares, a full
 * CPU's weight, per 1769 MiB), at least 2 (the kernel's minimum). Shared by
 * the containerd and Docker runtimes so both weigh workers the same.
 */
export function cpuSharesFor(memoryMb: number): number {
  return Math.max(2, Math.round((1024 * memoryMb) / MB_PER_VCPU));
}
