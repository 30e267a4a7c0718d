import { compareValues as officialCompare } from "convex/values";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { smallValue, value, valueOrUndefined } from "./arbitraries.test-util.js";
import { compareStrings, compareValues } from "./compare.js";
import { compareKeys, decodeKey, encodeKey, keySuccessor, tuplePrefixEnd } from "./keys.js";
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

  it("tuple prefix ranges hold exactly the tuples that start with those values", () => {
    const element = fc.oneof(smallValue, fc.constantFrom<Value>("a", "a\0", "a\0b", "a\0\0", "b"));
    const bytesNul = fc.constantFrom<Value>(
      new Uint8Array([1]).buffer,
      new Uint8Array([1, 0]).buffer,
      new Uint8Array([1, 0, 2]).buffer,
    );
    const tuple = fc.array(fc.oneof(element, bytesNul), { maxLength: 3 });
    fc.assert(
      fc.property(
        fc.array(fc.oneof(element, bytesNul), { minLength: 1, maxLength: 2 }),
        tuple,
        (prefix, other) => {
          const p = encodeKey(prefix);
          const end = tuplePrefixEnd(p);
          const o = encodeKey(other);
          const startsWith =
            other.length >= prefix.length &&
            prefix.every((v, i) => compareValues(v, other[i]) === 0);
          const inRange = compareKeys(o, p) >= 0 && (end === null || compareKeys(o, end) < 0);
          expect(inRange).toBe(startsWith);
        },
      ),
      runs,
    );
    // The case a byte-prefix rule gets wrong: "a" is not a prefix of "a\0b".
    const a = encodeKey(["a"]);
    expect(compareKeys(encodeKey(["a\0b"]), tuplePrefixEnd(a)!)).toBeGreaterThanOrEqual(0);
    expect(tuplePrefixEnd(Buffer.alloc(0))).toBeNull();
    expect(keySuccessor(Buffer.from([1]))).toEqual(Buffer.from([1, 0]));
  });
});
