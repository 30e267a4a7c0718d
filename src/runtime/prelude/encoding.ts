/**
 * `TextEncoder` and `TextDecoder` (Encoding Standard). The encoder is UTF-8
 * only, as the standard says. The decoder supports UTF-8 (with `fatal`,
 * `ignoreBOM` and streaming), UTF-16LE/BE and windows-1252 (which the
 * standard maps "latin1", "ascii" and "iso-8859-1" to).
 */
import { guardWrite, guardWriteBytes } from "./guard.js";
import {
  isBufferSource,
  requireArgs,
  setInterfaceName,
  toDOMString,
  toUSVString,
  viewBytes,
} from "./util.js";

// ---------------------------------------------------------------------------
// UTF-8 encoding
// ---------------------------------------------------------------------------

/** UTF-8 bytes of a string; lone surrogates become U+FFFD (EF BF BD). */
export function utf8Encode(input: string): Uint8Array {
  const n = input.length;
  // Fast path: ASCII only.
  let i = 0;
  for (; i < n; i++) {
    if (input.charCodeAt(i) > 0x7f) break;
  }
  if (i === n) {
    const out = new Uint8Array(n);
    for (let j = 0; j < n; j++) out[j] = input.charCodeAt(j);
    return out;
  }
  const out = new Uint8Array(i + (n - i) * 3);
  for (let j = 0; j < i; j++) out[j] = input.charCodeAt(j);
  const written = encodeFrom(input, i, out, i, out.length).written;
  return out.slice(0, i + written);
}

/**
 * Encodes `input` from code unit `start` into `out` from byte `pos`, stopping
 * before a character that would not fit before `end`.
 */
function encodeFrom(
  input: string,
  start: number,
  out: Uint8Array,
  pos: number,
  end: number,
): { read: number; written: number } {
  const n = input.length;
  let i = start;
  let p = pos;
  while (i < n) {
    let c = input.charCodeAt(i);
    let units = 1;
    if (c >= 0xd800 && c <= 0xdfff) {
      if (c <= 0xdbff && i + 1 < n) {
        const d = input.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          units = 2;
        } else {
          c = 0xfffd;
        }
      } else {
        c = 0xfffd;
      }
    }
    if (c < 0x80) {
      if (p + 1 > end) break;
      out[p++] = c;
    } else if (c < 0x800) {
      if (p + 2 > end) break;
      out[p++] = 0xc0 | (c >> 6);
      out[p++] = 0x80 | (c & 0x3f);
    } else if (c < 0x10000) {
      if (p + 3 > end) break;
      out[p++] = 0xe0 | (c >> 12);
      out[p++] = 0x80 | ((c >> 6) & 0x3f);
      out[p++] = 0x80 | (c & 0x3f);
    } else {
      if (p + 4 > end) break;
      out[p++] = 0xf0 | (c >> 18);
      out[p++] = 0x80 | ((c >> 12) & 0x3f);
      out[p++] = 0x80 | ((c >> 6) & 0x3f);
      out[p++] = 0x80 | (c & 0x3f);
    }
    i += units;
  }
  return { read: i - start, written: p - pos };
}

export class TextEncoder {
  get encoding(): string {
    return "utf-8";
  }

  encode(input: unknown = ""): Uint8Array {
    return utf8Encode(toUSVString(input));
  }

  encodeInto(source: unknown, destination: Uint8Array): { read: number; written: number } {
    // biome-ignore lint/complexity/noArguments: Web IDL counts the arguments actually passed.
    requireArgs(arguments.length, 2, "Failed to execute 'encodeInto' on 'TextEncoder'");
    if (!(destination instanceof Uint8Array)) {
      throw new TypeError(
        "Failed to execute 'encodeInto' on 'TextEncoder': parameter 2 is not of type 'Uint8Array'.",
      );
    }
    guardWriteBytes(destination, "TextEncoder.prototype.encodeInto");
    return encodeFrom(toDOMString(source), 0, destination, 0, destination.length);
  }
}
setInterfaceName(TextEncoder, "TextEncoder");

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/** Builds a string from UTF-16 code units, in chunks so apply() never gets too many arguments. */
function fromCodeUnits(units: Uint16Array | number[], length: number): string {
  if (length <= 8192) {
    return String.fromCharCode.apply(
      null,
      (units instanceof Uint16Array ? units.subarray(0, length) : units.slice(0, length)) as never,
    );
  }
  let s = "";
  for (let i = 0; i < length; i += 8192) {
    const end = Math.min(length, i + 8192);
    s += String.fromCharCode.apply(
      null,
      (units instanceof Uint16Array ? units.subarray(i, end) : units.slice(i, end)) as never,
    );
  }
  return s;
}

