/**
 * Helpers shared by the prelude modules. Everything here runs inside the V8
 * isolate: only ECMAScript builtins are available.
 */

import { guardAtEnd, guardLoaded, guardLoading, guardWrite } from "./guard.js";

// Captured before user code runs (which may replace them, and which the guard wraps).
const ReflectDefineProperty = Reflect.defineProperty;
const ReflectGetOwnPropertyDescriptor = Reflect.getOwnPropertyDescriptor;

/**
 * The prelude's own values of its globals, by name, as far as they exist:
 * eager globals, the values lazily evaluated modules provided, and classes
 * named with setInterfaceName (a class can exist, through instances made by
 * another module, before its global is read).
 */
const preludeValues: Record<string, unknown> = Object.create(null);

/** Installs a global (non-enumerable, writable, configurable, like Web IDL globals). */
export function defineGlobal(name: string, value: unknown): void {
  // The bundler may rename functions (fetch2); restore the Web names.
  if (typeof value === "function" && value.name !== name) {
    Object.defineProperty(value, "name", { value: name, configurable: true });
  }
  preludeValues[name] = value;
  Object.defineProperty(globalThis, name, {
    value,
    writable: true,
    enumerable: false,
    configurable: true,
  });
}

/** Globals evaluated together: by a module that calls provideGlobals with their values. */
interface LazyGroup {
  names: readonly string[];
  /** Evaluates the module (a require() call). */
  load: () => unknown;
  /** The values of `names`, once loaded. */
  values: Record<string, unknown> | undefined;
}

/** A lazily installed global: its group, and the accessor installed for it. */
interface LazyGlobal {
  group: LazyGroup;
  get: () => unknown;
  descriptor: PropertyDescriptor;
}

const lazyGlobals: Record<string, LazyGlobal> = Object.create(null);

/**
 * Called by the modules that globals.ts loads lazily (lazy_*.ts, url.ts) when
 * they are evaluated: hands over the values of their globals. (Those modules
 * export nothing: esbuild builds the exports object of a module loaded with
 * require() when the script is evaluated, which costs time in every context.)
 */
export function provideGlobals(values: Record<string, unknown>): void {
  const list: unknown[] = [];
  for (const name in values) {
    preludeValues[name] = values[name];
    list[list.length] = values[name];
  }
  // Made now (also as another module's dependency), as a fresh context would
  // make them on first use: what exists from here on.
  guardLoaded(list);
}

/** A group's values, evaluating its module on first call. */
function groupValues(group: LazyGroup): Record<string, unknown> {
  let values = group.values;
  if (values === undefined) {
    guardLoading(group.load);
    values = {};
    const list: unknown[] = [];
    for (const name of group.names) {
      if (!(name in preludeValues)) throw new Error(`prelude: no value provided for ${name}`);
      const value = preludeValues[name];
      // The bundler may rename functions (structuredClone2); restore the Web names.
      if (typeof value === "function" && value.name !== name) {
        ReflectDefineProperty(value, "name", { value: name, configurable: true });
      }
      values[name] = value;
      list[list.length] = value;
    }
    group.values = values;
    // Made now, as a fresh context would make them on first use: what exists from here on.
    guardLoaded(list);
  }
  return values;
}

/**
 * Replaces the accessors of a loaded group by the data properties Web IDL
 * globals are, except where user code has replaced an accessor meanwhile (and
 * calls a getter it kept). Fails only when the global object is frozen; the
 * accessors stay then. In a context that serves several executions, an
 * execution's first read is undone when it ends (guard.ts): every execution
 * starts from the global object import left.
 */
function materialize(group: LazyGroup, values: Record<string, unknown>): void {
  for (const name of group.names) {
    const lazy = lazyGlobals[name]!;
    if (ReflectGetOwnPropertyDescriptor(globalThis, name)?.get === lazy.get) {
      const done = ReflectDefineProperty(globalThis, name, {
        value: values[name],
        writable: true,
        enumerable: false,
        configurable: true,
      });
      if (done) {
        guardAtEnd(() => {
          const now = ReflectGetOwnPropertyDescriptor(globalThis, name);
          if (now !== undefined && "value" in now && now.value === values[name]) {
            ReflectDefineProperty(globalThis, name, lazy.descriptor);
          }
        });
      }
    }
  }
}

function defineLazyGlobal(name: string, group: LazyGroup): void {
  const get = (): unknown => {
    const values = groupValues(group);
    materialize(group, values);
    return values[name];
  };
  const descriptor: PropertyDescriptor = {
    get,
    // Assigning replaces the global without evaluating it, as assigning to the
    // writable data property would; on an object inheriting from globalThis
    // it creates an own property of that object.
    set(this: unknown, value: unknown): void {
      const target = this ?? globalThis;
      if (typeof target !== "object" && typeof target !== "function") return;
      guardWrite(target, `the global ${name}`);
      const ok = ReflectDefineProperty(target, name, {
        value,
        writable: true,
        enumerable: target !== globalThis,
        configurable: true,
      });
      if (!ok) throw new TypeError(`Cannot assign to read only property '${name}' of object`);
    },
    enumerable: false,
    configurable: true,
  };
  lazyGlobals[name] = { group, get, descriptor };
  ReflectDefineProperty(globalThis, name, descriptor);
}

