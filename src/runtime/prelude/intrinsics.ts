/**
 * ECMAScript builtins the prelude's implementations keep references to,
 * captured when the prelude is evaluated. Most implementations are evaluated
 * lazily, on first use of their global (see globals.ts), possibly after user
 * code has patched a prototype or replaced a constructor; taking the builtins
 * from here keeps them as they were before any user code ran, as when every
 * module was evaluated with the prelude.
 */
import type { TypedArray } from "./util.js";

export const OriginalError = Error;
export const ObjectProto = Object.prototype;
export const hasOwn = Object.prototype.hasOwnProperty;
export const isEnumerable = Object.prototype.propertyIsEnumerable;
export const objectToString = Object.prototype.toString;
export const functionToString = Function.prototype.toString;
export const errorToString = Error.prototype.toString;
export const dateGetTime = Date.prototype.getTime;
export const dateToISOString = Date.prototype.toISOString;
export const dateToString = Date.prototype.toString;
export const regexpToString = RegExp.prototype.toString;
export const regexpSourceGetter = Object.getOwnPropertyDescriptor(RegExp.prototype, "source")!.get!;
export const regexpFlagsGetter = Object.getOwnPropertyDescriptor(RegExp.prototype, "flags")!.get!;
export const mapSizeGetter = Object.getOwnPropertyDescriptor(Map.prototype, "size")!.get!;
export const setSizeGetter = Object.getOwnPropertyDescriptor(Set.prototype, "size")!.get!;
export const mapEntries = Map.prototype.entries;
export const setValues = Set.prototype.values;
export const weakMapHas = WeakMap.prototype.has;
export const weakSetHas = WeakSet.prototype.has;
export const weakRefDeref = typeof WeakRef === "function" ? WeakRef.prototype.deref : undefined;
export const numberValueOf = Number.prototype.valueOf;
export const stringValueOf = String.prototype.valueOf;
export const booleanValueOf = Boolean.prototype.valueOf;
export const bigintValueOf = BigInt.prototype.valueOf;
export const symbolValueOf = Symbol.prototype.valueOf;
export const symbolToString = Symbol.prototype.toString;
export const promiseThen = Promise.prototype.then;
export const resolvedPromise = Promise.resolve();
export const arrayBufferSlice = ArrayBuffer.prototype.slice;
export const arrayBufferResizable = Object.getOwnPropertyDescriptor(
  ArrayBuffer.prototype,
  "resizable",
)?.get;
export const arrayBufferMaxByteLength = Object.getOwnPropertyDescriptor(
  ArrayBuffer.prototype,
  "maxByteLength",
)?.get;
export const arrayBufferByteLength = Object.getOwnPropertyDescriptor(
  ArrayBuffer.prototype,
  "byteLength",
)!.get!;
export const arrayBufferTransfer = (
  ArrayBuffer.prototype as { transfer?: (this: ArrayBuffer) => ArrayBuffer }
).transfer;

// Arrays, not objects keyed by name: object literals with many properties
// are slow to create in a fresh context (structured_clone.ts keys them).

/** The standard error constructors: Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError. */
export const ERROR_CTORS: readonly ErrorConstructor[] = [
  Error,
  EvalError,
  RangeError,
  ReferenceError,
  SyntaxError,
  TypeError,
  URIError,
];

/**
 * The typed array constructors: Int8Array, Uint8Array, Uint8ClampedArray,
 * Int16Array, Uint16Array, Int32Array, Uint32Array, Float32Array,
 * Float64Array, BigInt64Array, BigUint64Array.
 */
export const TYPED_ARRAY_CTORS: readonly (new (
  b: ArrayBuffer,
  o: number,
  l?: number,
) => TypedArray)[] = [
  Int8Array,
  Uint8Array,
  Uint8ClampedArray,
  Int16Array,
  Uint16Array,
  Int32Array,
  Uint32Array,
  Float32Array,
  Float64Array,
  BigInt64Array,
  BigUint64Array,
];

/**
 * Names of the global object's own properties before the prelude installs
 * anything: the ECMAScript builtins (console's `%s` treats instances of
 * these as built-in objects).
 */
export const initialGlobalNames: readonly string[] = Object.getOwnPropertyNames(globalThis);
