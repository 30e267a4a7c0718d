/**
 * `structuredClone` (HTML standard's StructuredSerialize/Deserialize in one
 * pass): primitives, plain objects, arrays (holes and extra properties kept),
 * Date, RegExp, Map, Set, ArrayBuffer (resizable kept), typed arrays and
 * DataView (sharing cloned buffers), boxed primitives, Errors, Blob/File,
 * DOMException, and circular or shared references. Functions, symbols,
 * WeakMap/WeakSet/WeakRef, Promises and platform objects throw a
 * DataCloneError, as in browsers.
 */
import { DOMException, isDOMException } from "./domexception.js";
import { guardWrite } from "./guard.js";
import {
  arrayBufferByteLength as abByteLength,
  arrayBufferMaxByteLength as abMaxByteLength,
  arrayBufferResizable as abResizable,
  arrayBufferSlice as abSlice,
  arrayBufferTransfer as abTransfer,
  bigintValueOf,
  booleanValueOf,
  dateGetTime,
  ERROR_CTORS,
  mapEntries,
  mapSizeGetter as mapSize,
  numberValueOf,
  objectToString,
  regexpFlagsGetter as regexpFlags,
  regexpSourceGetter as regexpSource,
  setSizeGetter as setSize,
  setValues,
  stringValueOf,
  symbolValueOf,
  TYPED_ARRAY_CTORS,
  weakMapHas,
  weakRefDeref,
  weakSetHas,
} from "./intrinsics.js";
import {
  cloneHooks,
  isArrayBuffer,
  isDataView,
  isSharedArrayBuffer,
  loadedGlobal,
  type TypedArray,
  typedArrayName,
} from "./util.js";

const ERROR_NAME_LIST = [
  "Error",
  "EvalError",
  "RangeError",
  "ReferenceError",
  "SyntaxError",
  "TypeError",
  "URIError",
];
const ERROR_NAMES = new Set(ERROR_NAME_LIST);
/** The standard error constructors (captured in intrinsics.ts) by name. */
const ERROR_CTOR_BY_NAME: Record<string, ErrorConstructor> = {};
for (let i = 0; i < ERROR_NAME_LIST.length; i++) {
  ERROR_CTOR_BY_NAME[ERROR_NAME_LIST[i]!] = ERROR_CTORS[i]!;
}
/** The typed array constructors (captured in intrinsics.ts) by name. */
const TYPED_ARRAYS: Record<string, (typeof TYPED_ARRAY_CTORS)[number]> = {};
const TYPED_ARRAY_NAMES = [
  "Int8Array",
  "Uint8Array",
  "Uint8ClampedArray",
  "Int16Array",
  "Uint16Array",
  "Int32Array",
  "Uint32Array",
  "Float32Array",
  "Float64Array",
  "BigInt64Array",
  "BigUint64Array",
];
for (let i = 0; i < TYPED_ARRAY_NAMES.length; i++) {
  TYPED_ARRAYS[TYPED_ARRAY_NAMES[i]!] = TYPED_ARRAY_CTORS[i]!;
}

function tryCall(fn: ((this: unknown, ...a: never[]) => unknown) | undefined, v: unknown): boolean {
  if (fn === undefined) return false;
  try {
    fn.call(v);
    return true;
  } catch {
    return false;
  }
}

function dataCloneError(what: string): DOMException {
  return new DOMException(`${what} could not be cloned.`, "DataCloneError");
}