/**
 * Installs globals whose values are computed on first access: `load`
 * evaluates a module that calls provideGlobals with the values of `names`,
 * on first access of any of them. Until a global is read it is an accessor
 * (non-enumerable, configurable); its first read replaces it with the data
 * property (writable, non-enumerable, configurable) a Web IDL global is, and
 * assigning to it replaces it with the assigned value.
 */
export function defineLazyGlobals(names: readonly string[], load: () => unknown): void {
  const group: LazyGroup = { names, load, values: undefined };
  for (let i = 0; i < names.length; i++) defineLazyGlobal(names[i]!, group);
}

/**
 * The prelude's own value of the lazy global `name` (whatever user code did
 * to the global), evaluating its module if needed.
 */
export function preludeGlobal(name: string): unknown {
  return groupValues(lazyGlobals[name]!.group)[name];
}

/**
 * The prelude's own value of the global `name` if it exists yet, else
 * undefined (then no object of its class exists either). Evaluates nothing.
 */
export function loadedGlobal(name: string): unknown {
  return preludeValues[name];
}

/**
 * True when reading the global `name` would evaluate its module: it is still
 * the prelude's accessor and the value does not exist yet. Code that only
 * needs to know whether a value is an instance of the global can skip it then.
 */
export function isPendingGlobal(name: string): boolean {
  const lazy = lazyGlobals[name];
  if (lazy === undefined || name in preludeValues) return false;
  return Object.getOwnPropertyDescriptor(globalThis, name)?.get === lazy.get;
}

/**
 * Classes of the prelude that structuredClone clones (Blob, File, registered
 * by their module) and names of the globals whose instances it refuses
 * (other platform objects such as Headers or URL), in the order it tests them.
 */
export const cloneHooks: {
  cloneable: { test: (v: object) => boolean; clone: (v: object) => object }[];
  refused: readonly string[];
} = { cloneable: [], refused: [] };

/**
 * Gives a class its Web IDL interface name: `Symbol.toStringTag` on its
 * prototype, and its `name` where the bundler renamed it (TextEncoder2,
 * _Request). Done when the class is created: it can be reached through
 * instances before (or without) its global being read. Also records it as
 * the prelude's value of the global `name` (see loadedGlobal).
 */
export function setInterfaceName(ctor: { prototype: object; name: string }, name: string): void {
  if (ctor.name !== name) ReflectDefineProperty(ctor, "name", { value: name, configurable: true });
  preludeValues[name] = ctor;
  ReflectDefineProperty(ctor.prototype, Symbol.toStringTag, {
    value: name,
    writable: false,
    enumerable: false,
    configurable: true,
  });
  // Its instances may reach user code before its global is read (a Blob from
  // Response#blob): the class exists from now on, as it would in a fresh context.
  guardLoaded([ctor]);
}

/**
 * What streams.ts (evaluated lazily) lends the bodies of Request, Response
 * and Blob. Use it through `streams()`, which evaluates streams.ts first.
 */
export interface StreamHooks {
  /** A brand check: a ReadableStream of the prelude (no getter runs). */
  isReadableStream(value: unknown): boolean;
  isLocked(stream: unknown): boolean;
  /** Read from or cancelled (the Streams standard's IsReadableStreamDisturbed). */
  isDisturbed(stream: unknown): boolean;
  /** Reads a body stream to its end; rejects with a TypeError for a chunk that is not a Uint8Array. */
  readAll(stream: unknown): Promise<Uint8Array>;
  /** A byte stream over bytes in memory (copies of at most 64 KiB per chunk). */
  fromBytes(bytes: Uint8Array): unknown;
  /** A byte stream pulling its chunks from the host (null: the end). */
  fromHost(read: () => Promise<Uint8Array | null>, cancel: (reason: unknown) => void): unknown;
  /** A default reader, through methods taken before user code could replace them. */
  reader(stream: unknown): {
    read(): Promise<{ done: boolean; value?: unknown }>;
    cancel(reason?: unknown): Promise<void>;
    releaseLock(): void;
  };
  tee(stream: unknown): [unknown, unknown];
  cancel(stream: unknown, reason?: unknown): Promise<void>;
  /** A body stream's chunk as bytes, or a TypeError when it is not a Uint8Array. */
  chunkBytes(chunk: unknown): Uint8Array;
}

/** Set by streams.ts when it is evaluated. */
export const streamHooks: Partial<StreamHooks> = {};

/** The stream helpers, evaluating streams.ts (the `ReadableStream` global's module) if needed. */
export function streams(): StreamHooks {
  preludeGlobal("ReadableStream");
  return streamHooks as StreamHooks;
}

