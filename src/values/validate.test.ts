import { getConvexSize } from "convex/values";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { value } from "./arbitraries.test-util.js";
import { checkDocumentFields, checkDocumentSize, checkValue, LIMITS } from "./validate.js";
import { valuesEqual } from "./value.js";

function nest(depth: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = i % 2 ? [v] : { x: v };
  return v;
}

describe("value checks", () => {
  it("accept every Convex value within limits, copy it and size it like the official library", () => {
    fc.assert(
      fc.property(value, (v) => {
        const checked = checkValue(v);
        expect(valuesEqual(checked.value, v)).toBe(true);
        expect(checked.size).toBe(getConvexSize(v as never));
      }),
    );
  });

  it("return a private copy", () => {
    const input = { a: [1, { b: 2 }] };
    const { value: copy } = checkDocumentFields(input);
    (input.a[1] as { b: number }).b = 3;
    expect(copy).toEqual({ a: [1, { b: 2 }] });
  });

  it("drop fields set to undefined, as the official library does", () => {
    expect(checkDocumentFields({ a: 1, b: undefined }).value).toEqual({ a: 1 });
  });

  it("name the path of what is wrong", () => {
    expect(() => checkDocumentFields({ a: { b: [1, undefined] } })).toThrow(
      /undefined is not a valid Convex value.*at path \.a\.b\[1\]/,
    );
    expect(() => checkDocumentFields({ a: [new Date()] })).toThrow(
      /Date object is not a supported.*\.a\[0\]/,
    );
    expect(() => checkDocumentFields({ a: () => 1 })).toThrow(/function is not a supported/);
    expect(() => checkDocumentFields({ a: "\ud800" })).toThrow(/unpaired surrogate.*\.a/);
    expect(() => checkDocumentFields({ a: 2n ** 64n })).toThrow(/64-bit.*\.a/);
  });

  it("enforce the field-name rules", () => {
    expect(() => checkDocumentFields({ _secret: 1 })).toThrow(/starts with an underscore/);
    expect(() => checkDocumentFields({ $x: 1 })).toThrow(/starts with a '\$'/);
    expect(() => checkDocumentFields({ "": 1 })).toThrow(/nonempty/);
    expect(() => checkDocumentFields({ ["x".repeat(65)]: 1 })).toThrow(
      /top-level field name length 64/,
    );
    expect(() => checkDocumentFields({ a: { $x: 1 } })).toThrow(/'\$'.*\.a\["\$x"\]/);
    expect(() => checkDocumentFields({ a: { é: 1 } })).toThrow(/non-control ASCII/);
    expect(() => checkDocumentFields({ a: { ["y".repeat(1025)]: 1 } })).toThrow(
      /maximum field name length 1024/,
    );
    // Nested fields may start with an underscore and be long.
    expect(checkDocumentFields({ a: { _b: 1, ["y".repeat(1024)]: 2 } }).value).toBeTruthy();
    expect(checkDocumentFields({ _id: "x", _creationTime: 1 }).value).toBeTruthy();
  });

  it("enforce nesting depth, array length, field count and document size", () => {
    expect(checkDocumentFields({ v: nest(LIMITS.maxNestingDepth) }).value).toBeTruthy();
    expect(() => checkDocumentFields({ v: nest(LIMITS.maxNestingDepth + 1) })).toThrow(
      /too deeply nested/,
    );
    expect(() => checkDocumentFields({ v: new Array(8193).fill(0) })).toThrow(/8193 elements.*\.v/);
    const wide: Record<string, number> = {};
    for (let i = 0; i < 1025; i++) wide[`f${i}`] = i;
    expect(() => checkDocumentFields({ w: wide })).toThrow(/more than 1024 fields.*\.w/);
    expect(() => checkDocumentFields(wide)).toThrow(/more than 1024 fields/);
    const big = checkDocumentFields({ s: "x".repeat(LIMITS.maxDocumentSize) });
    expect(() => checkDocumentSize(big.size)).toThrow(/Document is too large/);
    expect(() => checkDocumentSize(1000)).not.toThrow();
  });

  it("refuse non-objects as documents", () => {
    expect(() => checkDocumentFields([1])).toThrow(/must be an object, not array/);
    expect(() => checkDocumentFields(null)).toThrow(/must be an object, not null/);
  });
});
