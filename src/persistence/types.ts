/**
 * What the database needs from durable storage. Persistence knows bytes,
 * table and index numbers and timestamps; it does not know what a value, a
 * transaction or a function is. Every method may be asynchronous so that a
 * networked store (PostgreSQL) can implement the same interface; the three
 * reads may also answer at once (an embedded store does), which lets a
 * function execution get its answer without leaving the isolate.
 *
 * Data model: a multiversion log. A document version is (table, id, ts,
 * JSON text or null for a tombstone). An index entry is (index, key, ts,
 * document id or null for "this key is gone from ts on"). The state at
 * timestamp T is, for every (table, id) and every (index, key), the latest
 * version with ts <= T.
 */

import type { MaybePromise } from "../values/index.js";

/** One document version: what a commit wrote for one document. */
export interface DocumentWrite {
  tableNumber: number;
  /** The document's `by_id` key (`encodeKey([id])`). */
  id: Buffer;
  ts: bigint;
  /** The whole document in the JSON wire form, or `null` for a deletion. */
  value: string | null;
}

/** One index entry version. */
export interface IndexWrite {
  indexNumber: number;
  key: Buffer;
  ts: bigint;
  /** The `by_id` key of the document the entry points at, or `null` when the key is removed at `ts`. */
  docId: Buffer | null;
}

/** Writes of one or more commits, made durable together. */
export interface WriteBatch {
  documents: DocumentWrite[];
  indexes: IndexWrite[];
  /**
   * The largest commit timestamp in the batch, persisted so timestamps never
   * go backwards; absent for batches that add index entries at old timestamps
   * (backfills).
   */
  maxTs?: bigint;
  /** Answers of mutations in this batch that a client may send again (see `MutationAnswer`). */
  answers?: MutationAnswer[];
}

/**
 * What a client was (or was about to be) told about a mutation it may send
 * again after a reconnect, stored with the mutation's commit so that a
 * server restarted in between answers the resend instead of running the
 * mutation twice. Opaque to the persistence apart from its key and `ts`.
 */
export interface MutationAnswer {
  /** The client's session id. */
  client: string;
  /** The client's id of the request within its session. */
  requestId: number;
  /** The commit timestamp of the mutation. */
  ts: bigint;
  text: string;
}

/** A half-open key range `[start, end)`; `end === null` means unbounded. */
export interface KeyRange {
  start: Buffer;
  end: Buffer | null;
}

export type Order = "asc" | "desc";

/** A live index entry as seen at some timestamp. */
export interface IndexEntry {
  key: Buffer;
  docId: Buffer;
}

/** A live document as seen at some timestamp. */
export interface StoredDocument {
  id: Buffer;
  /** Timestamp of the version. */
  ts: bigint;
  value: string;
}

/** A row of the log, in timestamp order. */
export interface LogEntry {
  tableNumber: number;
  id: Buffer;
  ts: bigint;
  value: string | null;
}

export interface PersistenceMetadata {
  /** The largest timestamp ever persisted (0 for a new store). */
  maxTs: bigint;
  /** Versions older than this may have been garbage-collected. */
  retainedFromTs: bigint;
}

export interface Persistence {
  /** Reads what reopening needs. Cheap: it must not scan the data. */
  load(): Promise<PersistenceMetadata>;

  /**
   * Appends a batch atomically. The batch is applied before `write` returns:
   * reads made after the call see it, although it is not durable yet; if it
   * cannot be applied, `write` throws and nothing of it is visible. The
   * promise resolves once the batch is durable (survives a process kill and
   * a power cut); on rejection the store should be treated as failed. The
   * database calls it again before an earlier call resolved (batches are
   * pipelined): batches must be applied in call order.
   */
  write(batch: WriteBatch): Promise<void>;

  /** The JSON of the document version visible at `ts`, or null if the document does not exist then. */
  getDocument(tableNumber: number, id: Buffer, ts: bigint): MaybePromise<string | null>;

  /**
   * Up to `limit` documents of a table visible at `ts`, ordered by id, with
   * ids in `range`. Callers continue a scan by narrowing the range past the
   * last id they received.
   */
  scanDocuments(
    tableNumber: number,
    range: KeyRange,
    ts: bigint,
    order: Order,
    limit: number,
  ): MaybePromise<StoredDocument[]>;

  /** Up to `limit` live entries of an index at `ts`, with keys in `range`, in key order. */
  scanIndex(
    indexNumber: number,
    range: KeyRange,
    ts: bigint,
    order: Order,
    limit: number,
  ): MaybePromise<IndexEntry[]>;

  /**
   * Log rows with `afterTs < ts <= untilTs`, in timestamp order: about
   * `limit` of them, but always whole commits (all rows of the last
   * timestamp returned are included, even past `limit`).
   */
  readLog(afterTs: bigint, untilTs: bigint, limit: number): Promise<LogEntry[]>;

  /**
   * Removes versions no reader at or after `cutoffTs` can see: for each
   * document written in `(afterTs, cutoffTs]` its superseded versions (and
   * the version itself if it is a deletion), and for each given index key
   * its entries superseded by a version at or before `cutoffTs`.
   */
  collectGarbage(work: GarbageWork): Promise<void>;

  /** The stored answer of a mutation (`WriteBatch.answers`), or null. */
  mutationAnswer(client: string, requestId: number): MaybePromise<MutationAnswer | null>;

  /** Removes up to `limit` stored answers of commits before `beforeTs`; resolves with how many. */
  forgetMutationAnswers(beforeTs: bigint, limit: number): Promise<number>;

  /**
   * Adds index entries for a backfill, durably. Entries that already exist
   * (same index, key and timestamp) are left as they are, so an interrupted
   * backfill can simply start over.
   */
  writeBackfill(entries: IndexWrite[]): Promise<void>;

  /** Deletes up to `limit` entries of a dropped index; resolves to how many were deleted. */
  dropIndexEntries(indexNumber: number, limit: number): Promise<number>;

  close(): Promise<void>;
}

/** One step of garbage collection, computed by the database from the log. */
export interface GarbageWork {
  /** Documents whose versions strictly older than `ts` are superseded (and `ts` itself if `deleted`). */
  documents: Array<{ tableNumber: number; id: Buffer; ts: bigint; deleted: boolean }>;
  /** Index keys whose entries older than `ts` are superseded (and `ts` itself if `removed`). */
  indexKeys: Array<{ indexNumber: number; key: Buffer; ts: bigint; removed: boolean }>;
  /** The new lower bound of readable timestamps, persisted with the deletions. */
  retainedFromTs: bigint;
}
