/**
 * The total order Convex uses when values meet in an index or a comparison:
 * undefined < null < int64 < float64 < boolean < string < bytes < array < object.
 * See README.md in this folder for the rules inside each kind.
 */
import type { Value } from "./value.js";

export function kindRank(value: Value | undefined): number {
  switch (typeof value) {
    case "undefined":
      return 0;
    case "bigint":
      return 2;
    case "number":
      return 3;
    case "boolean":
      return 4;
    case "string":
      return 5;
    case "object":
      if (value === null) return 1;
      if (value instanceof ArrayBuffer) return 6;
      if (Array.isArray(value)) return 7;
      return 8;
  }
  throw new TypeError(`not a Convex value: ${typeof value}`);
}

const f64 = new Float64Array(1);
const u64 = new BigUint64Array(f64.buffer);
const SIGN = 1n << 63n;
const ALL = (1n << 64n) - 1n;

/** The float's bits mapped so that unsigned comparison is IEEE-754 total order. */
export function sortableFloatBits(n: number): bigint {
  f64[0] = n;
  const bits = u64[0]!;
  return bits & SIGN ? ALL ^ bits : bits | SIGN;
}

/** IEEE-754 total order: -NaN < -Infinity < ... < -0 < 0 < ... < Infinity < NaN. */
export function compareFloats(a: number, b: number): number {
  if (a < b) return -1;
  if (a > b) return 1;
  if (a === b && (a !== 0 || Object.is(a, b))) return 0;
  const x = sortableFloatBits(a);
  const y = sortableFloatBits(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Compares strings by their UTF-8 bytes (that is, by code points). */
export function compareStrings(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // UTF-16 puts surrogates (code points >= 0x10000) below U+E000..U+FFFF;
    // lifting them above 0xFFFF restores code point order.
    if (x >= 0xd800 && x <= 0xdfff) x += 0x2800;
    if (y >= 0xd800 && y <= 0xdfff) y += 0x2800;
    return x < y ? -1 : 1;
  }
  return a.length - b.length;
}

export function compareBytes(a: ArrayBuffer, b: ArrayBuffer): number {
  return Buffer.compare(new Uint8Array(a), new Uint8Array(b));
}

export function compareValues(a: Value | undefined, b: Value | undefined): number {
  const ra = kindRank(a);
  const rb = kindRank(b);
  if (ra !== rb) return ra < rb ? -1 : 1;
  switch (ra) {
    case 0:
    case 1:
      return 0;
    case 2:
      return (a as bigint) < (b as bigint) ? -1 : (a as bigint) > (b as bigint) ? 1 : 0;
    case 3:
      return compareFloats(a as number, b as number);
    case 4:
      return a === b ? 0 : a ? 1 : -1;
    case 5:
      return compareStrings(a as string, b as string);
    case 6:
      return compareBytes(a as ArrayBuffer, b as ArrayBuffer);
    case 7: {
      const x = a as Value[];
      const y = b as Value[];
      const n = Math.min(x.length, y.length);
      for (let i = 0; i < n; i++) {
        const c = compareValues(x[i], y[i]);
        if (c !== 0) return c;
      }
      return x.length - y.length;
    }
    default: {
      const x = a as { [k: string]: Value };
      const y = b as { [k: string]: Value };
      const kx = definedKeys(x);
      const ky = definedKeys(y);
      const n = Math.min(kx.length, ky.length);
      for (let i = 0; i < n; i++) {
        const c = compareStrings(kx[i]!, ky[i]!) || compareValues(x[kx[i]!], y[ky[i]!]);
        if (c !== 0) return c;
      }
      return kx.length - ky.length;
    }
  }
}

/** Object keys in the order values are compared and encoded (UTF-8 byte order). */
export function definedKeys(obj: { [k: string]: Value | undefined }): string[] {
  return Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort(compareStrings);
}
