import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { IntervalIndex } from "../../src/sync/intervalIndex.js";
import { compareKeys } from "../../src/values/index.js";

const key = fc.uint8Array({ maxLength: 3 }).map((a) => Buffer.from(a));
const interval = fc
  .tuple(key, fc.option(key, { nil: null }))
  .map(([a, b]) =>
    b !== null && compareKeys(a, b) > 0 ? { start: b, end: a } : { start: a, end: b },
  );

function contains(i: { start: Buffer; end: Buffer | null }, k: Buffer): boolean {
  return compareKeys(i.start, k) <= 0 && (i.end === null || compareKeys(k, i.end) < 0);
}

describe("IntervalIndex", () => {
  it("finds exactly the intervals containing a key, across adds and removes", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(interval, fc.integer({ min: 0, max: 20 })), { maxLength: 60 }),
        fc.array(fc.integer({ min: 0, max: 20 }), { maxLength: 5 }),
        fc.array(key, { minLength: 1, maxLength: 20 }),
        (adds, removes, probes) => {
          const index = new IntervalIndex<number>();
          for (const [i, v] of adds) index.add(i, v);
          // A lookup between changes forces a build, so later changes must rebuild.
          index.stab(Buffer.alloc(0), () => {});
          for (const v of removes) index.delete(v);
          const removed = new Set(removes);
          for (const k of probes) {
            const got: number[] = [];
            index.stab(k, (v) => got.push(v));
            const want = adds
              .filter(([i, v]) => !removed.has(v) && contains(i, k))
              .map(([, v]) => v);
            expect(got.sort((a, b) => a - b)).toEqual(want.sort((a, b) => a - b));
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("ignores empty intervals", () => {
    const index = new IntervalIndex<string>();
    index.add({ start: Buffer.from([2]), end: Buffer.from([2]) }, "empty");
    const got: string[] = [];
    index.stab(Buffer.from([2]), (v) => got.push(v));
    expect(got).toEqual([]);
    expect(index.size).toBe(0);
  });
});
