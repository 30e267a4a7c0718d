/**
 * Checking values against Convex validators in their JSON form: function
 * arguments before a call, return values after it, documents on every write
 * when the schema asks for validation.
 *
 * Semantics follow the official validator classes (`convex/values`,
 * `validators.ts`) and the public docs (docs.convex.dev/functions/validation,
 * docs.convex.dev/database/schemas):
 *   - `v.number()` (JSON `number`) accepts every float64, NaN, ±Infinity and -0
 *     included, never a bigint; `v.int64()` (JSON `bigint`) and `v.commitTs()`
 *     accept only bigints.
 *   - `v.literal(x)` matches by Convex value equality (`valuesEqual`: NaN equals
 *     NaN, -0 differs from 0, `5n` differs from `5`).
 *   - objects must be plain objects; fields not in the validator are refused;
 *     optional fields may be absent. A field whose value is `undefined` counts
 *     as absent, exactly as on the wire (`convexToJson` drops such fields), so
 *     `{a: undefined}` is `{}`: accepted when `a` is optional, "missing" when it
 *     is required, never an extra field.
 *   - records: every present field's name is checked against the key validator
 *     and its value against the value validator.
 *   - unions: some member matches. Arrays: every element.
 *   - `v.id("t")`: a string that decodes as one of our document IDs whose table
 *     number is the one `t` has (system tables alike).
 *   - a top-level `undefined` (a missing value) matches no validator, not even
 *     `v.any()`; `validateArgs` and `validateReturns` map `undefined` to `{}`
 *     and `null` first, as the official library does.
 *
 * Message wording (see `messages` below) is modelled on what the official
 * backend shows users, as quoted in public reports: get-convex/agent#91 and
 * get-convex/convex-backend#256 ("ArgumentValidationError: Object contains
 * extra field `userId` that is not in the validator.\n\nObject: {...}\n
 * Validator: v.object({...})"), get-convex/convex-backend#134 ("Failed to
 * insert or update a document in table \"menu\" because it does not match the
 * schema: Object is missing the required field `abc`. Consider wrapping the
 * field validator in `v.optional(...)` if this is expected."), and app
 * write-ups quoting "ArgumentValidationError: Value does not match
 * validator.\nPath: .ownerId\nValue: \"user_demo_001\"\nValidator:
 * v.id(\"users\")" and "ArgumentValidationError: Found ID \"…\" from table
 * `events`, which does not match the table name in validator
 * `v.id(\"projects\")`.\nPath: .resourceId"; "ReturnsValidationError: …" from
 * the docs and reports. The non-object-arguments message is the official
 * client's (`parseArgs` in `convex/src/common/index.ts`). The record-key
 * message is our own.
 */

import type { Transaction } from "../database/index.js";
import type { Value } from "../values/index.js";
import {
  decodeDocumentId,
  fieldSegment,
  fromJson,
  isPlainObject,
  valuesEqual,
} from "../values/index.js";
import { MAX_RENDERED_VALUE, renderValidator, renderValue } from "./render.js";
import { type ObjectFieldType, parseValidatorJson, type ValidatorJSON } from "./validatorJson.js";

export { renderValidator, renderValue } from "./render.js";
export type { ObjectFieldType, ValidatorJSON } from "./validatorJson.js";
export {
  parseArgsValidator,
  parseReturnsValidator,
  parseValidatorJson,
  ValidatorJsonError,
} from "./validatorJson.js";

/** What validation needs to know about the deployment. */
export interface ValidationContext {
  /** The table number of a table (user or system, e.g. `_storage`), or undefined if none exists. */
  tableNumberForName(name: string): number | undefined;
  /** The name of a table number, used only to word messages; optional. */
  tableNameForNumber?(tableNumber: number): string | undefined;
}