export function structuredClone(value: unknown, options?: unknown): unknown {
  // biome-ignore lint/complexity/noArguments: Web IDL counts the arguments actually passed.
  if (arguments.length === 0) {
    throw new TypeError(
      "Failed to execute 'structuredClone': 1 argument required, but only 0 present.",
    );
  }
  const transfer: unknown[] = [];
  if (options !== undefined && options !== null) {
    if (typeof options !== "object") {
      throw new TypeError(
        "Failed to execute 'structuredClone': The provided value is not of type 'StructuredSerializeOptions'.",
      );
    }
    const list = (options as { transfer?: unknown }).transfer;
    if (list !== undefined) {
      if (typeof list !== "object" || list === null || !(Symbol.iterator in list)) {
        throw new TypeError(
          "Failed to execute 'structuredClone': Failed to read the 'transfer' property from 'StructuredSerializeOptions': The provided value cannot be converted to a sequence.",
        );
      }
      for (const item of list as Iterable<unknown>) {
        if (!isArrayBuffer(item)) {
          throw new DOMException("Value not transferable", "DataCloneError");
        }
        if (transfer.includes(item)) {
          throw new DOMException(
            "ArrayBuffer at index 1 is a duplicate of an earlier ArrayBuffer.",
            "DataCloneError",
          );
        }
        transfer.push(item);
      }
    }
  }
  const memory = new Map<object, unknown>();
  const result = cloneValue(value, memory);
  // Detach transferred buffers where the engine can (ArrayBuffer.prototype.transfer).
  if (abTransfer !== undefined) {
    for (const buffer of transfer) {
      guardWrite(buffer, "structuredClone's transfer");
      abTransfer.call(buffer as ArrayBuffer);
    }
  }
  return result;
}

function cloneValue(value: unknown, memory: Map<object, unknown>): unknown {
  if (typeof value === "symbol") throw dataCloneError(String(value));
  if (typeof value === "function") {
    let text: string;
    try {
      text = Function.prototype.toString.call(value);
    } catch {
      text = "function";
    }
    throw dataCloneError(text);
  }
  if (typeof value !== "object" || value === null) return value;
  const existing = memory.get(value);
  if (existing !== undefined) return existing;

  // Boxed primitives.
  if (tryCall(numberValueOf, value))
    return remember(memory, value, Object(numberValueOf.call(value)));
  if (tryCall(stringValueOf, value))
    return remember(memory, value, Object(stringValueOf.call(value)));
  if (tryCall(booleanValueOf, value)) {
    return remember(memory, value, Object(booleanValueOf.call(value)));
  }
  if (tryCall(bigintValueOf, value))
    return remember(memory, value, Object(bigintValueOf.call(value)));
  if (tryCall(symbolValueOf, value)) throw dataCloneError("[object Symbol]");

  if (tryCall(dateGetTime, value)) {
    return remember(memory, value, new Date(dateGetTime.call(value)));
  }
  if (value !== RegExp.prototype && tryCall(regexpSource, value)) {
    return remember(
      memory,
      value,
      new RegExp(regexpSource.call(value) as string, regexpFlags.call(value) as string),
    );
  }
  if (isArrayBuffer(value)) {
    let copy: ArrayBuffer;
    if (abResizable?.call(value)) {
      const length = abByteLength.call(value) as number;
      copy = new (
        ArrayBuffer as unknown as new (
          n: number,
          o: { maxByteLength: number },
        ) => ArrayBuffer
      )(length, { maxByteLength: abMaxByteLength!.call(value) as number });
      new Uint8Array(copy).set(new Uint8Array(value));
    } else {
      copy = abSlice.call(value, 0);
    }
    return remember(memory, value, copy);
  }
  if (isSharedArrayBuffer(value)) {
    // One agent only: sharing the same memory is what the standard asks for.
    return remember(memory, value, value);
  }
  const taName = typedArrayName(value);
  if (taName !== undefined) {
    const ta = value as TypedArray;
    const buffer = cloneValue(ta.buffer, memory) as ArrayBuffer;
    const Ctor = TYPED_ARRAYS[taName]!;
    return remember(memory, value, new Ctor(buffer, ta.byteOffset, ta.length));
  }
  if (isDataView(value)) {
    const buffer = cloneValue(value.buffer, memory) as ArrayBuffer;
    return remember(memory, value, new DataView(buffer, value.byteOffset, value.byteLength));
  }
  if (tryCall(mapSize, value)) {
    const out = new Map();
    memory.set(value, out);
    const entries = [...mapEntries.call(value as Map<unknown, unknown>)];
    for (const [k, v] of entries) out.set(cloneValue(k, memory), cloneValue(v, memory));
    return out;
  }
  if (tryCall(setSize, value)) {
    const out = new Set();
    memory.set(value, out);
    const values = [...setValues.call(value as Set<unknown>)];
    for (const v of values) out.add(cloneValue(v, memory));
    return out;
  }
  for (const hook of cloneHooks.cloneable) {
    if (hook.test(value)) return remember(memory, value, hook.clone(value));
  }
  for (const name of cloneHooks.refused) {
    // A class not loaded yet has no instances.
    const ctor = loadedGlobal(name);
    if (typeof ctor === "function" && value instanceof ctor) throw dataCloneError(`#<${name}>`);
  }
  if (isDOMException(value)) {
    return remember(memory, value, new DOMException(value.message, value.name));
  }
  const tag = objectToString.call(value);
  if (tag === "[object Error]") return cloneError(value as Error, memory);
  if (isUncloneable(value, tag)) {
    const ctorName = constructorName(value);
    throw dataCloneError(tag === "[object Generator]" ? tag : `#<${ctorName}>`);
  }
  if (Array.isArray(value)) {
    const out = new Array((value as unknown[]).length);
    memory.set(value, out);
    copyProperties(value, out, memory);
    return out;
  }
  const out: Record<string, unknown> = {};
  memory.set(value, out);
  copyProperties(value, out, memory);
  return out;
}

