/**
 * The JSON wire form of Convex values, byte-for-byte what `convexToJson` and
 * `jsonToConvex` of the official `convex/values` produce and accept:
 * int64 as `{"$integer": base64(8 bytes LE)}`, bytes as `{"$bytes": base64}`,
 * NaN/±Infinity/-0 as `{"$float": base64(8 bytes LE)}`, object keys sorted.
 */
import { fieldSegment, rethrowWithin, ValueError } from "./errors.js";
import { checkNestedFieldName } from "./fieldNames.js";
import {
  describeType,
  isPlainObject,
  type JsonValue,
  MAX_INT64,
  MIN_INT64,
  type Value,
} from "./value.js";

const BASE64 = /^[A-Za-z0-9+/\-_]*={0,2}$/;

/**
 * Most levels of arrays and objects inside one another that JSON from
 * outside (a client's message or request, a syscall's arguments) may have.
 * V8's JSON.parse takes any depth, but the recursive code that handles
 * values after it (JSON.stringify among it) runs out of stack somewhere past
 * a few thousand levels, and that must not become an internal error.
 * Documents are held to 16 levels when they are written (validate.ts); this
 * bound is for everything else, far beyond what a real app sends.
 */
export const MAX_JSON_DEPTH = 1000;

/**
 * Whether `json` (as JSON.parse returns it) nests arrays and objects deeper
 * than `max`. It recurses at most `max + 1` calls deep, however deep `json`
 * is, and allocates nothing: it runs on every client message and syscall.
 */
export function nestedDeeperThan(json: unknown, max: number): boolean {
  if (typeof json !== "object" || json === null) return false;
  if (max <= 0) return true;
  if (Array.isArray(json)) {
    for (let i = 0; i < json.length; i++) if (nestedDeeperThan(json[i], max - 1)) return true;
    return false;
  }
  const o = json as Record<string, unknown>;
  for (const k in o) if (nestedDeeperThan(o[k], max - 1)) return true;
  return false;
}

function isSpecialFloat(n: number): boolean {
  return Number.isNaN(n) || !Number.isFinite(n) || Object.is(n, -0);
}

export function bytesToBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

export function base64ToBytes(encoded: string): Uint8Array {
  if (encoded.length % 4 !== 0 || !BASE64.test(encoded)) {
    throw new ValueError(`Invalid base64 string ${JSON.stringify(encoded.slice(0, 64))}`);
  }
  const buf = Buffer.from(encoded, "base64");
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

function copyToArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  const out = new ArrayBuffer(bytes.byteLength);
  new Uint8Array(out).set(bytes);
  return out;
}

const scratch = Buffer.alloc(8);

export function int64ToBase64(value: bigint): string {
  if (value < MIN_INT64 || value > MAX_INT64) {
    throw new ValueError(`BigInt ${value} does not fit into a 64-bit signed integer`);
  }
  scratch.writeBigInt64LE(value);
  return scratch.toString("base64");
}

function float64ToBase64(value: number): string {
  scratch.writeDoubleLE(value);
  return scratch.toString("base64");
}

function unsupported(value: unknown): ValueError {
  return new ValueError(
    `${describeType(value)} is not a supported Convex type. To learn about Convex's supported types, see https://docs.convex.dev/using/types`,
  );
}

/**
 * Object keys in sorted order. (Objects built by inserting keys in this
 * order list array-index-like keys such as "0" first anyway: that is
 * JavaScript's property order, and the official library's output has it too.)
 */
function sortedKeys(obj: Record<string, unknown>): string[] {
  return Object.keys(obj).sort();
}

/** Converts a Convex value to its JSON wire form. Object fields set to `undefined` are omitted. */
export function toJson(value: Value): JsonValue {
  switch (typeof value) {
    case "string":
    case "boolean":
      return value;
    case "number":
      return isSpecialFloat(value) ? { $float: float64ToBase64(value) } : value;
    case "bigint":
      return { $integer: int64ToBase64(value) };
    case "object": {
      if (value === null) return null;
      if (value instanceof ArrayBuffer) return { $bytes: bytesToBase64(new Uint8Array(value)) };
      if (Array.isArray(value)) {
        const out: JsonValue[] = new Array(value.length);
        for (let i = 0; i < value.length; i++) {
          try {
            out[i] = toJson(value[i]!);
          } catch (e) {
            rethrowWithin(e, `[${i}]`);
          }
        }
        return out;
      }
      if (isPlainObject(value)) {
        const out: { [key: string]: JsonValue } = {};
        for (const k of sortedKeys(value)) {
          const v = value[k];
          if (v === undefined) continue;
          try {
            checkNestedFieldName(k);
            out[k] = toJson(v);
          } catch (e) {
            rethrowWithin(e, fieldSegment(k));
          }
        }
        return out;
      }
      break;
    }
  }
  throw unsupported(value);
}

/** Like {@link toJson}, but `undefined` becomes `{"$undefined": null}` (filters and index ranges use it). */
export function toJsonOrUndefined(value: Value | undefined): JsonValue {
  return value === undefined ? { $undefined: null } : toJson(value);
}

