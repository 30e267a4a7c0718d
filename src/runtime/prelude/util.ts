/**
 * Helpers shared by the prelude modules. Everything here runs inside the V8
 * isolate: only ECMAScript builtins are available.
 */

/** Installs `value` on globalThis as a non-enumerable, writable, configurable property (like Web IDL globals). */
export function defineGlobal(name: string, value: unknown): void {
  Object.defineProperty(globalThis, name, {
    value,
    writable: true,
    enumerable: false,
    configurable: true,
  });
}

/** Installs several globals at once (one defineProperties call on the global object is cheaper). */
export function defineGlobals(values: Record<string, unknown>): void {
  const descriptors: PropertyDescriptorMap = {};
  for (const [name, value] of Object.entries(values)) {
    descriptors[name] = { value, writable: true, enumerable: false, configurable: true };
  }
  Object.defineProperties(globalThis, descriptors);
}

/**
 * Installs globals whose values are computed on first access of any of them,
 * then stored as plain data properties (assigning one first just replaces it).
 */
export function defineLazyGlobals(
  names: readonly string[],
  load: () => Record<string, unknown>,
): void {
  let values: Record<string, unknown> | undefined;
  const materialize = () => {
    values ??= load();
    for (const other of names) {
      const desc = Object.getOwnPropertyDescriptor(globalThis, other);
      // Only globals still lazy (not replaced or deleted by user code).
      if (desc?.get !== undefined && lazyGetters.has(desc.get)) defineGlobal(other, values[other]);
    }
    return values;
  };
  for (const name of names) {
    const get = () => materialize()[name];
    lazyGetters.add(get);
    Object.defineProperty(globalThis, name, {
      get,
      set(value: unknown) {
        defineGlobal(name, value);
      },
      enumerable: false,
      configurable: true,
    });
  }
}

const lazyGetters = new WeakSet<object>();

/** Sets `Symbol.toStringTag` on a class prototype, as Web IDL interfaces have. */
export function setToStringTag(ctor: { prototype: object }, tag: string): void {
  Object.defineProperty(ctor.prototype, Symbol.toStringTag, {
    value: tag,
    writable: false,
    enumerable: false,
    configurable: true,
  });
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
