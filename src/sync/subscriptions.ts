/**
 * The subscription index: the read sets of every live query result, indexed
 * by database index and key so that each published commit is walked once —
 * one lookup per key it wrote — against all of them.
 */
import type { CommitRecord, ReadSet } from "../database/index.js";
import { IntervalIndex } from "./intervalIndex.js";

interface IndexSubscriptions<T> {
  /** Exact keys (latin1 strings of the key bytes) → subscribers. */
  points: Map<string, Set<T>>;
  ranges: IntervalIndex<T>;
}

export class SubscriptionIndex<T> {
  private readonly byIndex = new Map<number, IndexSubscriptions<T>>();
  /** Where each subscriber's points were put, for removal. */
  private readonly pointsOf = new Map<T, Array<{ indexNumber: number; key: string }>>();
  private readonly rangeIndexesOf = new Map<T, number[]>();

  get size(): number {
    return this.pointsOf.size;
  }

  private index(indexNumber: number): IndexSubscriptions<T> {
    let s = this.byIndex.get(indexNumber);
    if (s === undefined) {
      s = { points: new Map(), ranges: new IntervalIndex() };
      this.byIndex.set(indexNumber, s);
    }
    return s;
  }

  /** Subscribes `subscriber` to every key `readSet` covers. */
  add(subscriber: T, readSet: ReadSet): void {
    if (this.pointsOf.has(subscriber)) throw new Error("already subscribed");
    const points: Array<{ indexNumber: number; key: string }> = [];
    const rangeIndexes: number[] = [];
    for (const { indexNumber, points: keys, ranges } of readSet.entries()) {
      const s = this.index(indexNumber);
      for (const key of keys) {
        let set = s.points.get(key);
        if (set === undefined) {
          set = new Set();
          s.points.set(key, set);
        }
        set.add(subscriber);
        points.push({ indexNumber, key });
      }
      if (ranges.length > 0) {
        for (const r of ranges) s.ranges.add(r, subscriber);
        rangeIndexes.push(indexNumber);
      }
    }
    this.pointsOf.set(subscriber, points);
    this.rangeIndexesOf.set(subscriber, rangeIndexes);
  }

  delete(subscriber: T): void {
    const points = this.pointsOf.get(subscriber);
    if (points === undefined) return;
    for (const { indexNumber, key } of points) {
      const s = this.byIndex.get(indexNumber)!;
      const set = s.points.get(key);
      if (set === undefined) continue;
      set.delete(subscriber);
      if (set.size === 0) s.points.delete(key);
    }
    for (const indexNumber of this.rangeIndexesOf.get(subscriber) ?? []) {
      this.byIndex.get(indexNumber)?.ranges.delete(subscriber);
    }
    this.pointsOf.delete(subscriber);
    this.rangeIndexesOf.delete(subscriber);
  }

  forEach(f: (subscriber: T) => void): void {
    for (const subscriber of [...this.pointsOf.keys()]) f(subscriber);
  }

  /** Calls `hit(subscriber, ts)` once per subscriber whose read set one of `commits` wrote into, with the first such commit. */
  match(commits: readonly CommitRecord[], hit: (subscriber: T, ts: bigint) => void): void {
    const seen = new Set<T>();
    for (const commit of commits) {
      const report = (subscriber: T) => {
        if (seen.has(subscriber)) return;
        seen.add(subscriber);
        hit(subscriber, commit.ts);
      };
      for (const w of commit.keys) {
        const s = this.byIndex.get(w.indexNumber);
        if (s === undefined) continue;
        if (s.points.size > 0) {
          const set = s.points.get(w.key.toString("latin1"));
          if (set !== undefined) for (const sub of set) report(sub);
        }
        if (s.ranges.size > 0) s.ranges.stab(w.key, report);
      }
    }
  }
}
