/**
 * The JSON wire form of Convex values, byte-for-byte what `convexToJson` and
 * `jsonToConvex` of the official `convex/values` produce and accept:
 * int64 as `{"$integer": base64(8 bytes LE)}`, bytes as `{"$bytes": base64}`,
 * NaN/±Infinity/-0 as `{"$float": base64(8 bytes LE)}`, object keys sorted.
 */
import { elementPath, fieldPath, ValueError } from "./errors.js";
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

function isSpecialFloat(n: number): boolean {
  return Number.isNaN(n) || !Number.isFinite(n) || Object.is(n, -0);
}

export function bytesToBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

export function base64ToBytes(encoded: string, path = ""): Uint8Array {
  if (encoded.length % 4 !== 0 || !BASE64.test(encoded)) {
    throw new ValueError(`Invalid base64 string ${JSON.stringify(encoded.slice(0, 64))}`, path);
  }
  const buf = Buffer.from(encoded, "base64");
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

function copyToArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  const out = new ArrayBuffer(bytes.byteLength);
  new Uint8Array(out).set(bytes);
  return out;
}

export function int64ToBase64(value: bigint): string {
  const buf = Buffer.allocUnsafe(8);
  buf.writeBigInt64LE(value);
  return buf.toString("base64");
}

function float64ToBase64(value: number): string {
  const buf = Buffer.allocUnsafe(8);
  buf.writeDoubleLE(value);
  return buf.toString("base64");
}

/** Converts a Convex value to its JSON wire form. Object fields set to `undefined` are omitted. */
export function toJson(value: Value): JsonValue {
  return toJsonAt(value, "");
}

function toJsonAt(value: unknown, path: string): JsonValue {
  switch (typeof value) {
    case "string":
    case "boolean":
      return value;
    case "number":
      return isSpecialFloat(value) ? { $float: float64ToBase64(value) } : value;
    case "bigint":
      if (value < MIN_INT64 || value > MAX_INT64) {
        throw new ValueError(`BigInt ${value} does not fit into a 64-bit signed integer`, path);
      }
      return { $integer: int64ToBase64(value) };
    case "object": {
      if (value === null) return null;
      if (value instanceof ArrayBuffer) return { $bytes: bytesToBase64(new Uint8Array(value)) };
      if (Array.isArray(value)) {
        const out: JsonValue[] = new Array(value.length);
        for (let i = 0; i < value.length; i++) out[i] = toJsonAt(value[i], elementPath(path, i));
        return out;
      }
      if (isPlainObject(value)) {
        const out: { [key: string]: JsonValue } = {};
        const keys = Object.keys(value).sort();
        for (const k of keys) {
          const v = value[k];
          if (v === undefined) continue;
          const p = fieldPath(path, k);
          checkNestedFieldName(k, p);
          out[k] = toJsonAt(v, p);
        }
        return out;
      }
      break;
    }
  }
  throw new ValueError(
    `${describeType(value)} is not a supported Convex type. To learn about Convex's supported types, see https://docs.convex.dev/using/types`,
    path,
  );
}

/** Like {@link toJson}, but `undefined` becomes `{"$undefined": null}` (filters and index ranges use it). */
export function toJsonOrUndefined(value: Value | undefined): JsonValue {
  return value === undefined ? { $undefined: null } : toJson(value);
}

/** Parses the JSON wire form into a Convex value, rejecting anything `jsonToConvex` would. */
export function fromJson(json: unknown): Value {
  return fromJsonAt(json, "");
}

/** Like {@link fromJson}, also accepting `{"$undefined": null}` for a missing value. */
export function fromJsonOrUndefined(json: unknown): Value | undefined {
  if (isPlainObject(json)) {
    const keys = Object.keys(json);
    if (keys.length === 1 && keys[0] === "$undefined" && json.$undefined === null) return undefined;
  }
  return fromJsonAt(json, "");
}

function fromJsonAt(json: unknown, path: string): Value {
  switch (typeof json) {
    case "string":
    case "boolean":
      return json;
    case "number":
      return json;
    case "object": {
      if (json === null) return null;
      if (Array.isArray(json)) {
        const out: Value[] = new Array(json.length);
        for (let i = 0; i < json.length; i++) out[i] = fromJsonAt(json[i], elementPath(path, i));
        return out;
      }
      if (!isPlainObject(json)) break;
      const keys = Object.keys(json);
      if (keys.length === 1) {
        const special = fromSpecial(keys[0]!, json[keys[0]!], path);
        if (special !== NOT_SPECIAL) return special;
      }
      const out: { [key: string]: Value } = {};
      for (const k of keys) {
        const p = fieldPath(path, k);
        checkNestedFieldName(k, p);
        out[k] = fromJsonAt(json[k], p);
      }
      return out;
    }
  }
  throw new ValueError(`Unexpected ${describeType(json)} in a Convex JSON value`, path);
}

const NOT_SPECIAL = Symbol("not special");

function fromSpecial(key: string, inner: unknown, path: string): Value | typeof NOT_SPECIAL {
  switch (key) {
    case "$bytes":
      if (typeof inner !== "string") throw new ValueError("Malformed $bytes field", path);
      return copyToArrayBuffer(base64ToBytes(inner, path));
    case "$integer": {
      if (typeof inner !== "string") throw new ValueError("Malformed $integer field", path);
      const bytes = base64ToBytes(inner, path);
      if (bytes.byteLength !== 8) {
        throw new ValueError(`Received ${bytes.byteLength} bytes, expected 8 for $integer`, path);
      }
      return Buffer.from(bytes.buffer, bytes.byteOffset, 8).readBigInt64LE();
    }
    case "$float": {
      if (typeof inner !== "string") throw new ValueError("Malformed $float field", path);
      const bytes = base64ToBytes(inner, path);
      if (bytes.byteLength !== 8) {
        throw new ValueError(`Received ${bytes.byteLength} bytes, expected 8 for $float`, path);
      }
      const f = Buffer.from(bytes.buffer, bytes.byteOffset, 8).readDoubleLE();
      if (!isSpecialFloat(f))
        throw new ValueError(`Float ${f} should be encoded as a number`, path);
      return f;
    }
    case "$commitTs":
      throw new ValueError("not supported yet: commit timestamp placeholders ($commitTs)", path);
    case "$set":
      throw new ValueError("Received a Set which is no longer supported as a Convex type", path);
    case "$map":
      throw new ValueError("Received a Map which is no longer supported as a Convex type", path);
  }
  return NOT_SPECIAL;
}

/** Serialises a value to JSON text in the wire form. */
export function stringifyValue(value: Value): string {
  return JSON.stringify(toJson(value));
}

/** Parses JSON text in the wire form. */
export function parseValue(text: string): Value {
  return fromJson(JSON.parse(text));
}
