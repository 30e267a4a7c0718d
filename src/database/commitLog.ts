/**
 * The recent-commit log kept in memory: for each commit, every index key it
 * wrote (old and new keys of each changed document, in every index of its
 * table). Validation walks the commits after a transaction's begin
 * timestamp against its read set; later, subscriptions walk it the same way.
 * Entries older than the window are dropped; a transaction that began before
 * the oldest kept entry can no longer be validated and gets a conflict.
 */
import type { ReadSet } from "./readSet.js";

export interface WrittenKey {
  indexNumber: number;
  tableNumber: number;
  key: Buffer;
  /** `key` as a latin1 string, once something needed it (read sets keep point reads so). */
  text?: string;
}

export interface CommitRecord {
  ts: bigint;
  keys: WrittenKey[];
}

/** A commit as the log keeps it: its keys grouped by index too, once validation needs them so. */
interface Entry extends CommitRecord {
  byIndex?: Map<number, WrittenKey[]>;
}

function groupByIndex(keys: readonly WrittenKey[]): Map<number, WrittenKey[]> {
  const byIndex = new Map<number, WrittenKey[]>();
  for (const w of keys) {
    const group = byIndex.get(w.indexNumber);
    if (group === undefined) byIndex.set(w.indexNumber, [w]);
    else group.push(w);
  }
  return byIndex;
}

export class CommitLog {
  private entries: Entry[] = [];
  private head = 0;
  /** Transactions that began before this timestamp cannot be validated any more. */
  private horizon: bigint;

  constructor(
    startTs: bigint,
    private readonly maxEntries: number,
  ) {
    this.horizon = startTs;
  }

  get oldestValidatableTs(): bigint {
    return this.horizon;
  }

  append(record: CommitRecord): void {
    this.entries.push(record);
    if (this.entries.length - this.head > this.maxEntries) this.dropBefore(this.head + 1);
  }

  /** Forgets commits at or before `ts`. */
  trimThrough(ts: bigint): void {
    let i = this.head;
    while (i < this.entries.length && this.entries[i]!.ts <= ts) i++;
    if (i > this.head) this.dropBefore(i);
  }

  private dropBefore(index: number): void {
    this.horizon = this.entries[index - 1]!.ts;
    this.head = index;
    // Compact once the dead prefix dominates, keeping appends amortised O(1).
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }

  /** The first commit after `ts` (binary search). */
  private firstAfter(ts: bigint): number {
    let lo = this.head;
    let hi = this.entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.entries[mid]!.ts <= ts) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * The first key written after `beginTs` that the read set observed, or
   * null if none. Throws `RangeError` if commits after `beginTs` were already
   * forgotten.
   */
  findConflict(beginTs: bigint, reads: ReadSet): WrittenKey | null {
    if (beginTs < this.horizon) throw new RangeError("commit log no longer covers this timestamp");
    if (reads.isEmpty) return null;
    // A read set spans a few indexes and a commit writes keys in several:
    // each commit is looked up by the read indexes (its keys grouped once,
    // for all the transactions validated against it), not key by key.
    const indexes = [...reads.indexes()];
    for (let i = this.firstAfter(beginTs); i < this.entries.length; i++) {
      const entry = this.entries[i]!;
      entry.byIndex ??= groupByIndex(entry.keys);
      for (const indexNumber of indexes) {
        const written = entry.byIndex.get(indexNumber);
        if (written === undefined) continue;
        for (const w of written) {
          w.text ??= w.key.toString("latin1");
          if (reads.overlaps(indexNumber, w.key, w.text)) return w;
        }
      }
    }
    return null;
  }

  /** Commits after `ts`, oldest first. */
  *since(ts: bigint): Generator<CommitRecord> {
    for (let i = this.firstAfter(ts); i < this.entries.length; i++) yield this.entries[i]!;
  }

  get size(): number {
    return this.entries.length - this.head;
  }
}
