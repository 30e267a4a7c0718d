/**
 * Evaluation of the filter expressions the official library serialises for
 * `query.filter(q => …)`: comparisons in the Convex total order (a missing
 * field is `undefined`, below every value), arithmetic on float64 and int64,
 * boolean connectives, field paths and literals.
 */
import {
  compareValues,
  type Document,
  fromJsonOrUndefined,
  isPlainObject,
  MAX_INT64,
  MIN_INT64,
  type Value,
} from "../values/index.js";

export class FilterError extends Error {
  override name = "FilterError";
}

type Expr = { [op: string]: unknown };

/** A compiled filter: checks the expression's shape once, then evaluates it per document. */
export type Predicate = (doc: Document) => boolean;

function fieldOf(doc: Document, path: string): Value | undefined {
  let v: unknown = doc;
  for (const part of path.split(".")) {
    if (!isPlainObject(v) || !Object.hasOwn(v, part)) return undefined;
    v = v[part];
  }
  return v as Value | undefined;
}

function describe(v: Value | undefined): string {
  if (v === undefined) return "undefined";
  if (v === null) return "null";
  if (typeof v === "bigint") return `int64 ${v}`;
  if (typeof v === "number") return `float64 ${v}`;
  if (v instanceof ArrayBuffer) return "bytes";
  if (Array.isArray(v)) return "array";
  return typeof v === "object" ? "object" : `${typeof v} ${JSON.stringify(v)}`;
}

function checkInt64(n: bigint, op: string): bigint {
  if (n < MIN_INT64 || n > MAX_INT64) throw new FilterError(`int64 overflow in ${op}`);
  return n;
}

function arithmetic(op: string, a: Value | undefined, b: Value | undefined): Value {
  if (typeof a === "number" && typeof b === "number") {
    switch (op) {
      case "$add":
        return a + b;
      case "$sub":
        return a - b;
      case "$mul":
        return a * b;
      case "$div":
        return a / b;
      default:
        return a % b;
    }
  }
  if (typeof a === "bigint" && typeof b === "bigint") {
    switch (op) {
      case "$add":
        return checkInt64(a + b, op);
      case "$sub":
        return checkInt64(a - b, op);
      case "$mul":
        return checkInt64(a * b, op);
      default:
        if (b === 0n) throw new FilterError(`int64 division by zero in ${op}`);
        return op === "$div" ? checkInt64(a / b, op) : a % b;
    }
  }
  throw new FilterError(
    `${op.slice(1)} needs two numbers of the same type (both float64 or both int64), got ${describe(a)} and ${describe(b)}`,
  );
}

function asBoolean(v: Value | undefined, op: string): boolean {
  if (typeof v !== "boolean")
    throw new FilterError(`${op.slice(1)} needs booleans, got ${describe(v)}`);
  return v;
}

type Compiled = (doc: Document) => Value | undefined;

function compile(expr: unknown): Compiled {
  if (!isPlainObject(expr))
    throw new FilterError(`Malformed filter expression: ${JSON.stringify(expr)}`);
  const keys = Object.keys(expr);
  if (keys.length !== 1)
    throw new FilterError(`Malformed filter expression: ${JSON.stringify(expr)}`);
  const op = keys[0]!;
  const arg = (expr as Expr)[op];
  switch (op) {
    case "$literal": {
      const value = fromJsonOrUndefined(arg);
      return () => value;
    }
    case "$field": {
      if (typeof arg !== "string") throw new FilterError("Malformed $field expression");
      return (doc) => fieldOf(doc, arg);
    }
    case "$eq":
    case "$neq":
    case "$lt":
    case "$lte":
    case "$gt":
    case "$gte":
    case "$add":
    case "$sub":
    case "$mul":
    case "$div":
    case "$mod": {
      if (!Array.isArray(arg) || arg.length !== 2)
        throw new FilterError(`Malformed ${op} expression`);
      const l = compile(arg[0]);
      const r = compile(arg[1]);
      switch (op) {
        case "$eq":
          return (d) => compareValues(l(d), r(d)) === 0;
        case "$neq":
          return (d) => compareValues(l(d), r(d)) !== 0;
        case "$lt":
          return (d) => compareValues(l(d), r(d)) < 0;
        case "$lte":
          return (d) => compareValues(l(d), r(d)) <= 0;
        case "$gt":
          return (d) => compareValues(l(d), r(d)) > 0;
        case "$gte":
          return (d) => compareValues(l(d), r(d)) >= 0;
        default:
          return (d) => arithmetic(op, l(d), r(d));
      }
    }
    case "$neg": {
      const x = compile(arg);
      return (d) => {
        const v = x(d);
        if (typeof v === "number") return -v;
        if (typeof v === "bigint") return checkInt64(-v, op);
        throw new FilterError(`neg needs a number, got ${describe(v)}`);
      };
    }
    case "$and":
    case "$or": {
      if (!Array.isArray(arg)) throw new FilterError(`Malformed ${op} expression`);
      const parts = arg.map(compile);
      return op === "$and"
        ? (d) => parts.every((p) => asBoolean(p(d), op))
        : (d) => parts.some((p) => asBoolean(p(d), op));
    }
    case "$not": {
      const x = compile(arg);
      return (d) => !asBoolean(x(d), op);
    }
  }
  throw new FilterError(`Unknown filter operator ${op}`);
}

/** Compiles a serialised filter expression; a document passes when the expression is `true`. */
export function compileFilter(expr: unknown): Predicate {
  const f = compile(expr);
  return (doc) => f(doc) === true;
}
