/**
 * The Convex value model as Tessera holds it in memory: the same JavaScript
 * representation the official `convex/values` package uses, so values can
 * cross between our code and the official library without conversion.
 */
export type Value =
  | null
  | bigint
  | number
  | boolean
  | string
  | ArrayBuffer
  | Value[]
  | { [key: string]: Value };

export type ConvexObject = { [key: string]: Value };

/** A stored document: user fields plus the system fields. */
export type Document = ConvexObject & { _id: string; _creationTime: number };

/** The JSON values the wire form is made of. */
export type JsonValue =
  | null
  | boolean
  | number
  | string
  | JsonValue[]
  | { [key: string]: JsonValue };

export const MIN_INT64 = -(2n ** 63n);
export const MAX_INT64 = 2n ** 63n - 1n;

/** Kinds in the order Convex sorts them when values of different types meet. */
export type ValueKind =
  | "undefined"
  | "null"
  | "int64"
  | "float64"
  | "boolean"
  | "string"
  | "bytes"
  | "array"
  | "object";

/**
 * A plain object in the sense of the official library: created by a literal,
 * `Object.create(null)`, or in another realm (whose prototype is a different
 * `Object.prototype`).
 */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === null || proto === Object.prototype || proto?.constructor?.name === "Object";
}

/** The kind of a value, or `null` when it is not a Convex value at all. */
export function kindOf(value: unknown): ValueKind | null {
  switch (typeof value) {
    case "undefined":
      return "undefined";
    case "bigint":
      return "int64";
    case "number":
      return "float64";
    case "boolean":
      return "boolean";
    case "string":
      return "string";
    case "object":
      if (value === null) return "null";
      if (value instanceof ArrayBuffer) return "bytes";
      if (Array.isArray(value)) return "array";
      if (isPlainObject(value)) return "object";
      return null;
    default:
      return null;
  }
}

/** A short description of a JavaScript value's type for error messages. */
export function describeType(value: unknown): string {
  const kind = kindOf(value);
  if (kind !== null) return kind;
  if (typeof value === "object" && value !== null) {
    const name = (value as object).constructor?.name;
    return name ? `${name} object` : "object";
  }
  return typeof value;
}

/**
 * A value that should have been a number, for an error message: the number
 * itself, else its type (never String() of it: an object from JSON may hold
 * a `toString` that is not a function).
 */
export function describeNumber(value: unknown): string {
  return typeof value === "number" ? String(value) : describeType(value);
}

/** Deep structural equality of Convex values (NaN equals NaN; -0 differs from 0). */
export function valuesEqual(a: Value | undefined, b: Value | undefined): boolean {
  if (typeof a === "number" || typeof b === "number") return Object.is(a, b);
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (a instanceof ArrayBuffer || b instanceof ArrayBuffer) {
    if (!(a instanceof ArrayBuffer && b instanceof ArrayBuffer)) return false;
    return Buffer.from(a).equals(Buffer.from(b));
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!(Array.isArray(a) && Array.isArray(b)) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!valuesEqual(a[i], b[i])) return false;
    return true;
  }
  const ka = Object.keys(a).filter((k) => a[k] !== undefined);
  const kb = Object.keys(b).filter((k) => b[k] !== undefined);
  if (ka.length !== kb.length) return false;
  for (const k of ka) {
    if (!Object.hasOwn(b, k) || !valuesEqual(a[k], b[k])) return false;
  }
  return true;
}
