/**
 * Stabbing queries over many key intervals: which of them contain a key.
 * The subscription manager keeps one per database index, holding the ranges
 * that live queries read; each key a commit writes is one query, answered
 * in O(log n + hits) instead of a pass over every subscription.
 *
 * The structure is a centered interval tree built from scratch when it is
 * queried after a change (adds and removes are O(1) until then). Commits and
 * subscription changes both arrive in bursts, so one rebuild serves many
 * lookups; a rebuild is O(n log n).
 */
import { compareKeys } from "../values/index.js";

export interface KeyInterval {
  /** Inclusive. */
  readonly start: Buffer;
  /** Exclusive; `null` = unbounded. */
  readonly end: Buffer | null;
}

interface Entry<T> {
  start: Buffer;
  end: Buffer | null;
  value: T;
}

interface TreeNode<T> {
  center: Buffer;
  /** Entries containing `center`, by start ascending. */
  byStart: Entry<T>[];
  /** The same entries, by end descending (unbounded first). */
  byEnd: Entry<T>[];
  left: TreeNode<T> | null;
  right: TreeNode<T> | null;
}

/** `a < b` for exclusive ends where `null` is +infinity. */
function endAfter(end: Buffer | null, key: Buffer): boolean {
  return end === null || compareKeys(end, key) > 0;
}

export class IntervalIndex<T> {
  private entries = new Set<Entry<T>>();
  private byValue = new Map<T, Entry<T>[]>();
  private root: TreeNode<T> | null = null;
  private dirty = false;

  get size(): number {
    return this.entries.size;
  }

  add(interval: KeyInterval, value: T): void {
    if (interval.end !== null && compareKeys(interval.start, interval.end) >= 0) return;
    const entry: Entry<T> = { start: interval.start, end: interval.end, value };
    this.entries.add(entry);
    let list = this.byValue.get(value);
    if (list === undefined) {
      list = [];
      this.byValue.set(value, list);
    }
    list.push(entry);
    this.dirty = true;
  }

  /** Removes every interval added with `value`. */
  delete(value: T): void {
    const list = this.byValue.get(value);
    if (list === undefined) return;
    for (const e of list) this.entries.delete(e);
    this.byValue.delete(value);
    this.dirty = true;
  }

  /** Calls `hit` for the value of every interval containing `key` (a value once per interval). */
  stab(key: Buffer, hit: (value: T) => void): void {
    if (this.dirty) this.rebuild();
    let node = this.root;
    while (node !== null) {
      const c = compareKeys(key, node.center);
      if (c < 0) {
        // Every entry here ends after the center > key: hits are those starting at or before key.
        for (const e of node.byStart) {
          if (compareKeys(e.start, key) > 0) break;
          hit(e.value);
        }
        node = node.left;
      } else {
        // Every entry here starts at or before the center <= key: hits are those ending after key.
        for (const e of node.byEnd) {
          if (!endAfter(e.end, key)) break;
          hit(e.value);
        }
        if (c === 0) return;
        node = node.right;
      }
    }
  }

  private rebuild(): void {
    this.root = build([...this.entries]);
    this.dirty = false;
  }
}

function build<T>(entries: Entry<T>[]): TreeNode<T> | null {
  if (entries.length === 0) return null;
  // The median start is a center that every level halves the entries around.
  const starts = entries.map((e) => e.start).sort(compareKeys);
  const center = starts[starts.length >> 1]!;
  const here: Entry<T>[] = [];
  const left: Entry<T>[] = [];
  const right: Entry<T>[] = [];
  for (const e of entries) {
    if (!endAfter(e.end, center)) left.push(e);
    else if (compareKeys(e.start, center) > 0) right.push(e);
    else here.push(e);
  }
  const byStart = [...here].sort((a, b) => compareKeys(a.start, b.start));
  const byEnd = here.sort((a, b) => {
    if (a.end === null) return b.end === null ? 0 : -1;
    if (b.end === null) return 1;
    return compareKeys(b.end, a.end);
  });
  return { center, byStart, byEnd, left: build(left), right: build(right) };
}