/** Table names and numbers as a transaction sees them (its own new tables included). */
export class TransactionNames implements ValidationContext {
  constructor(private readonly tx: Transaction) {}
  tableNumberForName(name: string): number | undefined {
    return this.tx.currentCatalog.table(name)?.number;
  }
  tableNameForNumber(n: number): string | undefined {
    return this.tx.currentCatalog.tableByNumber(n)?.name;
  }
}

export type ValidationFailureKind =
  /** The value does not match the validator at `path`. */
  | "noMatch"
  /** The object at `objectPath` lacks the required field `field`. */
  | "missingField"
  /** The object at `objectPath` has the field `field`, which its validator does not list. */
  | "extraField"
  /** A well-formed ID of another table where `v.id(table)` was expected. */
  | "idTable"
  /** A record key (the last segment of `path`) that does not match the record's key validator. */
  | "recordKey";

export interface ValidationFailure {
  kind: ValidationFailureKind;
  /** Path of the offending field or element, like `.messages[2].author`; "" for the value itself. */
  path: string;
  /** For missing/extra fields: the path of the object that holds (or lacks) `field`. */
  objectPath: string;
  field?: string;
  /** The validator the message shows (the object's validator for missing/extra fields). */
  validator: ValidatorJSON;
  /** The value the message shows (the object for missing/extra fields, the key for record keys). */
  value: Value | undefined;
  /** `renderValidator(validator)`. */
  expected: string;
  /** `renderValue(value)`, truncated for huge values. */
  actual: string;
  /** The explanation, without the `ArgumentValidationError: `-style prefix. */
  message: string;
}

// ---------------------------------------------------------------------------
// The check itself. It allocates nothing on success; a failure collects its
// path segments innermost first while the recursion unwinds.

interface Fail {
  kind: ValidationFailureKind;
  /** Segments from the failing value outwards. */
  segments: string[];
  /** How many of the innermost segments belong below the object (1 for the field). */
  fieldSegments: number;
  field?: string;
  validator: ValidatorJSON;
  value: Value | undefined;
  /** For `idTable`: the ID's table number. */
  foundTable?: number;
}

const literalCache = new WeakMap<object, Value>();
function literalValue(validator: { value: unknown }): Value {
  let v = literalCache.get(validator);
  if (v === undefined) {
    v = fromJson(validator.value);
    literalCache.set(validator, v);
  }
  return v;
}

const fieldsCache = new WeakMap<object, [string, ObjectFieldType][]>();
function objectFields(value: Record<string, ObjectFieldType>): [string, ObjectFieldType][] {
  let f = fieldsCache.get(value);
  if (f === undefined) {
    f = Object.entries(value);
    fieldsCache.set(value, f);
  }
  return f;
}

function noMatch(validator: ValidatorJSON, value: Value | undefined): Fail {
  return { kind: "noMatch", segments: [], fieldSegments: 0, validator, value };
}

function checkId(
  validator: { type: "id"; tableName: string },
  value: Value | undefined,
  ctx: ValidationContext,
): Fail | null {
  if (typeof value !== "string") return noMatch(validator, value);
  let tableNumber: number;
  try {
    tableNumber = decodeDocumentId(value).tableNumber;
  } catch {
    return noMatch(validator, value);
  }
  if (ctx.tableNumberForName(validator.tableName) === tableNumber) return null;
  return {
    kind: "idTable",
    segments: [],
    fieldSegments: 0,
    validator,
    value,
    foundTable: tableNumber,
  };
}

