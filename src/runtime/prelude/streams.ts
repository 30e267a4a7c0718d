/**
 * Web Streams (WHATWG Streams Standard). `ReadableStream` (default and byte
 * streams; default and BYOB readers; `tee`, `pipeTo`, `pipeThrough`, async
 * iteration, `ReadableStream.from`), `WritableStream`, `TransformStream`, their
 * readers, writers and controllers and the two queuing strategies come from
 * web-streams-polyfill (see README.md, "Libraries"); `TextEncoderStream` and
 * `TextDecoderStream` are written here over the prelude's encoding.
 *
 * Evaluated on first use of one of those globals, or when a body or a Blob
 * needs a stream (fetch.ts, blob.ts reach it through `streamHooks`).
 *
 * Context reuse (guard.ts): the polyfill keeps a stream's state in plain
 * properties it assigns itself, which the guard does not see. So every
 * method and accessor of these classes checks its receiver first: using a
 * stream (reader, controller, …) that existed before the execution began
 * taints the context, and streams made during an execution are free to use.
 */
import {
  ByteLengthQueuingStrategy,
  CountQueuingStrategy,
  ReadableByteStreamController,
  ReadableStream,
  ReadableStreamBYOBReader,
  ReadableStreamBYOBRequest,
  ReadableStreamDefaultController,
  ReadableStreamDefaultReader,
  TransformStream,
  TransformStreamDefaultController,
  WritableStream,
  WritableStreamDefaultController,
  WritableStreamDefaultWriter,
} from "web-streams-polyfill";
import { utf8Encode } from "./encoding.js";
import { guardWrite } from "./guard.js";
import {
  concatBytes,
  inspectCustom,
  preludeGlobal,
  setInterfaceName,
  streamHooks,
  toDOMString,
  typedArrayName,
  viewBytes,
} from "./util.js";

const ReflectApply = Reflect.apply;
const ReflectDefineProperty = Reflect.defineProperty;
const ReflectGetOwnPropertyDescriptor = Reflect.getOwnPropertyDescriptor;
const ReflectOwnKeys = Reflect.ownKeys;

type AnyFunction = (this: unknown, ...args: unknown[]) => unknown;

interface Reader {
  read(): Promise<{ done: boolean; value?: unknown }>;
  cancel(reason?: unknown): Promise<void>;
  releaseLock(): void;
}

// ---------------------------------------------------------------------------
// The classes as globals: guarded, named, inspectable
// ---------------------------------------------------------------------------

/**
 * Replaces each method and accessor of `ctor.prototype` by one that first
 * tells the guard its receiver is about to change (see the module comment).
 * Names and lengths are kept; a function found twice (`values` and
 * `Symbol.asyncIterator`) gets one wrapper.
 */
function guardPrototype(ctor: { prototype: object }, what: string): void {
  const target = ctor.prototype;
  const wrappers = new Map<AnyFunction, AnyFunction>();
  const wrap = (f: AnyFunction): AnyFunction => {
    let w = wrappers.get(f);
    if (w === undefined) {
      const inner = f;
      w = {
        [f.name](this: unknown, ...args: unknown[]) {
          guardWrite(this, what);
          return ReflectApply(inner, this, args);
        },
      }[f.name]!;
      ReflectDefineProperty(w, "length", { value: f.length, configurable: true });
      wrappers.set(f, w);
    }
    return w;
  };
  for (const key of ReflectOwnKeys(target)) {
    if (key === "constructor") continue;
    const d = ReflectGetOwnPropertyDescriptor(target, key)!;
    if (typeof d.value === "function") d.value = wrap(d.value as AnyFunction);
    else if (d.get !== undefined || d.set !== undefined) {
      if (d.get !== undefined) d.get = wrap(d.get as AnyFunction);
      if (d.set !== undefined) d.set = wrap(d.set as AnyFunction);
    } else continue;
    ReflectDefineProperty(target, key, d);
  }
}

/** `locked` of ReadableStream as the polyfill defines it: a pure read, for brand checks (no guard). */
const lockedGetter = ReflectGetOwnPropertyDescriptor(ReadableStream.prototype, "locked")!
  .get as AnyFunction;

