/**
 * `crypto`: `getRandomValues` and `randomUUID` draw from the execution's
 * seeded generator (env.ts), so queries and mutations stay deterministic;
 * `crypto.subtle.digest` computes SHA-1/SHA-256/SHA-384/SHA-512 with
 * @noble/hashes. The rest of SubtleCrypto is not supported yet.
 */
import type * as Legacy from "@noble/hashes/legacy.js";
import type * as Sha2 from "@noble/hashes/sha2.js";
import { DOMException } from "./domexception.js";
import { rng } from "./env.js";
import { guardInternals, guardWriteBytes } from "./guard.js";
import { copyBytes, requireArgs, setInterfaceName, toArrayBuffer, typedArrayName } from "./util.js";

const INTEGER_ARRAYS = new Set([
  "Int8Array",
  "Uint8Array",
  "Uint8ClampedArray",
  "Int16Array",
  "Uint16Array",
  "Int32Array",
  "Uint32Array",
  "BigInt64Array",
  "BigUint64Array",
]);

const HASH_NAMES = ["SHA-1", "SHA-256", "SHA-384", "SHA-512"];

/**
 * The hash function for a normalized name. @noble/hashes is loaded on first
 * use (require() is bundled lazily by esbuild, and build.ts prebundles these
 * two modules): its SHA-512 tables cost time in every fresh context otherwise.
 */
function hashFunction(name: string): (data: Uint8Array) => Uint8Array {
  if (name === "SHA-1") return (require("@noble/hashes/legacy.js") as typeof Legacy).sha1;
  const sha2 = require("@noble/hashes/sha2.js") as typeof Sha2;
  return name === "SHA-256" ? sha2.sha256 : name === "SHA-384" ? sha2.sha384 : sha2.sha512;
}

function normalizeAlgorithmName(algorithm: unknown): string {
  let name: unknown = algorithm;
  if (typeof algorithm === "object" && algorithm !== null) {
    name = (algorithm as { name?: unknown }).name;
    if (name === undefined) {
      throw new TypeError("Algorithm: name: Missing or not a string");
    }
  }
  const str = String(name);
  for (const key of HASH_NAMES) {
    if (key.toLowerCase() === str.toLowerCase()) return key;
  }
  throw new DOMException("Unrecognized algorithm name", "NotSupportedError");
}

let constructing = false;

export class SubtleCrypto {
  constructor() {
    if (!constructing) throw new TypeError("Illegal constructor");
  }

  digest(algorithm: unknown, data: unknown): Promise<ArrayBuffer> {
    try {
      // biome-ignore lint/complexity/noArguments: Web IDL counts the arguments actually passed.
      requireArgs(arguments.length, 2, "Failed to execute 'digest' on 'SubtleCrypto'");
      const name = normalizeAlgorithmName(algorithm);
      const bytes = copyBytes(data, "Failed to execute 'digest' on 'SubtleCrypto': parameter 2");
      return Promise.resolve(toArrayBuffer(hashFunction(name)(bytes)));
    } catch (err) {
      return Promise.reject(err);
    }
  }
}
setInterfaceName(SubtleCrypto, "SubtleCrypto");

for (const name of [
  "encrypt",
  "decrypt",
  "sign",
  "verify",
  "generateKey",
  "deriveKey",
  "deriveBits",
  "importKey",
  "exportKey",
  "wrapKey",
  "unwrapKey",
]) {
  const method = {
    [name]() {
      throw new Error(`not supported yet: crypto.subtle.${name}`);
    },
  }[name]!;
  Object.defineProperty(SubtleCrypto.prototype, name, {
    value: method,
    writable: true,
    enumerable: true,
    configurable: true,
  });
}

let cryptoInternals: (o: object) => unknown[] = () => [];

export class Crypto {
  readonly #subtle: SubtleCrypto;

  constructor() {
    if (!constructing) throw new TypeError("Illegal constructor");
    this.#subtle = new SubtleCrypto();
  }

  get subtle(): SubtleCrypto {
    return this.#subtle;
  }

  static {
    // For registration (guard.ts): what a Crypto holds.
    cryptoInternals = (o) => (#subtle in o ? [o.#subtle] : []);
  }

  getRandomValues<T extends ArrayBufferView>(array: T): T {
    // biome-ignore lint/complexity/noArguments: Web IDL counts the arguments actually passed.
    if (arguments.length === 0) {
      throw new TypeError(
        "Failed to execute 'getRandomValues' on 'Crypto': 1 argument required, but only 0 present.",
      );
    }
    const name = typedArrayName(array);
    if (name === undefined || !INTEGER_ARRAYS.has(name)) {
      throw new DOMException(
        "The data argument must be an integer-type TypedArray",
        "TypeMismatchError",
      );
    }
    if (array.byteLength > 65536) {
      throw new DOMException(
        `The ArrayBufferView's byte length (${array.byteLength}) exceeds the number of bytes of entropy available via this API (65536).`,
        "QuotaExceededError",
      );
    }
    guardWriteBytes(array, "crypto.getRandomValues");
    rng().fill(new Uint8Array(array.buffer, array.byteOffset, array.byteLength));
    return array;
  }

  randomUUID(): string {
    const bytes = new Uint8Array(16);
    rng().fill(bytes);
    bytes[6] = (bytes[6]! & 0x0f) | 0x40;
    bytes[8] = (bytes[8]! & 0x3f) | 0x80;
    let hex = "";
    for (let i = 0; i < 16; i++) {
      hex += bytes[i]!.toString(16).padStart(2, "0");
      if (i === 3 || i === 5 || i === 7 || i === 9) hex += "-";
    }
    return hex;
  }
}
setInterfaceName(Crypto, "Crypto");
guardInternals(Crypto.prototype, (o) => cryptoInternals(o));

/** The single `crypto` object (its classes cannot be constructed by user code). */
export function createCrypto(): Crypto {
  constructing = true;
  try {
    return new Crypto();
  } finally {
    constructing = false;
  }
}