interface Decoder {
  /** Decodes `bytes`; `flush` is true when no more input follows (end of a non-streaming call). Returns null on a fatal error. */
  decode(bytes: Uint8Array, flush: boolean, fatal: boolean): string | null;
  reset(): void;
}

/** The Encoding Standard's UTF-8 decoder, streaming. */
class Utf8Decoder implements Decoder {
  private codePoint = 0;
  private bytesSeen = 0;
  private bytesNeeded = 0;
  private lower = 0x80;
  private upper = 0xbf;

  reset(): void {
    this.codePoint = 0;
    this.bytesSeen = 0;
    this.bytesNeeded = 0;
    this.lower = 0x80;
    this.upper = 0xbf;
  }

  decode(bytes: Uint8Array, flush: boolean, fatal: boolean): string | null {
    const n = bytes.length;
    // At most one code unit per byte, plus U+FFFDs for sequences left pending
    // by the previous call and by this one.
    const out = new Uint16Array(n + 2);
    let o = 0;
    let i = 0;
    while (i < n) {
      const byte = bytes[i]!;
      if (this.bytesNeeded === 0) {
        if (byte <= 0x7f) {
          out[o++] = byte;
          i++;
          continue;
        }
        if (byte >= 0xc2 && byte <= 0xdf) {
          this.bytesNeeded = 1;
          this.codePoint = byte & 0x1f;
        } else if (byte >= 0xe0 && byte <= 0xef) {
          if (byte === 0xe0) this.lower = 0xa0;
          if (byte === 0xed) this.upper = 0x9f;
          this.bytesNeeded = 2;
          this.codePoint = byte & 0xf;
        } else if (byte >= 0xf0 && byte <= 0xf4) {
          if (byte === 0xf0) this.lower = 0x90;
          if (byte === 0xf4) this.upper = 0x8f;
          this.bytesNeeded = 3;
          this.codePoint = byte & 0x7;
        } else {
          if (fatal) return null;
          out[o++] = 0xfffd;
        }
        i++;
        continue;
      }
      if (byte < this.lower || byte > this.upper) {
        // Error: emit U+FFFD and reprocess this byte ("prepend" in the standard).
        this.codePoint = 0;
        this.bytesNeeded = 0;
        this.bytesSeen = 0;
        this.lower = 0x80;
        this.upper = 0xbf;
        if (fatal) return null;
        out[o++] = 0xfffd;
        continue;
      }
      this.lower = 0x80;
      this.upper = 0xbf;
      this.codePoint = (this.codePoint << 6) | (byte & 0x3f);
      this.bytesSeen++;
      i++;
      if (this.bytesSeen !== this.bytesNeeded) continue;
      const cp = this.codePoint;
      this.codePoint = 0;
      this.bytesNeeded = 0;
      this.bytesSeen = 0;
      if (cp >= 0x10000) {
        out[o++] = 0xd800 + ((cp - 0x10000) >> 10);
        out[o++] = 0xdc00 + ((cp - 0x10000) & 0x3ff);
      } else {
        out[o++] = cp;
      }
    }
    if (flush && this.bytesNeeded !== 0) {
      this.reset();
      if (fatal) return null;
      out[o++] = 0xfffd;
    }
    return fromCodeUnits(out, o);
  }
}

/** UTF-16 decoder (little or big endian), streaming. */
class Utf16Decoder implements Decoder {
  private leadByte = -1;
  private leadSurrogate = -1;

  constructor(private readonly bigEndian: boolean) {}

  reset(): void {
    this.leadByte = -1;
    this.leadSurrogate = -1;
  }