/** The polyfill's classes, in the order of the global object. */
const POLYFILL_GLOBALS: Record<string, { prototype: object; name: string }> = {
  ReadableStream,
  ReadableStreamDefaultReader,
  ReadableStreamBYOBReader,
  ReadableStreamBYOBRequest,
  ReadableByteStreamController,
  ReadableStreamDefaultController,
  TransformStream,
  TransformStreamDefaultController,
  WritableStream,
  WritableStreamDefaultWriter,
  WritableStreamDefaultController,
  ByteLengthQueuingStrategy,
  CountQueuingStrategy,
} as never;

for (const name in POLYFILL_GLOBALS) {
  const ctor = POLYFILL_GLOBALS[name]!;
  guardPrototype(ctor, `a ${name} made before this execution`);
  setInterfaceName(ctor, name);
}

// The methods the bodies use, taken now (user code may replace them on the
// prototypes later): the guarded ones, so that reading a stream made before
// the execution through a body taints as reading it directly does.
const proto = ReadableStream.prototype as unknown as Record<string, AnyFunction>;
const originalGetReader = proto.getReader!;
const originalTee = proto.tee!;
const originalCancel = proto.cancel!;
const readerProto = ReadableStreamDefaultReader.prototype as unknown as Record<string, AnyFunction>;
const originalRead = readerProto.read!;
const originalReaderCancel = readerProto.cancel!;
const originalReleaseLock = readerProto.releaseLock!;

/** True when `value` is a ReadableStream of this realm (a brand check, not instanceof). */
function isReadableStream(value: unknown): boolean {
  if (typeof value !== "object" || value === null) return false;
  try {
    ReflectApply(lockedGetter, value, []);
    return true;
  } catch {
    return false;
  }
}

function isLocked(stream: unknown): boolean {
  return ReflectApply(lockedGetter, stream, []) as boolean;
}

/** The Streams Standard's IsReadableStreamDisturbed: read from or cancelled (the polyfill's own slot). */
function isDisturbed(stream: unknown): boolean {
  return (stream as { _disturbed?: boolean })._disturbed === true;
}

function readerOf(stream: unknown): Reader {
  const reader = ReflectApply(originalGetReader, stream, []) as object;
  return {
    read: () =>
      ReflectApply(originalRead, reader, []) as Promise<{ done: boolean; value?: unknown }>,
    cancel: (reason) => ReflectApply(originalReaderCancel, reader, [reason]) as Promise<void>,
    releaseLock: () => {
      ReflectApply(originalReleaseLock, reader, []);
    },
  };
}

/** Bytes of a chunk a body stream produced: a Uint8Array, or a TypeError (the Fetch standard's rule). */
function chunkBytes(chunk: unknown): Uint8Array {
  if (typedArrayName(chunk) !== "Uint8Array") {
    throw new TypeError(
      "Received non-Uint8Array chunk: a body stream must produce Uint8Array chunks",
    );
  }
  return chunk as Uint8Array;
}

/** Reads a body stream to its end (the Fetch standard's "fully read"). */
async function readAll(stream: unknown): Promise<Uint8Array> {
  const reader = readerOf(stream);
  const parts: Uint8Array[] = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    let bytes: Uint8Array;
    try {
      bytes = chunkBytes(value);
    } catch (e) {
      void reader.cancel(e).catch(() => {});
      throw e;
    }
    parts[parts.length] = bytes;
  }
  return parts.length === 1 ? parts[0]! : concatBytes(parts);
}

/** Largest chunk a stream over bytes in memory produces (as Node's Blob#stream). */
const CHUNK = 65536;

/** A byte stream over `bytes`, read in copies of at most 64 KiB (the bytes stay unshared). */
function fromBytes(bytes: Uint8Array): unknown {
  let offset = 0;
  return new ReadableStream({
    type: "bytes",
    pull(controller: ReadableByteStreamController) {
      if (offset < bytes.length) {
        const end = Math.min(bytes.length, offset + CHUNK);
        controller.enqueue(bytes.slice(offset, end));
        offset = end;
      }
      if (offset >= bytes.length) controller.close();
    },
  } as never);
}