function remember<T>(memory: Map<object, unknown>, from: object, to: T): T {
  memory.set(from, to);
  return to;
}

function constructorName(value: object): string {
  try {
    const ctor = (value as { constructor?: { name?: unknown } }).constructor;
    if (typeof ctor?.name === "string" && ctor.name !== "") return ctor.name;
  } catch {
    // Fall through.
  }
  return "Object";
}

function isUncloneable(value: object, tag: string): boolean {
  if (typeof value === "function") return true;
  try {
    weakMapHas.call(value, {});
    return true;
  } catch {}
  try {
    weakSetHas.call(value, {});
    return true;
  } catch {}
  if (tryCall(weakRefDeref, value)) return true;
  return (
    tag === "[object Promise]" ||
    tag === "[object Generator]" ||
    tag === "[object AsyncGenerator]" ||
    tag === "[object Map Iterator]" ||
    tag === "[object Set Iterator]" ||
    tag === "[object Array Iterator]" ||
    tag === "[object String Iterator]" ||
    tag === "[object RegExp String Iterator]" ||
    tag === "[object Arguments]" ||
    tag === "[object FinalizationRegistry]" ||
    tag === "[object Module]"
  );
}

function cloneError(value: Error, memory: Map<object, unknown>): Error {
  // As V8 does: the name is kept only when it is one of the standard error names.
  const rawName = (value as { name?: unknown }).name;
  const name = typeof rawName === "string" && ERROR_NAMES.has(rawName) ? rawName : "Error";
  // A real error object (with [[ErrorData]]), its own stack replaced below.
  const out = new (ERROR_CTOR_BY_NAME[name] ?? Error)();
  memory.set(value, out);
  const define = (key: string, v: unknown) =>
    Object.defineProperty(out, key, {
      value: v,
      writable: true,
      enumerable: false,
      configurable: true,
    });
  const stack = (value as { stack?: unknown }).stack;
  if (typeof stack === "string") define("stack", stack);
  else delete (out as { stack?: unknown }).stack;
  const messageDesc = Object.getOwnPropertyDescriptor(value, "message");
  if (messageDesc !== undefined && "value" in messageDesc)
    define("message", String(messageDesc.value));
  const causeDesc = Object.getOwnPropertyDescriptor(value, "cause");
  if (causeDesc !== undefined && "value" in causeDesc) {
    define("cause", cloneValue(causeDesc.value, memory));
  }
  return out;
}

function copyProperties(from: object, to: object, memory: Map<object, unknown>): void {
  for (const key of Object.keys(from)) {
    // A getter may have deleted a later property; the standard skips those.
    if (!Object.hasOwn(from, key)) continue;
    const v = cloneValue((from as Record<string, unknown>)[key], memory);
    // CreateDataProperty: a "__proto__" key stays an own property.
    Object.defineProperty(to, key, {
      value: v,
      writable: true,
      enumerable: true,
      configurable: true,
    });
  }
}
