/** Per-transaction limits, with the defaults of the Convex docs' limits page. */
export interface TransactionLimits {
  /** Documents returned by `get` and index scans (filtered-out documents count too). */
  maxDocumentsRead: number;
  maxBytesRead: number;
  /** `get` calls plus index range scans. */
  maxIndexRanges: number;
  maxDocumentsWritten: number;
  maxBytesWritten: number;
}

export const DEFAULT_TRANSACTION_LIMITS: Readonly<TransactionLimits> = {
  maxDocumentsRead: 32_000,
  maxBytesRead: 16 * 1024 * 1024,
  maxIndexRanges: 4096,
  maxDocumentsWritten: 16_000,
  maxBytesWritten: 16 * 1024 * 1024,
};