/** Parses the JSON wire form into a Convex value, rejecting anything `jsonToConvex` would. */
export function fromJson(json: unknown): Value {
  switch (typeof json) {
    case "string":
    case "boolean":
    case "number":
      return json;
    case "object": {
      if (json === null) return null;
      if (Array.isArray(json)) {
        const out: Value[] = new Array(json.length);
        for (let i = 0; i < json.length; i++) {
          try {
            out[i] = fromJson(json[i]);
          } catch (e) {
            rethrowWithin(e, `[${i}]`);
          }
        }
        return out;
      }
      if (!isPlainObject(json)) break;
      const keys = Object.keys(json);
      if (keys.length === 1 && keys[0]!.startsWith("$")) {
        const special = fromSpecial(keys[0]!, json[keys[0]!]);
        if (special !== NOT_SPECIAL) return special;
      }
      const out: { [key: string]: Value } = {};
      for (const k of keys) {
        try {
          checkNestedFieldName(k);
          out[k] = fromJson(json[k]);
        } catch (e) {
          rethrowWithin(e, fieldSegment(k));
        }
      }
      return out;
    }
  }
  throw new ValueError(`Unexpected ${describeType(json)} in a Convex JSON value`);
}

/** Like {@link fromJson}, also accepting `{"$undefined": null}` for a missing value. */
export function fromJsonOrUndefined(json: unknown): Value | undefined {
  if (isPlainObject(json)) {
    const keys = Object.keys(json);
    if (keys.length === 1 && keys[0] === "$undefined" && json.$undefined === null) return undefined;
  }
  return fromJson(json);
}

const NOT_SPECIAL = Symbol("not special");

function fromSpecial(key: string, inner: unknown): Value | typeof NOT_SPECIAL {
  switch (key) {
    case "$bytes":
      if (typeof inner !== "string") throw new ValueError("Malformed $bytes field");
      return copyToArrayBuffer(base64ToBytes(inner));
    case "$integer": {
      if (typeof inner !== "string") throw new ValueError("Malformed $integer field");
      const bytes = base64ToBytes(inner);
      if (bytes.byteLength !== 8) {
        throw new ValueError(`Received ${bytes.byteLength} bytes, expected 8 for $integer`);
      }
      return Buffer.from(bytes.buffer, bytes.byteOffset, 8).readBigInt64LE();
    }
    case "$float": {
      if (typeof inner !== "string") throw new ValueError("Malformed $float field");
      const bytes = base64ToBytes(inner);
      if (bytes.byteLength !== 8) {
        throw new ValueError(`Received ${bytes.byteLength} bytes, expected 8 for $float`);
      }
      const f = Buffer.from(bytes.buffer, bytes.byteOffset, 8).readDoubleLE();
      if (!isSpecialFloat(f)) throw new ValueError(`Float ${f} should be encoded as a number`);
      return f;
    }
    case "$commitTs":
      throw new ValueError("not supported yet: commit timestamp placeholders ($commitTs)");
    case "$set":
      throw new ValueError("Received a Set which is no longer supported as a Convex type");
    case "$map":
      throw new ValueError("Received a Map which is no longer supported as a Convex type");
  }
  return NOT_SPECIAL;
}

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/**
 * True when `JSON.stringify(value)` already is the wire form: no int64,
 * bytes or special floats, and every object's keys in sorted order with
 * valid names. Values that went through `checkValue` (or came from storage)
 * are in sorted order, so this is the common case.
 */
function isWireReady(value: Value): boolean {
  switch (typeof value) {
    case "string":
    case "boolean":
      return true;
    case "number":
      return Number.isFinite(value) && !Object.is(value, -0);
    case "object": {
      if (value === null) return true;
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) if (!isWireReady(value[i]!)) return false;
        return true;
      }
      if (value instanceof ArrayBuffer || !isPlainObject(value)) return false;
      let prev: string | null = null;
      for (const k in value) {
        const v = value[k];
        if (v === undefined || (prev !== null && !(prev < k))) return false;
        if (k.length > 1024 || k.charCodeAt(0) === 36 || !PRINTABLE_ASCII.test(k)) return false;
        if (!isWireReady(v)) return false;
        prev = k;
      }
      return true;
    }
  }
  return false;
}

/** Serialises a value to JSON text in the wire form (`JSON.stringify(toJson(value))`). */
export function stringifyValue(value: Value): string {
  return JSON.stringify(isWireReady(value) ? value : toJson(value));
}

/** Parses JSON text in the wire form. */
export function parseValue(text: string): Value {
  return fromJson(JSON.parse(text));
}

/**
 * Parses wire-form text that Tessera itself wrote (stored documents): no
 * validation, and when the text cannot contain a `{"$…": …}` special form
 * (no `"$` anywhere in it) no second pass at all.
 */
export function parseStoredValue(text: string): Value {
  const json = JSON.parse(text) as JsonValue;
  return text.includes('"$') ? decodeSpecials(json) : (json as Value);
}

function decodeSpecials(json: JsonValue): Value {
  if (typeof json !== "object" || json === null) return json;
  if (Array.isArray(json)) {
    for (let i = 0; i < json.length; i++) json[i] = decodeSpecials(json[i]!) as JsonValue;
    return json as Value;
  }
  const keys = Object.keys(json);
  if (keys.length === 1 && keys[0]!.startsWith("$")) {
    const special = fromSpecial(keys[0]!, json[keys[0]!]);
    if (special !== NOT_SPECIAL) return special;
  }
  for (const k of keys) json[k] = decodeSpecials(json[k]!) as JsonValue;
  return json as Value;
}
