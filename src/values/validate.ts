/**
 * Checking untrusted input against the Convex value model and the documented
 * limits, producing a private copy the caller can no longer mutate.
 */
import { fieldSegment, rethrowWithin, ValueError } from "./errors.js";
import { checkNestedFieldName, checkTopLevelFieldName, SYSTEM_FIELDS } from "./fieldNames.js";
import {
  type ConvexObject,
  describeType,
  isPlainObject,
  MAX_INT64,
  MIN_INT64,
  type Value,
} from "./value.js";

export const LIMITS = {
  /** Largest document, system fields included. */
  maxDocumentSize: 1 << 20,
  /** How many times arrays and objects may nest inside a document's fields. */
  maxNestingDepth: 16,
  maxArrayLength: 8192,
  maxObjectFields: 1024,
} as const;

/** A checked, privately owned value and its size. */
export interface Checked<T extends Value> {
  value: T;
  size: number;
}

/**
 * A copy of an object with its keys in sorted order (shallow), unless they
 * already are.
 */
export function sortKeys<T extends Record<string, unknown>>(obj: T): T {
  let prev: string | null = null;
  for (const k in obj) {
    if (prev !== null && !(prev < k)) {
      const out: Record<string, unknown> = {};
      for (const key of Object.keys(obj).sort()) out[key] = obj[key];
      return out as T;
    }
    prev = k;
  }
  return obj;
}

/**
 * Checks any Convex value (arguments, nested values) and copies it. Object
 * fields set to `undefined` are dropped, as the official library does.
 * `path` prefixes the path in error messages.
 */
export function checkValue(input: unknown, path = ""): Checked<Value> {
  try {
    return check(input, 0);
  } catch (e) {
    return rethrowWithin(e, path);
  }
}

/** `depth` is the nesting depth already used by the value's container. */
function check(input: unknown, depth: number): Checked<Value> {
  switch (typeof input) {
    case "boolean":
      return { value: input, size: 1 };
    case "number":
      return { value: input, size: 9 };
    case "bigint":
      if (input < MIN_INT64 || input > MAX_INT64) {
        throw new ValueError(`BigInt ${input} does not fit into a 64-bit signed integer`);
      }
      return { value: input, size: 9 };
    case "string":
      if (!input.isWellFormed()) {
        throw new ValueError("Strings must be valid Unicode: this one has an unpaired surrogate");
      }
      return { value: input, size: 2 + Buffer.byteLength(input, "utf8") };
    case "object": {
      if (input === null) return { value: null, size: 1 };
      if (input instanceof ArrayBuffer)
        return { value: input.slice(0), size: 2 + input.byteLength };
      if (Array.isArray(input)) return checkArray(input, depth + 1);
      if (isPlainObject(input)) return checkObject(input, depth + 1, false);
      break;
    }
    case "undefined":
      throw new ValueError(
        "undefined is not a valid Convex value. To learn about Convex's supported types, see https://docs.convex.dev/using/types",
      );
  }
  throw new ValueError(
    `${describeType(input)} is not a supported Convex type. To learn about Convex's supported types, see https://docs.convex.dev/using/types`,
  );
}

function checkDepth(depth: number): void {
  if (depth > LIMITS.maxNestingDepth) {
    throw new ValueError(
      `Value is too deeply nested: objects and arrays can nest at most ${LIMITS.maxNestingDepth} levels`,
    );
  }
}

function checkArray(input: unknown[], depth: number): Checked<Value[]> {
  checkDepth(depth);
  if (input.length > LIMITS.maxArrayLength) {
    throw new ValueError(
      `Array has ${input.length} elements, more than the limit of ${LIMITS.maxArrayLength}`,
    );
  }
  const out: Value[] = new Array(input.length);
  let size = 2;
  for (let i = 0; i < input.length; i++) {
    let c: Checked<Value>;
    try {
      c = check(input[i], depth);
    } catch (e) {
      rethrowWithin(e, `[${i}]`);
    }
    out[i] = c.value;
    size += c.size;
  }
  return { value: out, size };
}

function checkObject(
  input: Record<string, unknown>,
  depth: number,
  topLevel: boolean,
): Checked<ConvexObject> {
  if (!topLevel) checkDepth(depth);
  const out: ConvexObject = {};
  let size = 2;
  let fields = 0;
  // Keys are copied in sorted order: the order of the wire form, and what readers get back.
  for (const key of Object.keys(input).sort()) {
    const v = input[key];
    if (v === undefined) continue;
    let c: Checked<Value>;
    try {
      if (topLevel) checkTopLevelFieldName(key);
      else checkNestedFieldName(key);
      c = check(v, depth);
    } catch (e) {
      rethrowWithin(e, fieldSegment(key));
    }
    // System fields (`_id`, `_creationTime`) do not count against a document's field limit.
    if (!(topLevel && SYSTEM_FIELDS.has(key)) && ++fields > LIMITS.maxObjectFields) {
      throw new ValueError(`Object has more than ${LIMITS.maxObjectFields} fields`);
    }
    out[key] = c.value;
    size += key.length + 1 + c.size;
  }
  return { value: out, size };
}

/**
 * Checks the user fields of a document about to be written (system fields
 * `_id` and `_creationTime` are allowed through; callers decide what they may
 * hold). The size is that of the object as given.
 */
export function checkDocumentFields(input: unknown): Checked<ConvexObject> {
  if (!isPlainObject(input)) {
    throw new ValueError(`A document must be an object, not ${describeType(input)}`);
  }
  return checkObject(input, 0, true);
}

/** Throws if a complete document (system fields included) is over the size limit. */
export function checkDocumentSize(size: number): void {
  if (size > LIMITS.maxDocumentSize) {
    throw new ValueError(
      `Document is too large: ${size} bytes, more than the maximum of ${LIMITS.maxDocumentSize} bytes (1 MiB)`,
    );
  }
}
