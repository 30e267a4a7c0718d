/**
 * Compact text forms of validators and values for error messages, in the
 * style the official Convex backend shows to users (as seen in public issue
 * reports, e.g. get-convex/agent#91 and get-convex/convex-backend#256):
 *
 *   Object: {paginationOpts: {cursor: null, numItems: 10.0}, userId: "test_user"}
 *   Validator: v.object({cursor: v.union(v.string(), v.null()), numItems: v.float64()})
 *
 * Field names are bare when they are identifiers and quoted otherwise, object
 * fields are listed in sorted order, floats always show a fraction (`10.0`),
 * `v.number()` shows as `v.float64()` and `v.bigint()` as `v.int64()`.
 * Bigints show as `5n` and bytes as `bytes("<base64>")` (our choice: the
 * public reports do not show these).
 */
import { isPlainObject, type Value } from "../values/index.js";
import type { ValidatorJSON } from "./validatorJson.js";

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

function renderKey(key: string): string {
  return IDENTIFIER.test(key) ? key : JSON.stringify(key);
}

/** A float64 the way the messages show it: always with a fraction or exponent. */
export function renderNumber(n: number): string {
  if (Number.isNaN(n)) return "NaN";
  if (n === Infinity) return "Infinity";
  if (n === -Infinity) return "-Infinity";
  if (Object.is(n, -0)) return "-0.0";
  const s = String(n);
  return /[.e]/.test(s) ? s : `${s}.0`;
}

/** The official validator source text for a validator, e.g. `v.union(v.literal("a"), v.null())`. */
export function renderValidator(validator: ValidatorJSON): string {
  switch (validator.type) {
    case "null":
    case "string":
    case "boolean":
    case "bytes":
    case "any":
    case "commitTs":
      return `v.${validator.type}()`;
    case "number":
      return "v.float64()";
    case "bigint":
      return "v.int64()";
    case "literal":
      return `v.literal(${renderLiteral(validator)})`;
    case "id":
      return `v.id(${JSON.stringify(validator.tableName)})`;
    case "array":
      return `v.array(${renderValidator(validator.value)})`;
    case "record":
      return `v.record(${renderValidator(validator.keys)}, ${renderValidator(validator.values.fieldType)})`;
    case "union":
      return `v.union(${validator.value.map(renderValidator).join(", ")})`;
    case "object": {
      const fields = Object.keys(validator.value)
        .sort()
        .map((k) => {
          const f = validator.value[k]!;
          const inner = renderValidator(f.fieldType);
          return `${renderKey(k)}: ${f.optional ? `v.optional(${inner})` : inner}`;
        });
      return `v.object({${fields.join(", ")}})`;
    }
    default:
      return `<unknown validator ${JSON.stringify((validator as { type: unknown }).type)}>`;
  }
}

function renderLiteral(validator: { value: unknown }): string {
  // Decoding is done by the caller's cache when validating; here a plain read suffices.
  const json = validator.value;
  if (typeof json === "number") return renderNumber(json);
  if (typeof json === "string" || typeof json === "boolean") return JSON.stringify(json);
  if (isPlainObject(json) && typeof json.$integer === "string") {
    const b = Buffer.from(json.$integer, "base64");
    if (b.length === 8) return `${b.readBigInt64LE()}n`;
  }
  if (isPlainObject(json) && typeof json.$float === "string") {
    const b = Buffer.from(json.$float, "base64");
    if (b.length === 8) return renderNumber(b.readDoubleLE());
  }
  return JSON.stringify(json);
}

/** Default length (in characters) past which a rendered value is cut off with `...`. */
export const MAX_RENDERED_VALUE = 1000;

/**
 * A compact rendering of a value, cut off after about `maxLength` characters
 * (huge values are not walked past the cut).
 */
export function renderValue(value: Value | undefined, maxLength = MAX_RENDERED_VALUE): string {
  const out: string[] = [];
  let length = 0;
  const push = (s: string): boolean => {
    out.push(s);
    length += s.length;
    return length <= maxLength;
  };
  const walk = (v: Value | undefined): boolean => {
    switch (typeof v) {
      case "undefined":
        return push("undefined");
      case "string":
        return push(JSON.stringify(v.length > maxLength ? v.slice(0, maxLength + 1) : v));
      case "number":
        return push(renderNumber(v));
      case "bigint":
        return push(`${v}n`);
      case "boolean":
        return push(String(v));
      case "object": {
        if (v === null) return push("null");
        if (v instanceof ArrayBuffer) {
          const shown = v.byteLength > maxLength ? v.slice(0, maxLength) : v;
          return push(`bytes(${JSON.stringify(Buffer.from(shown).toString("base64"))})`);
        }
        if (Array.isArray(v)) {
          if (!push("[")) return false;
          for (let i = 0; i < v.length; i++) {
            if (i > 0 && !push(", ")) return false;
            if (!walk(v[i])) return false;
          }
          return push("]");
        }
        if (isPlainObject(v)) {
          if (!push("{")) return false;
          let first = true;
          for (const k of Object.keys(v).sort()) {
            const field = v[k];
            if (field === undefined) continue;
            if (!first && !push(", ")) return false;
            first = false;
            if (!push(`${renderKey(k)}: `) || !walk(field)) return false;
          }
          return push("}");
        }
        return push(`<${(v as object).constructor?.name ?? "object"}>`);
      }
      default:
        return push(`<${typeof v}>`);
    }
  };
  if (walk(value)) return out.join("");
  return `${out.join("").slice(0, maxLength)}...`;
}
