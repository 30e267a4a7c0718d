/**
 * Order-preserving binary encoding of index keys: for tuples of values `a`
 * and `b`, comparing `encodeKey(a)` and `encodeKey(b)` as unsigned bytes gives
 * the same answer as comparing the tuples element by element with
 * `compareValues`. Each encoded value is self-delimiting, so a tuple is the
 * concatenation of its elements and a key prefix is a tuple prefix.
 *
 * Layout (tag byte, then payload):
 *   0x01 undefined | 0x02 null | 0x03 int64: 8 bytes big-endian, sign bit flipped
 *   0x04 float64: 8 bytes big-endian of the IEEE-754 total-order transform
 *   0x05 false | 0x06 true
 *   0x07 string: UTF-8, 0x00 escaped as 0x00 0xFF, then 0x00
 *   0x08 bytes: same escaping and terminator as strings
 *   0x09 array: the elements, then 0x00
 *   0x0A object: (string-encoded key, value) per field in key order, then 0x00
 * No tag is 0x00 (the terminator) or 0xFF (the escape), which is what makes
 * "shorter sorts first" hold inside arrays, objects and escaped strings.
 */
import { definedKeys, sortableFloatBits } from "./compare.js";
import { ValueError } from "./errors.js";
import type { Value } from "./value.js";

const TAG_UNDEFINED = 0x01;
const TAG_NULL = 0x02;
const TAG_INT64 = 0x03;
const TAG_FLOAT64 = 0x04;
const TAG_FALSE = 0x05;
const TAG_TRUE = 0x06;
const TAG_STRING = 0x07;
const TAG_BYTES = 0x08;
const TAG_ARRAY = 0x09;
const TAG_OBJECT = 0x0a;
const END = 0x00;
const ESCAPE = 0xff;
const INT64_FLIP = 1n << 63n;

class KeyWriter {
  buf: Buffer;
  pos = 0;
  constructor(capacity = 64) {
    this.buf = Buffer.allocUnsafe(capacity);
  }
  ensure(extra: number): void {
    if (this.pos + extra <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + extra));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
  byte(b: number): void {
    this.ensure(1);
    this.buf[this.pos++] = b;
  }
  escaped(bytes: Uint8Array): void {
    this.ensure(bytes.length * 2 + 1);
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i]!;
      this.buf[this.pos++] = b;
      if (b === END) this.buf[this.pos++] = ESCAPE;
    }
    this.buf[this.pos++] = END;
  }
  string(s: string): void {
    const n = s.length;
    this.ensure(n * 3 + 1);
    // Short ASCII strings (IDs, names, most field values) are copied char by
    // char: cheaper than a native UTF-8 write for a few dozen bytes.
    if (n <= 64) {
      const start = this.pos;
      let i = 0;
      for (; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c === 0 || c >= 0x80) break;
        this.buf[start + i] = c;
      }
      if (i === n) {
        this.pos = start + n;
        this.buf[this.pos++] = END;
        return;
      }
    }
    if (s.indexOf("\0") === -1) {
      this.pos += this.buf.write(s, this.pos, "utf8");
      this.buf[this.pos++] = END;
    } else {
      this.escaped(Buffer.from(s, "utf8"));
    }
  }
  value(v: Value | undefined): void {
    switch (typeof v) {
      case "undefined":
        this.byte(TAG_UNDEFINED);
        return;
      case "bigint":
        this.ensure(9);
        this.buf[this.pos++] = TAG_INT64;
        this.buf.writeBigUInt64BE(BigInt.asUintN(64, v) ^ INT64_FLIP, this.pos);
        this.pos += 8;
        return;
      case "number":
        this.ensure(9);
        this.buf[this.pos++] = TAG_FLOAT64;
        this.buf.writeBigUInt64BE(sortableFloatBits(v), this.pos);
        this.pos += 8;
        return;
      case "boolean":
        this.byte(v ? TAG_TRUE : TAG_FALSE);
        return;
      case "string":
        this.byte(TAG_STRING);
        this.string(v);
        return;
      case "object":
        if (v === null) {
          this.byte(TAG_NULL);
        } else if (v instanceof ArrayBuffer) {
          this.byte(TAG_BYTES);
          this.escaped(new Uint8Array(v));
        } else if (Array.isArray(v)) {
          this.byte(TAG_ARRAY);
          for (const e of v) this.value(e);
          this.byte(END);
        } else {
          this.byte(TAG_OBJECT);
          for (const k of definedKeys(v)) {
            this.byte(TAG_STRING);
            this.string(k);
            this.value(v[k]);
          }
          this.byte(END);
        }
        return;
    }
    throw new TypeError(`not a Convex value: ${typeof v}`);
  }
  finish(): Buffer {
    const out = Buffer.allocUnsafe(this.pos);
    this.buf.copy(out, 0, 0, this.pos);
    return out;
  }
}