function check(
  validator: ValidatorJSON,
  value: Value | undefined,
  ctx: ValidationContext,
): Fail | null {
  if (value === undefined) return noMatch(validator, value);
  switch (validator.type) {
    case "any":
      return null;
    case "null":
      return value === null ? null : noMatch(validator, value);
    case "number":
      return typeof value === "number" ? null : noMatch(validator, value);
    case "bigint":
    case "commitTs":
      return typeof value === "bigint" ? null : noMatch(validator, value);
    case "boolean":
      return typeof value === "boolean" ? null : noMatch(validator, value);
    case "string":
      return typeof value === "string" ? null : noMatch(validator, value);
    case "bytes":
      return value instanceof ArrayBuffer ? null : noMatch(validator, value);
    case "literal":
      return valuesEqual(literalValue(validator), value) ? null : noMatch(validator, value);
    case "id":
      return checkId(validator, value, ctx);
    case "array": {
      if (!Array.isArray(value)) return noMatch(validator, value);
      for (let i = 0; i < value.length; i++) {
        const f = check(validator.value, value[i], ctx);
        if (f !== null) {
          f.segments.push(`[${i}]`);
          return f;
        }
      }
      return null;
    }
    case "union": {
      for (const member of validator.value) {
        if (check(member, value, ctx) === null) return null;
      }
      return noMatch(validator, value);
    }
    case "object":
      return checkObject(validator, value, ctx);
    case "record":
      return checkRecord(validator, value, ctx);
    default:
      throw new Error(
        `unknown validator type ${JSON.stringify((validator as { type: unknown }).type)}`,
      );
  }
}

function checkObject(
  validator: Extract<ValidatorJSON, { type: "object" }>,
  value: Value,
  ctx: ValidationContext,
): Fail | null {
  if (!isPlainObject(value)) return noMatch(validator, value);
  const fields = validator.value;
  for (const [k, { fieldType, optional }] of objectFields(fields)) {
    const v = Object.hasOwn(value, k) ? (value[k] as Value | undefined) : undefined;
    if (v === undefined) {
      if (!optional) {
        return {
          kind: "missingField",
          segments: [fieldSegment(k)],
          fieldSegments: 1,
          field: k,
          validator,
          value,
        };
      }
      continue;
    }
    const f = check(fieldType, v, ctx);
    if (f !== null) {
      f.segments.push(fieldSegment(k));
      return f;
    }
  }
  for (const k in value) {
    if (!Object.hasOwn(fields, k) && Object.hasOwn(value, k) && value[k] !== undefined) {
      return {
        kind: "extraField",
        segments: [fieldSegment(k)],
        fieldSegments: 1,
        field: k,
        validator,
        value,
      };
    }
  }
  return null;
}

function checkRecord(
  validator: Extract<ValidatorJSON, { type: "record" }>,
  value: Value,
  ctx: ValidationContext,
): Fail | null {
  if (!isPlainObject(value)) return noMatch(validator, value);
  for (const k in value) {
    if (!Object.hasOwn(value, k)) continue;
    const v = value[k] as Value | undefined;
    if (v === undefined) continue;
    const keyFail = check(validator.keys, k, ctx);
    if (keyFail !== null) {
      if (keyFail.kind !== "idTable") {
        keyFail.kind = "recordKey";
        keyFail.validator = validator.keys;
        keyFail.value = k;
      }
      keyFail.segments = [fieldSegment(k)];
      return keyFail;
    }
    const f = check(validator.values.fieldType, v, ctx);
    if (f !== null) {
      f.segments.push(fieldSegment(k));
      return f;
    }
  }
  return null;
}

// ---------------------------------------------------------------------------
// Messages.

function pathLine(path: string): string {
  return path ? `\nPath: ${path}` : "";
}

