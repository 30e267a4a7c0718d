/**
 * The read set of a transaction or query: per index, the key intervals it
 * observed. A write whose index key falls inside one of them would have
 * changed what was read. Exact keys (point reads) are kept in a hash set,
 * ranges in a list that is sorted and merged before lookups.
 */
import { compareKeys } from "../values/index.js";

export interface Interval {
  /** Inclusive. */
  start: Buffer;
  /** Exclusive; `null` = unbounded. */
  end: Buffer | null;
}

class IndexReads {
  points: Set<string> | null = null;
  ranges: Interval[] = [];
  sorted = true;

  normalize(): Interval[] {
    if (this.sorted) return this.ranges;
    const rs = this.ranges.sort((a, b) => compareKeys(a.start, b.start));
    const merged: Interval[] = [];
    for (const r of rs) {
      const last = merged[merged.length - 1];
      if (last && (last.end === null || compareKeys(r.start, last.end) <= 0)) {
        if (last.end !== null && (r.end === null || compareKeys(r.end, last.end) > 0))
          last.end = r.end;
      } else {
        merged.push({ start: r.start, end: r.end });
      }
    }
    this.ranges = merged;
    this.sorted = true;
    return merged;
  }

  overlaps(key: Buffer, text?: string): boolean {
    if (this.points?.has(text ?? key.toString("latin1"))) return true;
    const rs = this.normalize();
    let lo = 0;
    let hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = rs[mid]!;
      if (compareKeys(key, r.start) < 0) hi = mid - 1;
      else if (r.end !== null && compareKeys(key, r.end) >= 0) lo = mid + 1;
      else return true;
    }
    return false;
  }
}

const EMPTY_POINTS: ReadonlySet<string> = new Set();

export class ReadSet {
  private readonly byIndex = new Map<number, IndexReads>();

  /** Forgets every read recorded. */
  clear(): void {
    this.byIndex.clear();
  }

  private reads(indexNumber: number): IndexReads {
    let r = this.byIndex.get(indexNumber);
    if (!r) {
      r = new IndexReads();
      this.byIndex.set(indexNumber, r);
    }
    return r;
  }

  /** Records that exactly `key` was looked up (present or not). */
  addPoint(indexNumber: number, key: Buffer): void {
    const r = this.reads(indexNumber);
    r.points ??= new Set();
    r.points.add(key.toString("latin1"));
  }

  /** Records that every key in `[start, end)` was observed. Empty intervals are ignored. */
  addRange(indexNumber: number, start: Buffer, end: Buffer | null): void {
    if (end !== null && compareKeys(start, end) >= 0) return;
    const r = this.reads(indexNumber);
    r.ranges.push({ start, end });
    r.sorted = r.ranges.length <= 1;
  }

  /**
   * Whether a write of `key` in the given index would have changed what was
   * read (`text`: the key as a latin1 string, if the caller has it).
   */
  overlaps(indexNumber: number, key: Buffer, text?: string): boolean {
    const r = this.byIndex.get(indexNumber);
    return r?.overlaps(key, text) === true;
  }

  indexes(): IterableIterator<number> {
    return this.byIndex.keys();
  }

  /** The merged intervals of one index (points as one-key intervals), for inspection and subscriptions. */
  intervals(indexNumber: number): Interval[] {
    const r = this.byIndex.get(indexNumber);
    if (!r) return [];
    const out = [...r.normalize()];
    for (const p of r.points ?? []) {
      const start = Buffer.from(p, "latin1");
      const end = Buffer.alloc(start.length + 1);
      start.copy(end);
      out.push({ start, end });
    }
    return out.sort((a, b) => compareKeys(a.start, b.start));
  }

  /**
   * Each index's exact keys (as `latin1` strings of the key bytes) and merged
   * ranges, for structures that index many read sets (subscriptions).
   */
  *entries(): IterableIterator<{
    indexNumber: number;
    points: ReadonlySet<string>;
    ranges: readonly Interval[];
  }> {
    for (const [indexNumber, r] of this.byIndex) {
      yield { indexNumber, points: r.points ?? EMPTY_POINTS, ranges: r.normalize() };
    }
  }

  get isEmpty(): boolean {
    return this.byIndex.size === 0;
  }
}
