/** `atob` and `btoa` (HTML standard, forgiving-base64), with the errors browsers throw. */
import { DOMException } from "./domexception.js";
import { toDOMString } from "./util.js";

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const DECODE = new Int16Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DECODE[ALPHABET.charCodeAt(i)] = i;

/** Base64 of a byte array (standard alphabet, with padding). */
export function bytesToBase64(bytes: Uint8Array): string {
  let out = "";
  let chunk = "";
  const n = bytes.length;
  let i = 0;
  for (; i + 3 <= n; i += 3) {
    const v = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    chunk +=
      ALPHABET[v >> 18]! + ALPHABET[(v >> 12) & 63]! + ALPHABET[(v >> 6) & 63]! + ALPHABET[v & 63]!;
    if (chunk.length >= 4096) {
      out += chunk;
      chunk = "";
    }
  }
  if (i + 1 === n) {
    const v = bytes[i]! << 16;
    chunk += `${ALPHABET[v >> 18]!}${ALPHABET[(v >> 12) & 63]!}==`;
  } else if (i + 2 === n) {
    const v = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
    chunk += `${ALPHABET[v >> 18]!}${ALPHABET[(v >> 12) & 63]!}${ALPHABET[(v >> 6) & 63]!}=`;
  }
  return out + chunk;
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
