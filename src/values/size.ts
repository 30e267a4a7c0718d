/**
 * Size accounting for Convex values, the formula the official library's
 * `getConvexSize` documents: a one-byte type marker per value, 8 bytes for
 * numbers, UTF-8 bytes plus a terminator for strings and bytes, and a
 * terminator after arrays, objects and each field name.
 */
import type { Value } from "./value.js";

export function valueSize(value: Value | undefined): number {
  if (value === undefined) return 0;
  switch (typeof value) {
    case "boolean":
      return 1;
    case "number":
    case "bigint":
      return 9;
    case "string":
      return 2 + Buffer.byteLength(value, "utf8");
    case "object": {
      if (value === null) return 1;
      if (value instanceof ArrayBuffer) return 2 + value.byteLength;
      let size = 2;
      if (Array.isArray(value)) {
        for (const element of value) size += valueSize(element);
        return size;
      }
      for (const key in value) {
        const v = value[key];
        if (v !== undefined) size += key.length + 1 + valueSize(v);
      }
      return size;
    }
  }
  throw new TypeError(`not a Convex value: ${typeof value}`);
}