/** True when `value` is one of the prelude's ReadableStreams; evaluates nothing (none exists before). */
export function isReadableStream(value: unknown): boolean {
  return streamHooks.isReadableStream?.(value) === true;
}

/** Symbol Node's util.inspect (and our console) use for custom formatting. */
export const inspectCustom: unique symbol = Symbol.for("nodejs.util.inspect.custom") as never;

/** `Object.getPrototypeOf(Uint8Array)`: the %TypedArray% intrinsic. */
const TypedArrayPrototype = Object.getPrototypeOf(Uint8Array.prototype) as object;
const typedArrayTagGetter = Object.getOwnPropertyDescriptor(
  TypedArrayPrototype,
  Symbol.toStringTag,
)!.get as (this: unknown) => string | undefined;
const arrayBufferByteLength = Object.getOwnPropertyDescriptor(ArrayBuffer.prototype, "byteLength")!
  .get as (this: unknown) => number;
const sharedArrayBufferByteLength =
  typeof SharedArrayBuffer === "function"
    ? (Object.getOwnPropertyDescriptor(SharedArrayBuffer.prototype, "byteLength")!.get as (
        this: unknown,
      ) => number)
    : undefined;
const dataViewByteLength = Object.getOwnPropertyDescriptor(DataView.prototype, "byteLength")!
  .get as (this: unknown) => number;

export type TypedArray =
  | Int8Array
  | Uint8Array
  | Uint8ClampedArray
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | Float32Array
  | Float64Array
  | BigInt64Array
  | BigUint64Array;

/** The typed array's constructor name ("Uint8Array", …) or undefined when `value` is not a typed array. */
export function typedArrayName(value: unknown): string | undefined {
  return typedArrayTagGetter.call(value);
}

export function isArrayBuffer(value: unknown): value is ArrayBuffer {
  if (typeof value !== "object" || value === null) return false;
  try {
    arrayBufferByteLength.call(value);
    return true;
  } catch {
    return false;
  }
}

export function isSharedArrayBuffer(value: unknown): value is SharedArrayBuffer {
  if (typeof value !== "object" || value === null || sharedArrayBufferByteLength === undefined) {
    return false;
  }
  try {
    sharedArrayBufferByteLength.call(value);
    return true;
  } catch {
    return false;
  }
}

export function isDataView(value: unknown): value is DataView {
  if (typeof value !== "object" || value === null) return false;
  try {
    dataViewByteLength.call(value);
    return true;
  } catch {
    return false;
  }
}

/** True for any object that is an ArrayBuffer, SharedArrayBuffer or view on one (a Web IDL BufferSource). */
export function isBufferSource(value: unknown): value is ArrayBufferLike | ArrayBufferView {
  return ArrayBuffer.isView(value) || isArrayBuffer(value) || isSharedArrayBuffer(value);
}

/**
 * A Uint8Array viewing the bytes of a BufferSource (no copy), or undefined
 * when `value` is not one.
 */
export function viewBytes(value: unknown): Uint8Array | undefined {
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (isArrayBuffer(value) || isSharedArrayBuffer(value)) {
    return new Uint8Array(value);
  }
  return undefined;
}

/** A copy of the bytes of a BufferSource; throws TypeError when `value` is not one. */
export function copyBytes(value: unknown, what: string): Uint8Array {
  const view = viewBytes(value);
  if (view === undefined) {
    throw new TypeError(`${what} is not an ArrayBuffer, a TypedArray or a DataView.`);
  }
  return view.slice();
}

/** Concatenates byte arrays into a fresh Uint8Array. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const part of parts) total += part.length;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** A fresh ArrayBuffer holding a copy of `bytes`. */
export function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  const out = new ArrayBuffer(bytes.length);
  new Uint8Array(out).set(bytes);
  return out;
}

/** Web IDL `DOMString` conversion: symbols throw, everything else goes through String(). */
export function toDOMString(value: unknown): string {
  if (typeof value === "symbol") {
    throw new TypeError("Cannot convert a Symbol value to a string");
  }
  return String(value);
}

/** Web IDL `USVString` conversion: lone surrogates become U+FFFD. */
export function toUSVString(value: unknown): string {
  const s = toDOMString(value);
  return s.isWellFormed() ? s : s.toWellFormed();
}

/** Throws the TypeError browsers give when a required argument is missing. */
export function requireArgs(count: number, needed: number, where: string): void {
  if (count < needed) {
    throw new TypeError(
      `${where}: ${needed} argument${needed === 1 ? "" : "s"} required, but only ${count} present.`,
    );
  }
}

/** The values of the lazy globals whose modules were evaluated (the guard registers them when sealing). */
export function loadedLazyValues(): unknown[] {
  const out: unknown[] = [];
  for (const name in lazyGlobals) {
    const values = lazyGlobals[name]!.group.values;
    if (values !== undefined) out[out.length] = values[name];
  }
  return out;
}
