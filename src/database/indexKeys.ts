/**
 * Index keys of documents and key ranges of index range expressions.
 *
 * Key layout per index kind (each part encoded by `encodeKey`):
 *   by_id            [_id]
 *   by_creation_time [_creationTime, _id]
 *   user             [field values…, _creationTime, _id]
 * A field path `a.b` reads nested objects; a missing field (or a non-object
 * on the way) is `undefined`, which sorts before every value.
 */
import type { KeyRange } from "../persistence/index.js";
import {
  compareKeys,
  type Document,
  encodeKey,
  isPlainObject,
  tuplePrefixEnd,
  type Value,
} from "../values/index.js";
import type { IndexInfo } from "./catalog.js";
import { DatabaseError } from "./errors.js";

/** The value at a dotted field path; only own fields count (`constructor` is not a field of `{}`). */
export function getFieldPath(doc: Document, path: string): Value | undefined {
  if (path.indexOf(".") === -1) return Object.hasOwn(doc, path) ? doc[path] : undefined;
  let v: unknown = doc;
  for (const part of path.split(".")) {
    if (!isPlainObject(v) || !Object.hasOwn(v, part)) return undefined;
    v = v[part];
  }
  return v as Value | undefined;
}

/** The by_id key of a document ID. */
export function idKey(id: string): Buffer {
  return encodeKey([id]);
}

export function indexKey(index: IndexInfo, doc: Document): Buffer {
  switch (index.kind) {
    case "by_id":
      return encodeKey([doc._id]);
    case "by_creation_time":
      return encodeKey([doc._creationTime, doc._id]);
    default: {
      const values: Array<Value | undefined> = index.fields.map((f) => getFieldPath(doc, f));
      values.push(doc._creationTime, doc._id);
      return encodeKey(values);
    }
  }
}

/** The fields a range expression may constrain, in order. */
export function rangeFields(index: IndexInfo): string[] {
  switch (index.kind) {
    case "by_id":
      return ["_id"];
    case "by_creation_time":
      return ["_creationTime"];
    default:
      return [...index.fields, "_creationTime"];
  }
}

export type RangeOp = "Eq" | "Gt" | "Gte" | "Lt" | "Lte";

/** One comparison of an index range, as the official library serialises `q.eq(…).gt(…)`. */
export interface RangeExpression {
  type: RangeOp;
  fieldPath: string;
  value: Value | undefined;
}

function describe(index: IndexInfo, tableName: string): string {
  return `index ${tableName}.${index.name} (fields ${JSON.stringify(rangeFields(index))})`;
}

/**
 * Converts range expressions into a key range. The expressions must be
 * equalities on a prefix of the index fields, optionally followed by one
 * lower bound and/or one upper bound on the next field — the shapes an index
 * can answer with one contiguous scan.
 */
export function keyRangeOf(
  index: IndexInfo,
  tableName: string,
  exprs: readonly RangeExpression[],
): KeyRange {
  const fields = rangeFields(index);
  const prefix: Array<Value | undefined> = [];
  let i = 0;
  while (i < exprs.length && exprs[i]!.type === "Eq") {
    const e = exprs[i]!;
    if (fields[prefix.length] !== e.fieldPath) {
      throw new DatabaseError(
        `Uh oh! Index range expression ${JSON.stringify(e.fieldPath)} does not match the next field of ${describe(index, tableName)}: the equality conditions must be on the index's fields in order, starting with ${JSON.stringify(fields[prefix.length] ?? "(none left)")}`,
      );
    }
    prefix.push(e.value);
    i++;
  }
  let lower: RangeExpression | undefined;
  let upper: RangeExpression | undefined;
  const next = fields[prefix.length];
  for (; i < exprs.length; i++) {
    const e = exprs[i]!;
    if (e.type === "Eq") {
      throw new DatabaseError(
        `Uh oh! In ${describe(index, tableName)}, an equality on ${JSON.stringify(e.fieldPath)} comes after a range condition; equalities must come first`,
      );
    }
    if (e.fieldPath !== next) {
      throw new DatabaseError(
        `Uh oh! In ${describe(index, tableName)}, a range condition on ${JSON.stringify(e.fieldPath)} is not allowed here: after ${prefix.length} equalities, only ${JSON.stringify(next ?? "(no field left)")} can be bounded`,
      );
    }
    const isLower = e.type === "Gt" || e.type === "Gte";
    if (isLower ? lower : upper) {
      throw new DatabaseError(
        `Uh oh! In ${describe(index, tableName)}, ${JSON.stringify(e.fieldPath)} has two ${isLower ? "lower" : "upper"} bounds`,
      );
    }
    if (isLower) lower = e;
    else upper = e;
  }
  const prefixKey = encodeKey(prefix);
  let start: Buffer = prefixKey;
  let end: Buffer | null = tuplePrefixEnd(prefixKey);
  if (lower) {
    const k = encodeKey([...prefix, lower.value]);
    start = lower.type === "Gte" ? k : tuplePrefixEnd(k)!;
  }
  if (upper) {
    const k = encodeKey([...prefix, upper.value]);
    end = upper.type === "Lt" ? k : tuplePrefixEnd(k);
  }
  // An empty range (lower bound above upper bound) is legal and matches nothing.
  if (end !== null && compareKeys(start, end) > 0) end = start;
  return { start, end };
}

export function keyInRange(key: Buffer, range: KeyRange): boolean {
  return (
    compareKeys(key, range.start) >= 0 && (range.end === null || compareKeys(key, range.end) < 0)
  );
}
