import { convexToJson, getConvexSize, jsonToConvex } from "convex/values";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { value } from "./arbitraries.test-util.js";
import {
  fromJson,
  fromJsonOrUndefined,
  MAX_JSON_DEPTH,
  nestedDeeperThan,
  parseStoredValue,
  parseValue,
  stringifyValue,
  toJson,
  toJsonOrUndefined,
} from "./json.js";
import { valueSize } from "./size.js";
import { valuesEqual } from "./value.js";

const runs = { numRuns: 2000 };

function outcome<T>(f: () => T): { ok: true; value: T } | { ok: false } {
  try {
    return { ok: true, value: f() };
  } catch {
    return { ok: false };
  }
}

describe("JSON wire form", () => {
  it("writes exactly what the official convexToJson writes (including key order)", () => {
    fc.assert(
      fc.property(value, (v) => {
        expect(JSON.stringify(toJson(v))).toBe(JSON.stringify(convexToJson(v as never)));
      }),
      runs,
    );
  });

  it("serialises directly to the same text", () => {
    fc.assert(
      fc.property(value, (v) => {
        expect(stringifyValue(v)).toBe(JSON.stringify(convexToJson(v as never)));
      }),
      runs,
    );
    expect(() => stringifyValue({ a: [{ $b: 1 }] })).toThrow(/'\$'.*at path \.a\[0\]\["\$b"\]/);
  });

  it("round-trips through ours and theirs in both directions", () => {
    fc.assert(
      fc.property(value, (v) => {
        expect(valuesEqual(fromJson(convexToJson(v as never)), v)).toBe(true);
        expect(valuesEqual(jsonToConvex(toJson(v)) as never, v)).toBe(true);
        expect(valuesEqual(parseValue(stringifyValue(v)), v)).toBe(true);
        expect(valuesEqual(parseStoredValue(stringifyValue(v)), v)).toBe(true);
      }),
      runs,
    );
  });

  // Ours is stricter in one way only: malformed base64 inside $bytes/$integer/$float
  // is an error, where the official decoder reads garbage leniently.
  it("rejects all arbitrary JSON that jsonToConvex rejects, and agrees on what it accepts", () => {
    const special = fc.oneof(
      fc.record({ $integer: fc.oneof(fc.string(), fc.base64String(), fc.integer()) }),
      fc.record({
        $float: fc.oneof(
          fc.base64String(),
          fc.constant("AAAAAAAA+H8="),
          fc.constant("AAAAAAAA8D8="),
        ),
      }),
      fc.record({ $bytes: fc.oneof(fc.base64String(), fc.string(), fc.constant(null)) }),
      fc.record({ $set: fc.constant([]) }),
      fc.dictionary(fc.constantFrom("$x", "a", "_b", "\u0001", "ok"), fc.jsonValue(), {
        maxKeys: 2,
      }),
    );
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), special), (json) => {
        const ours = outcome(() => fromJson(json));
        const theirs = outcome(() => jsonToConvex(json as never));
        if (!theirs.ok) expect(ours.ok).toBe(false);
        if (ours.ok) {
          expect(theirs.ok).toBe(true);
          if (theirs.ok) expect(valuesEqual(ours.value, theirs.value as never)).toBe(true);
        }
      }),
      runs,
    );
  });

  it("encodes the special floats and int64 bounds like the official client", () => {
    for (const v of [
      NaN,
      -0,
      Infinity,
      -Infinity,
      2n ** 63n - 1n,
      -(2n ** 63n),
      new ArrayBuffer(3),
    ]) {
      expect(toJson(v)).toEqual(convexToJson(v));
    }
    expect(toJson(-0)).toEqual({ $float: "AAAAAAAAAIA=" });
    expect(fromJson({ $integer: "AQAAAAAAAAA=" })).toBe(1n);
  });

  it("rejects what is not a Convex value, naming the path", () => {
    expect(() => toJson({ a: [1, new Map()] } as never)).toThrow(
      /Map object is not a supported Convex type.*\.a\[1\]/,
    );
    expect(() => toJson(2n ** 63n)).toThrow(/does not fit/);
    expect(() => toJson({ $bad: 1 })).toThrow(/starts with a '\$'/);
    expect(() => fromJson({ $integer: "AQ==" })).toThrow(/expected 8/);
    expect(() => fromJson({ $float: "AAAAAAAA8D8=" })).toThrow(/should be encoded as a number/);
    expect(() => fromJson({ a: { $bytes: "***" } })).toThrow(/Invalid base64.*\.a/);
  });

  it("carries undefined for filters and ranges", () => {
    expect(toJsonOrUndefined(undefined)).toEqual({ $undefined: null });
    expect(fromJsonOrUndefined({ $undefined: null })).toBeUndefined();
    expect(fromJsonOrUndefined(5)).toBe(5);
  });
});

describe("size accounting", () => {
  it("matches the official getConvexSize", () => {
    fc.assert(
      fc.property(value, (v) => {
        expect(valueSize(v)).toBe(getConvexSize(v as never));
      }),
      runs,
    );
  });
});

describe("nesting depth of JSON from outside", () => {
  const chain = (depth: number, leaf: unknown = 1): unknown => {
    let v = leaf;
    for (let i = 0; i < depth; i++) v = i % 2 === 0 ? [v] : { a: v };
    return v;
  };
  it("counts arrays and objects inside one another, scalars not", () => {
    expect(nestedDeeperThan(1, 0)).toBe(false);
    expect(nestedDeeperThan(chain(3), 3)).toBe(false);
    expect(nestedDeeperThan(chain(4), 3)).toBe(true);
    // The deepest branch counts, wherever it is among wide siblings.
    // {…} [ … {…} and then the chain's levels: 3 + 1 = 4, 3 + 2 = 5.
    expect(nestedDeeperThan({ a: [1, 2, { b: chain(1) }], c: chain(1) }, 4)).toBe(false);
    expect(nestedDeeperThan({ a: [1, 2, { b: chain(2) }], c: chain(1) }, 4)).toBe(true);
  });
  it("checks values far deeper than it recurses without running out of stack", () => {
    const deep = JSON.parse(`${"[".repeat(1_000_000)}${"]".repeat(1_000_000)}`);
    expect(nestedDeeperThan(deep, MAX_JSON_DEPTH)).toBe(true);
  });
});