  decode(bytes: Uint8Array, flush: boolean, fatal: boolean): string | null {
    const out: number[] = [];
    for (let i = 0; i < bytes.length; i++) {
      const byte = bytes[i]!;
      if (this.leadByte === -1) {
        this.leadByte = byte;
        continue;
      }
      const unit = this.bigEndian ? (this.leadByte << 8) | byte : (byte << 8) | this.leadByte;
      this.leadByte = -1;
      if (this.leadSurrogate !== -1) {
        const lead = this.leadSurrogate;
        this.leadSurrogate = -1;
        if (unit >= 0xdc00 && unit <= 0xdfff) {
          out.push(lead, unit);
          continue;
        }
        if (fatal) return null;
        out.push(0xfffd);
        // Reprocess `unit` below.
      }
      if (unit >= 0xd800 && unit <= 0xdbff) {
        this.leadSurrogate = unit;
        continue;
      }
      if (unit >= 0xdc00 && unit <= 0xdfff) {
        if (fatal) return null;
        out.push(0xfffd);
        continue;
      }
      out.push(unit);
    }
    if (flush && (this.leadByte !== -1 || this.leadSurrogate !== -1)) {
      this.reset();
      if (fatal) return null;
      out.push(0xfffd);
    }
    return fromCodeUnits(out, out.length);
  }
}

/** windows-1252: bytes 0x80–0x9F map to the characters below, the rest to the same code point. */
const WINDOWS_1252_HIGH = [
  0x20ac, 0x81, 0x201a, 0x192, 0x201e, 0x2026, 0x2020, 0x2021, 0x2c6, 0x2030, 0x160, 0x2039, 0x152,
  0x8d, 0x17d, 0x8f, 0x90, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014, 0x2dc, 0x2122,
  0x161, 0x203a, 0x153, 0x9d, 0x17e, 0x178,
];

class Windows1252Decoder implements Decoder {
  reset(): void {}

  decode(bytes: Uint8Array): string {
    const out = new Uint16Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i]!;
      out[i] = b >= 0x80 && b <= 0x9f ? WINDOWS_1252_HIGH[b - 0x80]! : b;
    }
    return fromCodeUnits(out, out.length);
  }
}

const LABELS: Record<string, string> = {};
function addLabels(name: string, labels: string[]): void {
  for (const label of labels) LABELS[label] = name;
}
addLabels("utf-8", [
  "unicode-1-1-utf-8",
  "unicode11utf8",
  "unicode20utf8",
  "utf-8",
  "utf8",
  "x-unicode20utf8",
]);
addLabels("utf-16le", [
  "csunicode",
  "iso-10646-ucs-2",
  "ucs-2",
  "unicode",
  "unicodefeff",
  "utf-16",
  "utf-16le",
]);
addLabels("utf-16be", ["unicodefffe", "utf-16be"]);
addLabels("windows-1252", [
  "ansi_x3.4-1968",
  "ascii",
  "cp1252",
  "cp819",
  "csisolatin1",
  "ibm819",
  "iso-8859-1",
  "iso-ir-100",
  "iso8859-1",
  "iso88591",
  "iso_8859-1",
  "iso_8859-1:1987",
  "l1",
  "latin1",
  "us-ascii",
  "windows-1252",
  "x-cp1252",
]);

function makeDecoder(encoding: string): Decoder {
  switch (encoding) {
    case "utf-8":
      return new Utf8Decoder();
    case "utf-16le":
      return new Utf16Decoder(false);
    case "utf-16be":
      return new Utf16Decoder(true);
    default:
      return new Windows1252Decoder();
  }
}

interface DecoderState {
  encoding: string;
  fatal: boolean;
  ignoreBOM: boolean;
  decoder: Decoder;
  /** Whether the BOM check is still to be done for the current stream. */
  bomPending: boolean;
  /** Bytes of a possible BOM held back until enough are seen. */
  bomBuffer: number[];
  streaming: boolean;
}

const decoderState = new WeakMap<object, DecoderState>();

function stateOf(self: unknown): DecoderState {
  const s = typeof self === "object" && self !== null ? decoderState.get(self) : undefined;
  if (s === undefined) throw new TypeError("Illegal invocation");
  return s;
}

function bomFor(encoding: string): number[] | undefined {
  switch (encoding) {
    case "utf-8":
      return [0xef, 0xbb, 0xbf];
    case "utf-16le":
      return [0xff, 0xfe];
    case "utf-16be":
      return [0xfe, 0xff];
    default:
      return undefined;
  }
}