// One writer reused by every call (encoding never re-enters itself), so a key
// costs a single exact-size allocation.
let shared = new KeyWriter(256);

/** Encodes a tuple of values (a missing index field is `undefined`). */
export function encodeKey(values: ReadonlyArray<Value | undefined>): Buffer {
  const w = shared;
  w.pos = 0;
  try {
    for (const v of values) w.value(v);
    return w.finish();
  } finally {
    if (w.buf.length > 1 << 16) shared = new KeyWriter(256);
  }
}

/** Decodes a key produced by {@link encodeKey} back into its tuple. */
export function decodeKey(key: Uint8Array): Array<Value | undefined> {
  const r = { pos: 0 };
  const out: Array<Value | undefined> = [];
  while (r.pos < key.length) out.push(readValue(key, r));
  return out;
}

function corrupt(detail: string): never {
  throw new ValueError(`Malformed index key: ${detail}`);
}

function readEscaped(key: Uint8Array, r: { pos: number }): Uint8Array {
  const parts: number[] = [];
  for (;;) {
    if (r.pos >= key.length) corrupt("unterminated string");
    const b = key[r.pos++]!;
    if (b !== END) {
      parts.push(b);
      continue;
    }
    if (key[r.pos] === ESCAPE) {
      parts.push(END);
      r.pos++;
      continue;
    }
    return Uint8Array.from(parts);
  }
}

function readValue(key: Uint8Array, r: { pos: number }): Value | undefined {
  if (r.pos >= key.length) corrupt("truncated");
  const tag = key[r.pos++];
  const view = Buffer.from(key.buffer, key.byteOffset, key.byteLength);
  switch (tag) {
    case TAG_UNDEFINED:
      return undefined;
    case TAG_NULL:
      return null;
    case TAG_INT64: {
      if (r.pos + 8 > key.length) corrupt("truncated int64");
      const v = BigInt.asIntN(64, view.readBigUInt64BE(r.pos) ^ INT64_FLIP);
      r.pos += 8;
      return v;
    }
    case TAG_FLOAT64: {
      if (r.pos + 8 > key.length) corrupt("truncated float64");
      const s = view.readBigUInt64BE(r.pos);
      r.pos += 8;
      const bits = s & INT64_FLIP ? s ^ INT64_FLIP : s ^ ((1n << 64n) - 1n);
      const b = Buffer.allocUnsafe(8);
      b.writeBigUInt64BE(bits);
      return b.readDoubleBE();
    }
    case TAG_FALSE:
      return false;
    case TAG_TRUE:
      return true;
    case TAG_STRING:
      return Buffer.from(readEscaped(key, r)).toString("utf8");
    case TAG_BYTES: {
      const bytes = readEscaped(key, r);
      return bytes.buffer.slice(
        bytes.byteOffset,
        bytes.byteOffset + bytes.byteLength,
      ) as ArrayBuffer;
    }
    case TAG_ARRAY: {
      const out: Value[] = [];
      while (key[r.pos] !== END) {
        const v = readValue(key, r);
        if (v === undefined) corrupt("undefined inside an array");
        out.push(v);
      }
      r.pos++;
      return out;
    }
    case TAG_OBJECT: {
      const out: { [k: string]: Value } = {};
      while (key[r.pos] !== END) {
        if (key[r.pos++] !== TAG_STRING) corrupt("object key is not a string");
        const k = Buffer.from(readEscaped(key, r)).toString("utf8");
        const v = readValue(key, r);
        if (v === undefined) corrupt("undefined object field");
        out[k] = v;
      }
      r.pos++;
      return out;
    }
  }
  return corrupt(`unknown tag ${tag}`);
}

/** Unsigned byte-wise comparison of two keys. */
export function compareKeys(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

/**
 * The exclusive end of the range of keys whose leading values are exactly
 * the tuple encoded in `prefix`: `prefix ++ FF`, or `null` (unbounded) for
 * the empty tuple. A following value starts with a tag byte below `FF`, so
 * every key extending the tuple sorts below it; a string or bytes value that
 * merely extends the last one with NULs continues `00 FF …` and sorts at or
 * above it. (Incrementing the last byte instead would be wrong: `"a"` ends
 * `… 00`, and `"a\0b"` starts with those same bytes.)
 */
export function tuplePrefixEnd(prefix: Uint8Array): Buffer | null {
  if (prefix.length === 0) return null;
  const out = Buffer.allocUnsafe(prefix.length + 1);
  out.set(prefix);
  out[prefix.length] = ESCAPE;
  return out;
}

/** The smallest key greater than `key` itself. */
export function keySuccessor(key: Uint8Array): Buffer {
  const out = Buffer.alloc(key.length + 1);
  out.set(key);
  return out;
}
