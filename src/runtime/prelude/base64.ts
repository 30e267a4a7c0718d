/** `atob` and `btoa` (HTML standard, forgiving-base64), with the errors browsers throw. */
import { DOMException } from "./domexception.js";
import { toDOMString } from "./util.js";

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const DECODE = new Int16Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DECODE[ALPHABET.charCodeAt(i)] = i;

const CODES = new Uint8Array(64);
for (let i = 0; i < 64; i++) CODES[i] = ALPHABET.charCodeAt(i);
const fromCharCode = String.fromCharCode;
const apply = Reflect.apply;
/** Input bytes per piece of output (8,192 characters: a safe argument count for fromCharCode). */
const PIECE = 6144;

/**
 * Base64 of a byte array (standard alphabet, with padding). Built as flat
 * pieces joined once: appending a few characters at a time makes a rope of
 * tiny strings whose nodes take many times the memory of the text (a 4 MiB
 * Blob stored from an action ran its isolate out of memory).
 */
export function bytesToBase64(bytes: Uint8Array): string {
  const n = bytes.length;
  const pieces: string[] = [];
  const out = new Uint8Array((PIECE / 3) * 4);
  for (let start = 0; start < n; start += PIECE) {
    const end = Math.min(n, start + PIECE);
    let o = 0;
    let i = start;
    for (; i + 3 <= end; i += 3) {
      const v = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
      out[o++] = CODES[v >> 18]!;
      out[o++] = CODES[(v >> 12) & 63]!;
      out[o++] = CODES[(v >> 6) & 63]!;
      out[o++] = CODES[v & 63]!;
    }
    if (i + 1 === end) {
      const v = bytes[i]! << 16;
      out[o++] = CODES[v >> 18]!;
      out[o++] = CODES[(v >> 12) & 63]!;
      out[o++] = 61;
      out[o++] = 61;
    } else if (i + 2 === end) {
      const v = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
      out[o++] = CODES[v >> 18]!;
      out[o++] = CODES[(v >> 12) & 63]!;
      out[o++] = CODES[(v >> 6) & 63]!;
      out[o++] = 61;
    }
    pieces[pieces.length] = apply(
      fromCharCode,
      undefined,
      out.subarray(0, o) as unknown as number[],
    );
  }
  if (pieces.length === 1) return pieces[0]!;
  // Pairwise concatenation of flat pieces, then one flattening: no per-character rope nodes.
  let result = "";
  for (let k = 0; k < pieces.length; k++) result += pieces[k];
  return result;
}

/** Forgiving-base64 decode; returns null on failure. */
export function base64ToBytes(input: string): Uint8Array | null {
  // Remove ASCII whitespace.
  let data = /[\t\n\f\r ]/.test(input) ? input.replace(/[\t\n\f\r ]+/g, "") : input;
  if (data.length % 4 === 0) {
    if (data.endsWith("==")) data = data.slice(0, -2);
    else if (data.endsWith("=")) data = data.slice(0, -1);
  }
  if (data.length % 4 === 1) return null;
  const n = data.length;
  const out = new Uint8Array(Math.floor((n * 3) / 4));
  let buffer = 0;
  let bits = 0;
  let o = 0;
  for (let i = 0; i < n; i++) {
    const c = data.charCodeAt(i);
    const v = c < 128 ? DECODE[c]! : -1;
    if (v < 0) return null;
    buffer = (buffer << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (buffer >> bits) & 0xff;
    }
  }
  return o === out.length ? out : out.slice(0, o);
}

export function btoa(data: unknown): string {
  // biome-ignore lint/complexity/noArguments: Web IDL counts the arguments actually passed.
  if (arguments.length === 0) {
    throw new TypeError("Failed to execute 'btoa': 1 argument required, but only 0 present.");
  }
  const s = toDOMString(data);
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw new DOMException("Invalid character", "InvalidCharacterError");
    bytes[i] = c;
  }
  return bytesToBase64(bytes);
}

export function atob(data: unknown): string {
  // biome-ignore lint/complexity/noArguments: Web IDL counts the arguments actually passed.
  if (arguments.length === 0) {
    throw new TypeError("Failed to execute 'atob': 1 argument required, but only 0 present.");
  }
  const s = toDOMString(data);
  // Validate first, telling a bad character from a bad length as browsers and Node do.
  let count = 0;
  let equals = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x09 || c === 0x0a || c === 0x0c || c === 0x0d || c === 0x20) continue;
    if (c === 0x3d) {
      count++;
      equals++;
      if (equals > 2) throw invalidCharacter();
    } else if (c < 128 && DECODE[c]! >= 0) {
      count++;
      if (equals > 0) throw invalidCharacter();
    } else {
      throw invalidCharacter();
    }
  }
  if ((count - equals) % 4 === 1) {
    throw new DOMException(
      "The string to be decoded is not correctly encoded.",
      "InvalidCharacterError",
    );
  }
  // Padding is only allowed when it completes a group of four.
  if (equals > 0 && count % 4 !== 0) throw invalidCharacter();
  const bytes = base64ToBytes(s.replace(/[\t\n\f\r =]+/g, ""))!;
  let out = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    out += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192) as unknown as number[]);
  }
  return out;
}

function invalidCharacter(): DOMException {
  return new DOMException("Invalid character", "InvalidCharacterError");
}
