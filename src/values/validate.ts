/**
 * Checking untrusted input against the Convex value model and the documented
 * limits, producing a private copy the caller can no longer mutate.
 */
import { elementPath, fieldPath, ValueError } from "./errors.js";
import { checkNestedFieldName, checkTopLevelFieldName } from "./fieldNames.js";
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
 * Checks any Convex value (arguments, nested values) and copies it. Object
 * fields set to `undefined` are dropped, as the official library does.
 * `depth` is the nesting depth already used by the value's container.
 */
export function checkValue(input: unknown, path = "", depth = 0): Checked<Value> {
  switch (typeof input) {
    case "boolean":
      return { value: input, size: 1 };
    case "number":
      return { value: input, size: 9 };
    case "bigint":
      if (input < MIN_INT64 || input > MAX_INT64) {
        throw new ValueError(`BigInt ${input} does not fit into a 64-bit signed integer`, path);
      }
      return { value: input, size: 9 };
    case "string":
      if (!input.isWellFormed()) {
        throw new ValueError(
          "Strings must be valid Unicode: this one has an unpaired surrogate",
          path,
        );
      }
      return { value: input, size: 2 + Buffer.byteLength(input, "utf8") };
    case "object": {
      if (input === null) return { value: null, size: 1 };
      if (input instanceof ArrayBuffer)
        return { value: input.slice(0), size: 2 + input.byteLength };
      if (Array.isArray(input)) return checkArray(input, path, depth + 1);
      if (isPlainObject(input)) return checkObject(input, path, depth + 1, false);
      break;
    }
    case "undefined":
      throw new ValueError(
        "undefined is not a valid Convex value. To learn about Convex's supported types, see https://docs.convex.dev/using/types",
        path,
      );
  }
  throw new ValueError(
    `${describeType(input)} is not a supported Convex type. To learn about Convex's supported types, see https://docs.convex.dev/using/types`,
    path,
  );
}

function checkDepth(depth: number, path: string): void {
  if (depth > LIMITS.maxNestingDepth) {
    throw new ValueError(
      `Value is too deeply nested: objects and arrays can nest at most ${LIMITS.maxNestingDepth} levels`,
      path,
    );
  }
}

function checkArray(input: unknown[], path: string, depth: number): Checked<Value[]> {
  checkDepth(depth, path);
  if (input.length > LIMITS.maxArrayLength) {
    throw new ValueError(
      `Array has ${input.length} elements, more than the limit of ${LIMITS.maxArrayLength}`,
      path,
    );
  }
  const out: Value[] = new Array(input.length);
  let size = 2;
  for (let i = 0; i < input.length; i++) {
    const c = checkValue(input[i], elementPath(path, i), depth);
    out[i] = c.value;
    size += c.size;
  }
  return { value: out, size };
}

function checkObject(
  input: Record<string, unknown>,
  path: string,
  depth: number,
  topLevel: boolean,
): Checked<ConvexObject> {
  if (!topLevel) checkDepth(depth, path);
  const out: ConvexObject = {};
  let size = 2;
  let fields = 0;
  for (const key of Object.keys(input)) {
    const v = input[key];
    if (v === undefined) continue;
    const p = fieldPath(path, key);
    if (topLevel) checkTopLevelFieldName(key, p);
    else checkNestedFieldName(key, p);
    if (++fields > LIMITS.maxObjectFields) {
      throw new ValueError(`Object has more than ${LIMITS.maxObjectFields} fields`, path);
    }
    const c = checkValue(v, p, depth);
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
  return checkObject(input, "", 0, true);
}

/** Throws if a complete document (system fields included) is over the size limit. */
export function checkDocumentSize(size: number): void {
  if (size > LIMITS.maxDocumentSize) {
    throw new ValueError(
      `Document is too large: ${size} bytes, more than the maximum of ${LIMITS.maxDocumentSize} bytes (1 MiB)`,
    );
  }
}
