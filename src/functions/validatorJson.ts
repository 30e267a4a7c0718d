/**
 * Validators in the JSON form the official `convex` package serialises them
 * to: `exportArgs()` / `exportReturns()` of a registered function and each
 * table's `documentType` in a schema's `export()` (see
 * `convex/src/values/validators.ts`, type `ValidatorJSON`, convex 1.48).
 *
 * The type is declared here rather than imported so that nothing in `src/`
 * depends on the `convex` package; a test checks the two stay assignable.
 */
import type { JsonValue } from "../values/index.js";
import { fromJson, isPlainObject, type Value } from "../values/index.js";

export type ObjectFieldType = { fieldType: ValidatorJSON; optional: boolean };

export type ValidatorJSON =
  | { type: "null" }
  | { type: "number" }
  | { type: "bigint" }
  | { type: "commitTs" }
  | { type: "boolean" }
  | { type: "string" }
  | { type: "bytes" }
  | { type: "any" }
  | { type: "literal"; value: JsonValue }
  | { type: "id"; tableName: string }
  | { type: "array"; value: ValidatorJSON }
  | { type: "record"; keys: ValidatorJSON; values: ObjectFieldType }
  | { type: "object"; value: Record<string, ObjectFieldType> }
  | { type: "union"; value: ValidatorJSON[] };

const SIMPLE = new Set([
  "null",
  "number",
  "bigint",
  "commitTs",
  "boolean",
  "string",
  "bytes",
  "any",
]);

/** A malformed validator (a bug in the pushed code or the library, not in user data). */
export class ValidatorJsonError extends Error {
  override name = "ValidatorJsonError";
}

function bad(path: string, what: string): never {
  throw new ValidatorJsonError(`Invalid validator JSON${path ? ` at ${path}` : ""}: ${what}`);
}

/**
 * Checks that `json` (already `JSON.parse`d) is a well-formed validator and
 * returns it typed. Unknown validator types are refused, so a newer library
 * cannot slip a validator past us that we would not enforce.
 */
export function parseValidatorJson(json: unknown, path = ""): ValidatorJSON {
  if (!isPlainObject(json)) bad(path, "expected an object");
  const type = json.type;
  if (typeof type !== "string") bad(path, "missing `type`");
  if (SIMPLE.has(type)) return json as ValidatorJSON;
  switch (type) {
    case "literal": {
      let value: Value;
      try {
        value = fromJson(json.value);
      } catch (e) {
        bad(path, `literal value: ${(e as Error).message}`);
      }
      const t = typeof value;
      if (t !== "string" && t !== "number" && t !== "boolean" && t !== "bigint") {
        bad(path, "a literal must be a string, number, bigint or boolean");
      }
      return json as ValidatorJSON;
    }
    case "id":
      if (typeof json.tableName !== "string") bad(path, "`v.id` needs a string `tableName`");
      return json as ValidatorJSON;
    case "array":
      parseValidatorJson(json.value, `${path}.value`);
      return json as ValidatorJSON;
    case "union":
      if (!Array.isArray(json.value)) bad(path, "a union needs an array of members");
      json.value.forEach((m, i) => {
        parseValidatorJson(m, `${path}.value[${i}]`);
      });
      return json as ValidatorJSON;
    case "record":
      parseValidatorJson(json.keys, `${path}.keys`);
      parseFieldType(json.values, `${path}.values`);
      return json as ValidatorJSON;
    case "object": {
      if (!isPlainObject(json.value)) bad(path, "an object validator needs a `value` object");
      for (const [k, f] of Object.entries(json.value)) {
        parseFieldType(f, `${path}.value[${JSON.stringify(k)}]`);
      }
      return json as ValidatorJSON;
    }
    default:
      bad(path, `unknown validator type ${JSON.stringify(type)}`);
  }
}

function parseFieldType(json: unknown, path: string): void {
  if (!isPlainObject(json)) bad(path, "expected { fieldType, optional }");
  if (typeof json.optional !== "boolean") bad(path, "`optional` must be a boolean");
  parseValidatorJson(json.fieldType, `${path}.fieldType`);
}

/** Parses the text `exportArgs()` returns. */
export function parseArgsValidator(text: string): ValidatorJSON {
  const json = parseValidatorJson(JSON.parse(text));
  if (json.type !== "object" && json.type !== "any") {
    throw new ValidatorJsonError("Args validator must be an object or any");
  }
  return json;
}

/** Parses the text `exportReturns()` returns: `null` when no `returns` was declared. */
export function parseReturnsValidator(text: string): ValidatorJSON | null {
  const json: unknown = JSON.parse(text);
  return json === null ? null : parseValidatorJson(json);
}