function describe(fail: Fail, ctx: ValidationContext, pathPrefix = ""): ValidationFailure {
  const outward = fail.segments;
  let path = pathPrefix;
  for (let i = outward.length - 1; i >= 0; i--) path += outward[i];
  let objectPath = path;
  for (let i = 0; i < fail.fieldSegments; i++) {
    objectPath = objectPath.slice(0, objectPath.length - outward[i]!.length);
  }
  const expected = renderValidator(fail.validator);
  const actual = renderValue(fail.value, MAX_RENDERED_VALUE);
  let message: string;
  switch (fail.kind) {
    case "noMatch":
      message = `Value does not match validator.${pathLine(path)}\nValue: ${actual}\nValidator: ${expected}`;
      break;
    case "missingField":
      message =
        `Object is missing the required field \`${fail.field}\`. Consider wrapping the field ` +
        `validator in \`v.optional(...)\` if this is expected.${pathLine(objectPath)}\n\n` +
        `Object: ${actual}\nValidator: ${expected}`;
      break;
    case "extraField":
      message =
        `Object contains extra field \`${fail.field}\` that is not in the validator.` +
        `${pathLine(objectPath)}\n\nObject: ${actual}\nValidator: ${expected}`;
      break;
    case "idTable": {
      const n = fail.foundTable!;
      const name = ctx.tableNameForNumber?.(n);
      const from = name === undefined ? `an unknown table (number ${n})` : `table \`${name}\``;
      message =
        `Found ID ${actual} from ${from}, which does not match the table name in validator ` +
        `\`${expected}\`.${pathLine(path)}`;
      break;
    }
    case "recordKey":
      message = `Record key does not match validator.${pathLine(path)}\nKey: ${actual}\nValidator: ${expected}`;
      break;
  }
  const failure: ValidationFailure = {
    kind: fail.kind,
    path,
    objectPath,
    validator: fail.validator,
    value: fail.value,
    expected,
    actual,
    message,
  };
  if (fail.field !== undefined) failure.field = fail.field;
  return failure;
}

/**
 * Checks `value` (`undefined` meaning "missing") against a validator; null if
 * it conforms, otherwise the first failure found (object fields in validator
 * order, then extra fields; array elements in order).
 */
export function validateValue(
  validator: ValidatorJSON,
  value: Value | undefined,
  ctx: ValidationContext,
): ValidationFailure | null {
  const fail = check(validator, value, ctx);
  return fail === null ? null : describe(fail, ctx);
}

// ---------------------------------------------------------------------------
// Arguments, return values, documents.

export type ValidationTarget = "arguments" | "returns" | "document";

/** A value that broke a validator; `message` is what the caller of the function sees. */
export class ConvexValidationError extends Error {
  override name = "ConvexValidationError";
  constructor(
    readonly target: ValidationTarget,
    message: string,
    /** Null when the value was not validated field by field (arguments that are not an object). */
    readonly failure: ValidationFailure | null,
    /** For documents: the table written to. */
    readonly tableName?: string,
  ) {
    super(message);
  }
}

const ARGS_PREFIX = "ArgumentValidationError: ";
const RETURNS_PREFIX = "ReturnsValidationError: ";

/**
 * Checks a function's arguments against its args validator (`exportArgs()`:
 * `v.any()` when none was declared, else an object validator). The arguments
 * must be an object in any case; `undefined` stands for `{}`.
 */
export function validateArgs(
  argsValidator: ValidatorJSON,
  args: Value | undefined,
  ctx: ValidationContext,
): ConvexValidationError | null {
  const value = args === undefined ? {} : args;
  if (!isPlainObject(value)) {
    return new ConvexValidationError(
      "arguments",
      `${ARGS_PREFIX}The arguments to a Convex function must be an object. Received: ${renderValue(value)}`,
      null,
    );
  }
  const failure = validateValue(argsValidator, value, ctx);
  return failure === null
    ? null
    : new ConvexValidationError("arguments", ARGS_PREFIX + failure.message, failure);
}

/**
 * Checks a return value against the `returns` validator (`exportReturns()`,
 * null when none was declared: nothing is checked). A function that returns
 * `undefined` returns `null`, as the official library sends it.
 */
export function validateReturns(
  returnsValidator: ValidatorJSON | null,
  value: Value | undefined,
  ctx: ValidationContext,
): ConvexValidationError | null {
  if (returnsValidator === null) return null;
  const failure = validateValue(returnsValidator, value === undefined ? null : value, ctx);
  return failure === null
    ? null
    : new ConvexValidationError("returns", RETURNS_PREFIX + failure.message, failure);
}

