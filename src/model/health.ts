/**
 * Health words shared by every component that reports on itself (channels, token
 * chains, the ledger) and the HTTP surface that shows them.
 */

/** One dependency's state, as `/readyz` reports it. */
export interface CheckResult {
  ok: boolean;
  detail?: string;
}