export class TextDecoder {
  constructor(label: unknown = "utf-8", options: unknown = {}) {
    const key = toDOMString(label)
      .replace(/^[\t\n\f\r ]+|[\t\n\f\r ]+$/g, "")
      .toLowerCase();
    const encoding = LABELS[key];
    if (encoding === undefined) {
      throw new RangeError(`The "${toDOMString(label)}" encoding is not supported`);
    }
    const opts = (options ?? {}) as { fatal?: unknown; ignoreBOM?: unknown };
    if (typeof opts !== "object" && typeof opts !== "function") {
      throw new TypeError('The "options" argument must be of type object.');
    }
    decoderState.set(this, {
      encoding,
      fatal: Boolean(opts.fatal),
      ignoreBOM: Boolean(opts.ignoreBOM),
      decoder: makeDecoder(encoding),
      bomPending: true,
      bomBuffer: [],
      streaming: false,
    });
  }

  get encoding(): string {
    return stateOf(this).encoding;
  }

  get fatal(): boolean {
    return stateOf(this).fatal;
  }

  get ignoreBOM(): boolean {
    return stateOf(this).ignoreBOM;
  }

  decode(input?: unknown, options: unknown = {}): string {
    const s = stateOf(this);
    let bytes: Uint8Array;
    if (input === undefined || input === null) {
      if (input === null) {
        throw new TypeError(
          "Failed to execute 'decode' on 'TextDecoder': parameter 1 is not of type 'ArrayBuffer'.",
        );
      }
      bytes = new Uint8Array(0);
    } else if (isBufferSource(input)) {
      bytes = viewBytes(input)!;
    } else {
      throw new TypeError(
        'The "input" argument must be an instance of ArrayBuffer or ArrayBufferView.',
      );
    }
    const stream = Boolean((options as { stream?: unknown } | null)?.stream);
    // Only streaming leaves state behind (a complete decode starts and ends reset).
    if (stream || s.streaming) guardWrite(this, "a streaming TextDecoder");
    if (!s.streaming) {
      s.decoder.reset();
      s.bomPending = true;
      s.bomBuffer = [];
    }
    s.streaming = stream;

    const bom = s.ignoreBOM ? undefined : bomFor(s.encoding);
    if (s.bomPending && bom !== undefined) {
      // Collect enough bytes to tell whether the stream starts with a BOM.
      const held = s.bomBuffer.concat();
      let used = 0;
      while (held.length < bom.length && used < bytes.length) held.push(bytes[used++]!);
      if (held.length < bom.length) {
        const isPrefix = held.every((b, k) => b === bom[k]);
        if (isPrefix && stream) {
          s.bomBuffer = held;
          return "";
        }
      }
      s.bomPending = false;
      s.bomBuffer = [];
      const hasBom = held.length === bom.length && held.every((b, k) => b === bom[k]);
      const prefix = hasBom ? [] : held;
      const rest = bytes.subarray(used);
      bytes = prefix.length === 0 ? rest : concat(prefix, rest);
    } else {
      s.bomPending = false;
    }

    const out = s.decoder.decode(bytes, !stream, s.fatal);
    if (out === null) {
      s.decoder.reset();
      s.streaming = false;
      throw new TypeError(`The encoded data was not valid for encoding ${s.encoding}`);
    }
    return out;
  }
}
setInterfaceName(TextDecoder, "TextDecoder");

function concat(prefix: number[], rest: Uint8Array): Uint8Array {
  const out = new Uint8Array(prefix.length + rest.length);
  out.set(prefix, 0);
  out.set(rest, prefix.length);
  return out;
}

const sharedDecoder = new Utf8Decoder();

/** Decodes UTF-8 with replacement characters, without BOM handling. */
export function utf8DecodeLossy(bytes: Uint8Array): string {
  sharedDecoder.reset();
  return sharedDecoder.decode(bytes, true, false)!;
}

/** Decodes UTF-8 the way `Body.text()` does: strips a leading BOM, replaces errors. */
export function utf8DecodeBody(bytes: Uint8Array): string {
  const start = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  return utf8DecodeLossy(start === 0 ? bytes : bytes.subarray(3));
}