const SYSTEM_FIELDS: readonly [string, ValidatorJSON][] = [
  ["_id", { type: "id", tableName: "" }],
  ["_creationTime", { type: "number" }],
];

function declaresField(validator: ValidatorJSON, field: string): boolean {
  if (validator.type === "object") return Object.hasOwn(validator.value, field);
  if (validator.type === "union") return validator.value.some((m) => declaresField(m, field));
  return false;
}

function documentError(tableName: string, failure: ValidationFailure): ConvexValidationError {
  return new ConvexValidationError(
    "document",
    `Failed to insert or update a document in table ${JSON.stringify(tableName)} because it ` +
      `does not match the schema: ${failure.message}`,
    failure,
    tableName,
  );
}

/**
 * Checks a document about to be written to `tableName` against the table's
 * validator from the schema. The system fields `_id` and `_creationTime`, when
 * present, must be `v.id(tableName)` and `v.number()`; they are allowed even
 * though the table validator does not list them.
 */
export function validateDocument(
  tableName: string,
  tableValidator: ValidatorJSON,
  document: Value,
  ctx: ValidationContext,
): ConvexValidationError | null {
  if (!isPlainObject(document)) {
    const failure = validateValue(tableValidator, document, ctx);
    return failure === null ? null : documentError(tableName, failure);
  }
  let userFields: Record<string, Value> = document;
  for (const [field, systemValidator] of SYSTEM_FIELDS) {
    const v = Object.hasOwn(document, field) ? document[field] : undefined;
    if (v === undefined || declaresField(tableValidator, field)) continue;
    const validator: ValidatorJSON =
      systemValidator.type === "id" ? { type: "id", tableName } : systemValidator;
    const fail = check(validator, v, ctx);
    if (fail !== null) return documentError(tableName, describe(fail, ctx, fieldSegment(field)));
    if (userFields === document) userFields = { ...document };
    delete userFields[field];
  }
  const failure = validateValue(tableValidator, userFields, ctx);
  return failure === null ? null : documentError(tableName, failure);
}

// ---------------------------------------------------------------------------
// Schemas.

/** What the backend enforces of a pushed schema (`defineSchema(...).export()`). */
export interface SchemaValidators {
  /** `schemaValidation` of `defineSchema` (default true). */
  schemaValidation: boolean;
  /** The enforced `documentType` of each table listed in the schema. */
  tables: Map<string, ValidatorJSON>;
}

/**
 * Reads the validators out of a schema's `export()` JSON (text or parsed).
 * `strictTableNameTypes` only affects TypeScript types and is not exported;
 * staged validators (`stagedDocumentType`) are not enforced on writes.
 */
export function schemaValidatorsFromJson(exported: string | object): SchemaValidators {
  const json = typeof exported === "string" ? JSON.parse(exported) : exported;
  if (!isPlainObject(json) || !Array.isArray(json.tables)) {
    throw new Error("Invalid schema JSON: expected { tables: [...] }");
  }
  const tables = new Map<string, ValidatorJSON>();
  for (const t of json.tables) {
    if (!isPlainObject(t) || typeof t.tableName !== "string") {
      throw new Error("Invalid schema JSON: every table needs a tableName");
    }
    tables.set(
      t.tableName,
      parseValidatorJson(t.documentType, `.tables[${JSON.stringify(t.tableName)}]`),
    );
  }
  return { schemaValidation: json.schemaValidation !== false, tables };
}

/**
 * The schema check of a write: null when the schema does not validate
 * (`schemaValidation: false`), does not list the table (the docs: "your schema
 * will only validate documents in the tables listed in the schema"), or the
 * document conforms.
 */
export function validateWrite(
  schema: SchemaValidators | null,
  tableName: string,
  document: Value,
  ctx: ValidationContext,
): ConvexValidationError | null {
  if (schema === null || !schema.schemaValidation) return null;
  const validator = schema.tables.get(tableName);
  if (validator === undefined) return null;
  return validateDocument(tableName, validator, document, ctx);
}
