import { compareValues as officialCompare } from "convex/values";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { smallValue, value, valueOrUndefined } from "./arbitraries.test-util.js";
import { compareStrings, compareValues } from "./compare.js";
import { compareKeys, decodeKey, encodeKey, keySuccessor, prefixSuccessor } from "./keys.js";
import { type Value, valuesEqual } from "./value.js";

const runs = { numRuns: 3000 };
const sign = (n: number) => (n < 0 ? -1 : n > 0 ? 1 : 0);

function compareTuples(a: Array<Value | undefined>, b: Array<Value | undefined>): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const c = compareValues(a[i], b[i]);
    if (c !== 0) return c;
  }
  return a.length - b.length;
}

describe("total order", () => {
  it("agrees with the official compareValues", () => {
    fc.assert(
      fc.property(fc.oneof(value, smallValue), fc.oneof(value, smallValue), (a, b) => {
        expect(sign(compareValues(a, b))).toBe(sign(officialCompare(a as never, b as never)));
      }),
      runs,
    );
  });

  it("orders the kinds and the special floats as documented", () => {
    const ordered: Array<Value | undefined> = [
      undefined,
      null,
      -(2n ** 63n),
      0n,
      2n ** 63n - 1n,
      -Infinity,
      -1,
      -0,
      0,
      Number.MIN_VALUE,
      Infinity,
      NaN,
      false,
      true,
      "",
      "a",
      "a\0",
      "b",
      "\uffff",
      "\u{10000}",
      new ArrayBuffer(0),
      new Uint8Array([0]).buffer,
      [],
      [null],
      [[]],
      {},
      { a: null },
      { a: null, b: null },
      { a: 1n },
      { b: null },
    ];
    for (let i = 0; i < ordered.length; i++) {
      for (let j = 0; j < ordered.length; j++) {
        expect(sign(compareValues(ordered[i], ordered[j])), `${i} vs ${j}`).toBe(sign(i - j));
        const ki = encodeKey([ordered[i]]);
        const kj = encodeKey([ordered[j]]);
        expect(sign(compareKeys(ki, kj)), `key ${i} vs ${j}`).toBe(sign(i - j));
      }
    }
  });

  it("compares strings by code point, not UTF-16 unit", () => {
    expect(compareStrings("\uffff", "\u{10000}")).toBeLessThan(0);
    expect("\uffff" < "\u{10000}").toBe(false);
  });
});

describe("index key encoding", () => {
  it("byte order of encoded values agrees with the value order", () => {
    fc.assert(
      fc.property(
        fc.oneof(valueOrUndefined, smallValue),
        fc.oneof(valueOrUndefined, smallValue),
        (a, b) => {
          expect(sign(compareKeys(encodeKey([a]), encodeKey([b])))).toBe(sign(compareValues(a, b)));
        },
      ),
      runs,
    );
  });

  it("byte order of encoded tuples agrees with the tuple order", () => {
    const tuple = fc.array(fc.oneof(valueOrUndefined, smallValue), { maxLength: 4 });
    fc.assert(
      fc.property(tuple, tuple, (a, b) => {
        expect(sign(compareKeys(encodeKey(a), encodeKey(b)))).toBe(sign(compareTuples(a, b)));
      }),
      runs,
    );
  });

  it("decodes back to the same tuple", () => {
    fc.assert(
      fc.property(fc.array(valueOrUndefined, { maxLength: 4 }), (t) => {
        const back = decodeKey(encodeKey(t));
        expect(back.length).toBe(t.length);
        t.forEach((v, i) => {
          expect(v === undefined ? back[i] === undefined : valuesEqual(back[i], v)).toBe(true);
        });
      }),
      runs,
    );
  });

  it("prefix successors bound exactly the keys with that prefix", () => {
    fc.assert(
      fc.property(
        fc.array(smallValue, { minLength: 1, maxLength: 2 }),
        fc.array(smallValue, { maxLength: 2 }),
        fc.array(smallValue, { maxLength: 3 }),
        (prefix, rest, other) => {
          const p = encodeKey(prefix);
          const end = prefixSuccessor(p);
          const inside = encodeKey([...prefix, ...rest]);
          expect(compareKeys(inside, p)).toBeGreaterThanOrEqual(0);
          if (end) expect(compareKeys(inside, end)).toBeLessThan(0);
          const o = encodeKey(other);
          const hasPrefix = o.length >= p.length && o.subarray(0, p.length).equals(p);
          const inRange = compareKeys(o, p) >= 0 && (end === null || compareKeys(o, end) < 0);
          expect(inRange).toBe(hasPrefix);
        },
      ),
      runs,
    );
    expect(prefixSuccessor(Buffer.from([1, 0xff, 0xff]))).toEqual(Buffer.from([2]));
    expect(prefixSuccessor(Buffer.from([0xff]))).toBeNull();
    expect(keySuccessor(Buffer.from([1]))).toEqual(Buffer.from([1, 0]));
  });
});
