/** fast-check generators of Convex values, shared by the property tests. */
import fc from "fast-check";
import type { Value } from "./value.js";

const specialFloats = fc.constantFrom(
  NaN,
  -0,
  0,
  Infinity,
  -Infinity,
  Number.MIN_VALUE,
  -Number.MAX_VALUE,
);

export const float64 = fc.oneof(
  fc.double(),
  specialFloats,
  fc.integer().map((n) => n),
);
export const int64 = fc.oneof(
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
  fc.constantFrom(-(2n ** 63n), 2n ** 63n - 1n, 0n, -1n, 1n),
);

/** Strings that are valid Unicode, with NULs, astral characters and U+E000..U+FFFF mixed in. */
export const string = fc.oneof(
  fc.string({ unit: "grapheme", maxLength: 8 }),
  fc.string({
    unit: fc.constantFrom("a", "b", "\0", "\uffff", "\u{10000}", "é", "\ue000"),
    maxLength: 6,
  }),
  fc.string({ maxLength: 8 }),
);

export const bytes = fc
  .uint8Array({ maxLength: 12 })
  .chain((b) => fc.constant(b))
  .map((b) => b.slice().buffer as ArrayBuffer);

/** Field names the wire form accepts: non-control ASCII, no leading `$`. */
export const fieldName = fc
  .string({
    unit: fc.integer({ min: 32, max: 126 }).map((c) => String.fromCharCode(c)),
    maxLength: 6,
  })
  .filter((s) => !s.startsWith("$"));

const scalar: fc.Arbitrary<Value> = fc.oneof(
  fc.constant(null),
  int64,
  float64,
  fc.boolean(),
  string,
  bytes,
);

export const value: fc.Arbitrary<Value> = fc.letrec<{ value: Value }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    scalar,
    fc.array(tie("value"), { maxLength: 4 }),
    fc.dictionary(fieldName, tie("value"), { maxKeys: 4 }),
  ),
})).value;

/** Values that are likely to collide, so equal and near-equal pairs get compared. */
export const smallValue: fc.Arbitrary<Value> = fc.letrec<{ value: Value }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.constantFrom<Value>(
      null,
      0n,
      -1n,
      1n,
      0,
      -0,
      1,
      NaN,
      -Infinity,
      true,
      false,
      "",
      "a",
      "a\0",
      "b",
    ),
    fc.constantFrom(new ArrayBuffer(0), new Uint8Array([0]).buffer, new Uint8Array([255]).buffer),
    fc.array(tie("value"), { maxLength: 3 }),
    fc.dictionary(fc.constantFrom("", "a", "b", "ab"), tie("value"), { maxKeys: 3 }),
  ),
})).value;

export const valueOrUndefined = fc.oneof(fc.constant(undefined), value);
