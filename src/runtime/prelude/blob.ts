/**
 * `Blob` and `File` (File API standard), held in memory as one byte array.
 * `stream()` gives a byte stream over a copy of it, in chunks of 64 KiB.
 */

import { base64ToBytes, bytesToBase64 } from "./base64.js";
import { utf8DecodeLossy, utf8Encode } from "./encoding.js";
import { now } from "./env.js";
import { blobBridge } from "./timers.js";
import {
  cloneHooks,
  inspectCustom,
  requireArgs,
  setInterfaceName,
  streams,
  toArrayBuffer,
  toUSVString,
  viewBytes,
} from "./util.js";

interface BlobData {
  bytes: Uint8Array;
  type: string;
}

const blobData = new WeakMap<object, BlobData>();

function data(self: unknown): BlobData {
  const d = typeof self === "object" && self !== null ? blobData.get(self) : undefined;
  if (d === undefined) throw new TypeError("Illegal invocation");
  return d;
}

/** The bytes of a Blob (no copy; callers must not modify them). */
export function blobBytes(blob: Blob): Uint8Array {
  return data(blob).bytes;
}

export function isBlob(value: unknown): value is Blob {
  return typeof value === "object" && value !== null && blobData.has(value);
}

/** A Blob over `bytes` without copying them. */
export function makeBlob(bytes: Uint8Array, type: string): Blob {
  const blob = Object.create(Blob.prototype) as Blob;
  blobData.set(blob, { bytes, type });
  return blob;
}

function normalizeType(type: unknown): string {
  const t = type === undefined ? "" : toUSVString(type);
  for (let i = 0; i < t.length; i++) {
    const c = t.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return "";
  }
  return t.toLowerCase();
}

function partsToBytes(parts: unknown, endings: string): Uint8Array {
  if (parts === undefined) return new Uint8Array(0);
  if (
    typeof parts !== "object" ||
    parts === null ||
    typeof (parts as { [Symbol.iterator]?: unknown })[Symbol.iterator] !== "function"
  ) {
    throw new TypeError(
      "Failed to construct 'Blob': The provided value cannot be converted to a sequence.",
    );
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (const part of parts as Iterable<unknown>) {
    let bytes: Uint8Array;
    const view = viewBytes(part);
    if (view !== undefined) {
      bytes = view.slice();
    } else if (isBlob(part)) {
      bytes = data(part).bytes;
    } else {
      let s = toUSVString(part);
      if (endings === "native") s = s.replace(/\r\n|\r/g, "\n");
      bytes = utf8Encode(s);
    }
    chunks.push(bytes);
    total += bytes.length;
  }
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

function readOptions(options: unknown): { type: unknown; endings: string } {
  if (options === undefined || options === null) return { type: undefined, endings: "transparent" };
  if (typeof options !== "object" && typeof options !== "function") {
    throw new TypeError(
      "Failed to construct 'Blob': The provided value is not of type 'BlobPropertyBag'.",
    );
  }
  const o = options as { type?: unknown; endings?: unknown };
  const endings = o.endings === undefined ? "transparent" : String(o.endings);
  if (endings !== "transparent" && endings !== "native") {
    throw new TypeError(
      `Failed to construct 'Blob': The provided value '${endings}' is not a valid enum value of type EndingType.`,
    );
  }
  return { type: o.type, endings };
}

function relativeIndex(value: unknown, size: number, fallback: number): number {
  if (value === undefined) return fallback;
  let n = Math.trunc(Number(value));
  if (Number.isNaN(n)) n = 0;
  return n < 0 ? Math.max(size + n, 0) : Math.min(n, size);
}

export class Blob {
  constructor(blobParts?: unknown, options?: unknown) {
    const { type, endings } = readOptions(options);
    blobData.set(this, { bytes: partsToBytes(blobParts, endings), type: normalizeType(type) });
  }

  get size(): number {
    return data(this).bytes.length;
  }

  get type(): string {
    return data(this).type;
  }

  slice(start?: unknown, end?: unknown, contentType?: unknown): Blob {
    const d = data(this);
    const size = d.bytes.length;
    const from = relativeIndex(start, size, 0);
    const to = relativeIndex(end, size, size);
    const span = Math.max(to - from, 0);
    return makeBlob(d.bytes.subarray(from, from + span), normalizeType(contentType));
  }

  text(): Promise<string> {
    try {
      return Promise.resolve(utf8DecodeLossy(data(this).bytes));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  arrayBuffer(): Promise<ArrayBuffer> {
    try {
      return Promise.resolve(toArrayBuffer(data(this).bytes));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  bytes(): Promise<Uint8Array> {
    try {
      return Promise.resolve(data(this).bytes.slice());
    } catch (err) {
      return Promise.reject(err);
    }
  }

  stream(): unknown {
    const d = data(this);
    return streams().fromBytes(d.bytes);
  }

  [inspectCustom](depth: number, options: unknown, inspect: (v: unknown, o: unknown) => string) {
    const d = data(this);
    const fields: Record<string, unknown> = { size: d.bytes.length, type: d.type };
    if (this instanceof File) {
      fields.name = this.name;
      fields.lastModified = this.lastModified;
    }
    return `${this instanceof File ? "File" : "Blob"} ${inspect(fields, { ...(options as object), depth })}`;
  }
}
setInterfaceName(Blob, "Blob");

interface FileData {
  name: string;
  lastModified: number;
}

const fileData = new WeakMap<object, FileData>();

function fdata(self: unknown): FileData {
  const d = typeof self === "object" && self !== null ? fileData.get(self) : undefined;
  if (d === undefined) throw new TypeError("Illegal invocation");
  return d;
}

export class File extends Blob {
  constructor(fileBits: unknown, fileName: unknown, options?: unknown) {
    // biome-ignore lint/complexity/noArguments: Web IDL counts the arguments actually passed.
    requireArgs(arguments.length, 2, "Failed to construct 'File'");
    super(fileBits, options);
    const lastModified = (options as { lastModified?: unknown } | null | undefined)?.lastModified;
    fileData.set(this, {
      name: toUSVString(fileName),
      lastModified: lastModified === undefined ? now() : Math.trunc(Number(lastModified)) || 0,
    });
  }

  get name(): string {
    return fdata(this).name;
  }

  get lastModified(): number {
    return fdata(this).lastModified;
  }

  get webkitRelativePath(): string {
    fdata(this);
    return "";
  }
}
setInterfaceName(File, "File");

/** A File over `bytes` without copying them. */
export function makeFile(
  bytes: Uint8Array,
  name: string,
  type: string,
  lastModified: number,
): File {
  const file = Object.create(File.prototype) as File;
  blobData.set(file, { bytes, type });
  fileData.set(file, { name, lastModified });
  return file;
}

cloneHooks.cloneable.push({
  test: (v) => blobData.has(v),
  clone: (v) => {
    const d = data(v);
    if (fileData.has(v)) {
      const f = fdata(v);
      return makeFile(d.bytes, f.name, d.type, f.lastModified);
    }
    return makeBlob(d.bytes, d.type);
  },
});

blobBridge.toHost = (blob) => {
  if (!isBlob(blob))
    throw new TypeError(
      "store() expects a Blob. If you are trying to store a Request, `await request.blob()` will give you the correct input.",
    );
  const d = data(blob);
  return { base64: bytesToBase64(d.bytes), type: d.type };
};
blobBridge.fromHost = (base64, type) => makeBlob(base64ToBytes(base64) ?? new Uint8Array(0), type);
