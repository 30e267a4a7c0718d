/**
 * Errors the database reports to its callers. `ConflictError` is the one a
 * caller should retry (the function runner re-runs the mutation); the others
 * describe a mistake in the request and are final.
 */

/** An optimistic-concurrency conflict: a commit since this transaction began wrote something it read. */
export class ConflictError extends Error {
  override name = "ConflictError";
  readonly retryable = true;
  constructor(
    message: string,
    /** The table whose data changed, when known. */
    readonly table: string | null = null,
  ) {
    super(message);
  }
}

/** A per-transaction limit from the Convex docs was exceeded. */
export class TransactionLimitError extends Error {
  override name = "TransactionLimitError";
  constructor(
    message: string,
    readonly limit: string,
  ) {
    super(message);
  }
}

/** The request cannot be carried out as asked (missing document, unknown index, bad range, …). */
export class DatabaseError extends Error {
  override name = "DatabaseError";
}

/** A read at a timestamp whose versions are no longer retained. */
export class SnapshotTooOldError extends Error {
  override name = "SnapshotTooOldError";
}