/**
 * A byte stream whose chunks come from the host, one `read()` per pull (so
 * the host reads its source only as fast as the stream is read).
 */
function fromHost(
  read: () => Promise<Uint8Array | null>,
  cancel: (reason: unknown) => void,
): unknown {
  return new ReadableStream({
    type: "bytes",
    async pull(controller: ReadableByteStreamController) {
      for (;;) {
        const chunk = await read();
        if (chunk === null) {
          controller.close();
          // A pending BYOB read is answered with an empty view once closed.
          controller.byobRequest?.respond(0);
          return;
        }
        if (chunk.length > 0) {
          controller.enqueue(chunk);
          return;
        }
      }
    },
    cancel(reason: unknown) {
      cancel(reason);
    },
  } as never);
}

streamHooks.isReadableStream = isReadableStream;
streamHooks.isLocked = isLocked;
streamHooks.isDisturbed = isDisturbed;
streamHooks.readAll = readAll;
streamHooks.fromBytes = fromBytes;
streamHooks.fromHost = fromHost;
streamHooks.reader = readerOf;
streamHooks.tee = (stream) => ReflectApply(originalTee, stream, []) as [unknown, unknown];
streamHooks.cancel = (stream, reason) => ReflectApply(originalCancel, stream, [reason]) as never;
streamHooks.chunkBytes = chunkBytes;

// ---------------------------------------------------------------------------
// TextEncoderStream, TextDecoderStream (Encoding standard)
// ---------------------------------------------------------------------------

interface Pair {
  readable: unknown;
  writable: unknown;
}

const encoderStreams = new WeakMap<object, Pair>();
const decoderStreams = new WeakMap<object, Pair & { decoder: Decoder }>();

interface Decoder {
  encoding: string;
  fatal: boolean;
  ignoreBOM: boolean;
  decode(input?: unknown, options?: { stream?: boolean }): string;
}

function pairOf<T extends Pair>(map: WeakMap<object, T>, self: unknown): T {
  const p = typeof self === "object" && self !== null ? map.get(self) : undefined;
  if (p === undefined) throw new TypeError("Illegal invocation");
  return p;
}

export class TextEncoderStream {
  constructor() {
    // A high surrogate ending a chunk waits for the next chunk's low surrogate.
    let pending = "";
    const { readable, writable } = new TransformStream({
      transform(chunk: unknown, controller: TransformStreamDefaultController<Uint8Array>) {
        let text = pending + toDOMString(chunk);
        pending = "";
        const last = text.charCodeAt(text.length - 1);
        if (last >= 0xd800 && last <= 0xdbff) {
          pending = text.slice(-1);
          text = text.slice(0, -1);
        }
        if (text.length > 0) controller.enqueue(utf8Encode(text));
      },
      flush(controller: TransformStreamDefaultController<Uint8Array>) {
        if (pending !== "") controller.enqueue(new Uint8Array([0xef, 0xbf, 0xbd]));
      },
    });
    encoderStreams.set(this, { readable, writable });
  }

  get encoding(): string {
    pairOf(encoderStreams, this);
    return "utf-8";
  }

  get readable(): unknown {
    return pairOf(encoderStreams, this).readable;
  }

  get writable(): unknown {
    return pairOf(encoderStreams, this).writable;
  }

  [inspectCustom](depth: number, options: unknown, inspect: (v: unknown, o: unknown) => string) {
    const p = pairOf(encoderStreams, this);
    return `TextEncoderStream ${inspect(
      { encoding: "utf-8", readable: p.readable, writable: p.writable },
      { ...(options as object), depth },
    )}`;
  }
}

export class TextDecoderStream {
  constructor(label: unknown = "utf-8", options: unknown = {}) {
    const Decoder = preludeGlobal("TextDecoder") as new (l: unknown, o: unknown) => Decoder;
    const decoder = new Decoder(label, options);
    const { readable, writable } = new TransformStream({
      transform(chunk: unknown, controller: TransformStreamDefaultController<string>) {
        const bytes = viewBytes(chunk);
        if (bytes === undefined) {
          throw new TypeError(
            "Failed to execute 'decode' on 'TextDecoderStream': The provided value is not of type '(ArrayBuffer or ArrayBufferView)'.",
          );
        }
        const text = decoder.decode(bytes, { stream: true });
        if (text !== "") controller.enqueue(text);
      },
      flush(controller: TransformStreamDefaultController<string>) {
        const text = decoder.decode();
        if (text !== "") controller.enqueue(text);
      },
    });
    decoderStreams.set(this, { readable, writable, decoder });
  }

  get encoding(): string {
    return pairOf(decoderStreams, this).decoder.encoding;
  }

  get fatal(): boolean {
    return pairOf(decoderStreams, this).decoder.fatal;
  }

  get ignoreBOM(): boolean {
    return pairOf(decoderStreams, this).decoder.ignoreBOM;
  }

  get readable(): unknown {
    return pairOf(decoderStreams, this).readable;
  }

  get writable(): unknown {
    return pairOf(decoderStreams, this).writable;
  }

  [inspectCustom](depth: number, options: unknown, inspect: (v: unknown, o: unknown) => string) {
    const p = pairOf(decoderStreams, this);
    return `TextDecoderStream ${inspect(
      {
        encoding: p.decoder.encoding,
        fatal: p.decoder.fatal,
        ignoreBOM: p.decoder.ignoreBOM,
        readable: p.readable,
        writable: p.writable,
      },
      { ...(options as object), depth },
    )}`;
  }
}

// ---------------------------------------------------------------------------
// Inspection
// ---------------------------------------------------------------------------

const STATE: Record<string, string> = {
  readable: "readable",
  closed: "closed",
  errored: "errored",
  writable: "writable",
  erroring: "erroring",
};

function inspectAs(
  ctor: { prototype: object },
  name: string,
  fields: (o: Record<string, unknown>) => Record<string, unknown>,
): void {
  ReflectDefineProperty(ctor.prototype, inspectCustom, {
    value(
      this: Record<string, unknown>,
      depth: number,
      options: unknown,
      inspect: (v: unknown, o: unknown) => string,
    ) {
      let shown: Record<string, unknown>;
      try {
        shown = fields(this);
      } catch {
        return name; // the prototype itself
      }
      return `${name} ${inspect(shown, { ...(options as object), depth })}`;
    },
    writable: true,
    enumerable: false,
    configurable: true,
  });
}

// What Node's util.inspect shows for its own streams.
inspectAs(ReadableStream, "ReadableStream", (s) => ({
  locked: isLocked(s),
  state: STATE[s._state as string] ?? String(s._state),
  supportsBYOB: s._readableStreamController instanceof ReadableByteStreamController,
}));
inspectAs(WritableStream, "WritableStream", (s) => {
  if (!(s instanceof WritableStream)) throw new TypeError("not a WritableStream");
  return { locked: s._writer !== undefined, state: STATE[s._state as string] ?? String(s._state) };
});
inspectAs(TransformStream, "TransformStream", (s) => {
  if (!(s instanceof TransformStream)) throw new TypeError("not a TransformStream");
  return { readable: s._readable, writable: s._writable, backpressure: s._backpressure };
});
inspectAs(ReadableStreamDefaultReader, "ReadableStreamDefaultReader", (r) => {
  if (!(r instanceof ReadableStreamDefaultReader)) throw new TypeError("not a reader");
  return {
    stream: r._ownerReadableStream,
    readRequests: (r._readRequests as { length: number }).length,
  };
});

for (const [ctor, name] of [
  [TextEncoderStream, "TextEncoderStream"],
  [TextDecoderStream, "TextDecoderStream"],
] as const) {
  guardPrototype(ctor, `a ${name} made before this execution`);
  setInterfaceName(ctor, name);
}

/** Every global this module provides (lazy_streams.ts), in the order of the global object. */
export const STREAM_GLOBALS: Record<string, unknown> = {
  ...POLYFILL_GLOBALS,
  TextEncoderStream,
  TextDecoderStream,
};
