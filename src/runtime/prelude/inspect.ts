/**
 * A one-line rendition of Node's `util.inspect` and `util.format`, used by the
 * prelude's `console`. It follows Node's output for the values Convex code
 * logs (plain data, arrays, Maps, Sets, typed arrays, Dates, RegExps, Errors,
 * class instances, functions, boxed primitives, circular references), with
 * Node's defaults: depth 2, 100 array items, 10,000 string characters.
 *
 * Differences from Node: never breaks output over several lines (a line is
 * one log entry), cannot see inside Promises, Proxies, Map/Set iterators or
 * WeakMaps/WeakSets, not even under `%o` (no engine internals here), and
 * shows no colors.
 */
import { guardLoaded } from "./guard.js";
import {
  bigintValueOf,
  booleanValueOf,
  dateGetTime,
  dateToISOString,
  dateToString,
  errorToString,
  functionToString,
  hasOwn,
  initialGlobalNames,
  isEnumerable,
  mapEntries,
  mapSizeGetter,
  numberValueOf,
  ObjectProto,
  objectToString,
  regexpSourceGetter,
  regexpToString,
  setSizeGetter,
  setValues,
  stringValueOf,
  symbolToString,
  symbolValueOf,
  weakMapHas,
  weakSetHas,
} from "./intrinsics.js";
import {
  inspectCustom,
  isArrayBuffer,
  isDataView,
  isSharedArrayBuffer,
  typedArrayName,
} from "./util.js";

export interface InspectOptions {
  depth?: number | null;
  showHidden?: boolean;
  maxArrayLength?: number;
  maxStringLength?: number;
  customInspect?: boolean;
}

interface Ctx {
  depth: number;
  showHidden: boolean;
  maxArrayLength: number;
  maxStringLength: number;
  customInspect: boolean;
  seen: object[];
  circular: Map<object, number> | undefined;
  indentationLvl: number;
}

/** Names of the ECMAScript builtin constructors (for `%s`: objects of these use inspect, others their own toString). */
export const builtInObjects = new Set(
  initialGlobalNames.filter((name) => /^[A-Z][a-zA-Z0-9]+$/.test(name)),
);

function brand(fn: (this: unknown) => unknown, value: unknown): boolean {
  try {
    fn.call(value);
    return true;
  } catch {
    return false;
  }
}

const isDate = (v: object) => brand(dateGetTime, v);
const isRegExp = (v: object) => v !== RegExp.prototype && brand(regexpSourceGetter, v);
const isMap = (v: object) => brand(mapSizeGetter, v);
const isSet = (v: object) => brand(setSizeGetter, v);
const isWeakMap = (v: object) => {
  try {
    weakMapHas.call(v, ObjectProto);
    return true;
  } catch {
    return false;
  }
};
const isWeakSet = (v: object) => {
  try {
    weakSetHas.call(v, ObjectProto);
    return true;
  } catch {
    return false;
  }
};
const isError = (v: object) => objectToString.call(v) === "[object Error]" || v instanceof Error;

function boxedType(v: object): string | undefined {
  if (brand(numberValueOf, v)) return "Number";
  if (brand(stringValueOf, v)) return "String";
  if (brand(booleanValueOf, v)) return "Boolean";
  if (brand(bigintValueOf, v)) return "BigInt";
  if (brand(symbolValueOf, v)) return "Symbol";
  return undefined;
}

// ---------------------------------------------------------------------------
// Primitives
// ---------------------------------------------------------------------------

const META: string[] = [];
for (let i = 0; i < 0x20; i++) META[i] = `\\x${i.toString(16).toUpperCase().padStart(2, "0")}`;
META[8] = "\\b";
META[9] = "\\t";
META[10] = "\\n";
META[12] = "\\f";
META[13] = "\\r";
META[0x27] = "\\'";
META[0x5c] = "\\\\";
for (let i = 0x7f; i <= 0x9f; i++) META[i] = `\\x${i.toString(16).toUpperCase()}`;

// Control characters, quote or backslash, and lone surrogates (as in Node's strEscape).
const LONE_SURROGATE =
  "[\\ud800-\\udbff](?![\\udc00-\\udfff])|(?<![\\ud800-\\udbff])[\\udc00-\\udfff]";
const ESCAPE_SINGLE = new RegExp(`[\\x00-\\x1f\\x27\\x5c\\x7f-\\x9f]|${LONE_SURROGATE}`);
const ESCAPE_SINGLE_G = new RegExp(ESCAPE_SINGLE.source, "g");
const ESCAPE_OTHER = new RegExp(`[\\x00-\\x1f\\x5c\\x7f-\\x9f]|${LONE_SURROGATE}`);
const ESCAPE_OTHER_G = new RegExp(ESCAPE_OTHER.source, "g");

function escapeChar(ch: string): string {
  const code = ch.charCodeAt(0);
  return META[code] ?? `\\u${code.toString(16)}`;
}

/** Quotes a string the way Node does: single quotes unless the string contains them. */
export function strEscape(str: string): string {
  let quote = "'";
  let test = ESCAPE_SINGLE;
  let replace = ESCAPE_SINGLE_G;
  if (str.includes("'")) {
    if (!str.includes('"')) quote = '"';
    else if (!str.includes("`") && !str.includes("${")) quote = "`";
    if (quote !== "'") {
      test = ESCAPE_OTHER;
      replace = ESCAPE_OTHER_G;
    }
  }
  if (!test.test(str)) return quote + str + quote;
  replace.lastIndex = 0;
  return quote + str.replace(replace, escapeChar) + quote;
}

export function formatNumber(n: number): string {
  return Object.is(n, -0) ? "-0" : `${n}`;
}

function formatPrimitive(ctx: Ctx, value: unknown): string {
  switch (typeof value) {
    case "string": {
      let s = value;
      let trailer = "";
      if (s.length > ctx.maxStringLength) {
        const remaining = s.length - ctx.maxStringLength;
        s = s.slice(0, ctx.maxStringLength);
        trailer = `... ${remaining} more character${remaining > 1 ? "s" : ""}`;
      }
      return strEscape(s) + trailer;
    }
    case "number":
      return formatNumber(value);
    case "bigint":
      return `${value}n`;
    case "symbol":
      return symbolToString.call(value);
    default:
      return String(value);
  }
}

// ---------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------

function isInstanceof(obj: object, ctor: unknown): boolean {
  try {
    return obj instanceof (ctor as new () => unknown);
  } catch {
    return false;
  }
}

/** The nearest object of `value`'s prototype chain (itself included) holding a named constructor `value` is an instance of. */
function namedConstructor(value: object): { holder: object; name: string } | null {
  for (let obj: object | null = value; obj !== null; obj = Object.getPrototypeOf(obj)) {
    const descriptor = Object.getOwnPropertyDescriptor(obj, "constructor");
    if (
      descriptor !== undefined &&
      typeof descriptor.value === "function" &&
      descriptor.value.name !== "" &&
      isInstanceof(value, descriptor.value)
    ) {
      return { holder: obj, name: String(descriptor.value.name) };
    }
  }
  return null;
}

/**
 * The name of the nearest constructor in the prototype chain (`found`: what
 * `namedConstructor` returned for `value`), or null for null-prototype objects.
 */
function getConstructorName(
  value: object,
  found: ReturnType<typeof namedConstructor>,
): string | null {
  if (found !== null) return found.name;
  const firstProto = Object.getPrototypeOf(value) as object | null;
  if (firstProto === null) return null;
  // No named constructor anywhere in the chain: describe the first prototype instead.
  return `Object <${inspect(firstProto, { customInspect: false, depth: -1 })}>`;
}

/**
 * What `showHidden` adds for an object whose class is not a builtin one: the properties its
 * prototypes hold that are not methods (getters and data), up to three prototypes up and not
 * past a builtin constructor's prototype, each key once and none the object owns.
 */
function inheritedProperties(
  ctx: Ctx,
  value: object,
  recurseTimes: number,
  found: ReturnType<typeof namedConstructor>,
): string[] {
  if (found === null) return [];
  const { holder, name: ctorName } = found;
  let proto = Object.getPrototypeOf(value) as object | null;
  // An instance of a builtin class made directly from it has nothing of interest up its chain.
  if (holder === proto && builtInObjects.has(ctorName)) return [];
  const ownsItsConstructor = holder === value;
  const out: string[] = [];
  const shown = new Set<PropertyKey>();
  ctx.seen.push(value);
  try {
    for (let level = 0; level < 3 && proto !== null; level++) {
      if (level > 0 || ownsItsConstructor) {
        const ctor = Object.getOwnPropertyDescriptor(proto, "constructor");
        if (typeof ctor?.value === "function" && builtInObjects.has(ctor.value.name)) break;
      }
      const levelKeys = Reflect.ownKeys(proto);
      for (const key of levelKeys) {
        if (key === "constructor" || hasOwn.call(value, key) || shown.has(key)) continue;
        const desc = Object.getOwnPropertyDescriptor(proto, key);
        if (typeof desc?.value === "function") continue;
        out.push(formatProperty(ctx, proto, recurseTimes, key, Kind.Object));
      }
      for (const key of levelKeys) shown.add(key);
      proto = Object.getPrototypeOf(proto) as object | null;
    }
  } finally {
    ctx.seen.pop();
  }
  return out;
}

function getPrefix(ctorName: string | null, tag: string, fallback: string, size = ""): string {
  if (ctorName === null) {
    if (tag !== "" && fallback !== tag) return `[${fallback}${size}: null prototype] [${tag}] `;
    return `[${fallback}${size}: null prototype] `;
  }
  if (tag !== "" && ctorName !== tag) return `${ctorName}${size} [${tag}] `;
  return `${ctorName}${size} `;
}

const INDEX_KEY = /^(0|[1-9][0-9]*)$/;
const IDENTIFIER_KEY = /^[a-zA-Z_][a-zA-Z_0-9]*$/;

function isIndexKey(key: string): boolean {
  return INDEX_KEY.test(key) && Number(key) < 4294967295;
}

function getKeys(ctx: Ctx, value: object): PropertyKey[] {
  if (ctx.showHidden) {
    return [...Object.getOwnPropertyNames(value), ...Object.getOwnPropertySymbols(value)];
  }
  const keys: PropertyKey[] = Object.keys(value);
  for (const sym of Object.getOwnPropertySymbols(value)) {
    if (isEnumerable.call(value, sym)) keys.push(sym);
  }
  return keys;
}

function nonIndexKeys(ctx: Ctx, value: object): PropertyKey[] {
  return getKeys(ctx, value).filter((k) => typeof k !== "string" || !isIndexKey(k));
}

enum Kind {
  Object = 0,
  ArrayEntry = 1,
  ArrayExtra = 2,
}

export function inspect(value: unknown, options: InspectOptions = {}): string {
  const ctx: Ctx = {
    depth: options.depth === null ? Number.POSITIVE_INFINITY : (options.depth ?? 2),
    showHidden: options.showHidden ?? false,
    maxArrayLength: options.maxArrayLength ?? 100,
    maxStringLength: options.maxStringLength ?? 10000,
    customInspect: options.customInspect ?? true,
    seen: [],
    circular: undefined,
    indentationLvl: 0,
  };
  return formatValue(ctx, value, 0);
}

/** `ofTypedArray`: the value is a typed array's hidden `buffer`, shown by its length alone. */
function formatValue(ctx: Ctx, value: unknown, recurseTimes: number, ofTypedArray = false): string {
  if ((typeof value !== "object" || value === null) && typeof value !== "function") {
    return formatPrimitive(ctx, value);
  }
  const obj = value as object;
  if (ctx.customInspect) {
    const custom = (obj as Record<PropertyKey, unknown>)[inspectCustom];
    if (
      typeof custom === "function" &&
      custom !== inspect &&
      !(
        typeof (obj as { constructor?: unknown }).constructor === "function" &&
        (obj as { constructor: { prototype: unknown } }).constructor.prototype === obj
      )
    ) {
      const depth = ctx.depth - recurseTimes;
      const options = {
        depth,
        showHidden: ctx.showHidden,
        maxArrayLength: ctx.maxArrayLength,
        maxStringLength: ctx.maxStringLength,
        customInspect: ctx.customInspect,
        stylize: (s: string) => s,
      };
      const ret = (custom as (...a: unknown[]) => unknown).call(obj, depth, options, inspect);
      if (ret !== obj) {
        if (typeof ret !== "string") return formatValue(ctx, ret, recurseTimes);
        return ret.replaceAll("\n", `\n${" ".repeat(ctx.indentationLvl)}`);
      }
    }
  }
  if (ctx.seen.includes(obj)) {
    let index = 1;
    if (ctx.circular === undefined) {
      ctx.circular = new Map([[obj, index]]);
    } else {
      const existing = ctx.circular.get(obj);
      if (existing === undefined) {
        index = ctx.circular.size + 1;
        ctx.circular.set(obj, index);
      } else {
        index = existing;
      }
    }
    return `[Circular *${index}]`;
  }
  return formatRaw(ctx, obj, recurseTimes, ofTypedArray);
}

type Formatter = (ctx: Ctx, value: object, recurseTimes: number) => string[];

const noEntries: Formatter = () => [];

function formatRaw(ctx: Ctx, value: object, recurseTimes: number, ofTypedArray: boolean): string {
  const found = namedConstructor(value);
  const ctorName = getConstructorName(value, found);
  const inherited =
    ctx.showHidden && recurseTimes <= ctx.depth
      ? inheritedProperties(ctx, value, recurseTimes, found)
      : [];
  // Whether there is nothing to show between the braces beyond the entries.
  const bare = () => keys.length === 0 && inherited.length === 0;
  let tag: unknown = (value as Record<PropertyKey, unknown>)[Symbol.toStringTag];
  if (
    typeof tag !== "string" ||
    (tag !== "" && (ctx.showHidden ? hasOwn : isEnumerable).call(value, Symbol.toStringTag))
  ) {
    tag = "";
  }
  const tagStr = tag as string;
  let base = "";
  let braces: [string, string] = ["{", "}"];
  let keys: PropertyKey[];
  let formatter: Formatter = noEntries;
  let extrasKind = Kind.Object;

  const taName = typedArrayName(value);
  if (Array.isArray(value)) {
    const prefix =
      ctorName !== "Array" || tagStr !== ""
        ? getPrefix(ctorName, tagStr, "Array", `(${value.length})`)
        : "";
    keys = nonIndexKeys(ctx, value);
    braces = [`${prefix}[`, "]"];
    if (value.length === 0 && bare()) return `${braces[0]}]`;
    extrasKind = Kind.ArrayExtra;
    formatter = formatArray;
  } else if (isSet(value)) {
    const size = setSizeGetter.call(value) as number;
    const prefix = getPrefix(ctorName, tagStr, "Set", `(${size})`);
    keys = getKeys(ctx, value);
    formatter = formatSet;
    if (size === 0 && bare()) return `${prefix}{}`;
    braces = [`${prefix}{`, "}"];
  } else if (isMap(value)) {
    const size = mapSizeGetter.call(value) as number;
    const prefix = getPrefix(ctorName, tagStr, "Map", `(${size})`);
    keys = getKeys(ctx, value);
    formatter = formatMap;
    if (size === 0 && bare()) return `${prefix}{}`;
    braces = [`${prefix}{`, "}"];
  } else if (taName !== undefined) {
    const length = (value as Uint8Array).length;
    keys = nonIndexKeys(ctx, value);
    const prefix = getPrefix(ctorName, tagStr, taName, `(${length})`);
    braces = [`${prefix}[`, "]"];
    if (length === 0 && bare() && !ctx.showHidden) return `${braces[0]}]`;
    formatter = formatTypedArray;
    extrasKind = Kind.ArrayExtra;
  } else {
    keys = getKeys(ctx, value);
    if (ctorName === "Object") {
      if (objectToString.call(value) === "[object Arguments]") {
        braces[0] = "[Arguments] {";
      } else if (tagStr !== "") {
        braces[0] = `${getPrefix(ctorName, tagStr, "Object")}{`;
      }
      if (bare()) return `${braces[0]}}`;
    } else if (typeof value === "function") {
      base = getFunctionBase(value, ctorName, tagStr);
      if (bare()) return base;
    } else if (isRegExp(value)) {
      base = regexpToString.call(value);
      const prefix = getPrefix(ctorName, tagStr, "RegExp");
      if (prefix !== "RegExp ") base = `${prefix}${base}`;
      // Past the depth Node still shows a RegExp as itself (other objects become `[Name]`).
      if (bare() || recurseTimes > ctx.depth) return base;
    } else if (isDate(value)) {
      const time = dateGetTime.call(value);
      base = Number.isNaN(time) ? dateToString.call(value) : dateToISOString.call(value);
      const prefix = getPrefix(ctorName, tagStr, "Date");
      if (prefix !== "Date ") base = `${prefix}${base}`;
      if (bare()) return base;
    } else if (isError(value)) {
      base = formatError(ctx, value as Error, ctorName, tagStr, keys);
      if (bare()) return base;
    } else if (isArrayBuffer(value) || isSharedArrayBuffer(value)) {
      const prefix = getPrefix(
        ctorName,
        tagStr,
        isArrayBuffer(value) ? "ArrayBuffer" : "SharedArrayBuffer",
      );
      if (!ofTypedArray) {
        formatter = formatArrayBuffer;
      } else if (bare()) {
        return `${prefix}{ byteLength: ${formatNumber((value as ArrayBuffer).byteLength)} }`;
      }
      braces[0] = `${prefix}{`;
      keys.unshift("byteLength");
    } else if (isDataView(value)) {
      braces[0] = `${getPrefix(ctorName, tagStr, "DataView")}{`;
      keys.unshift("byteLength", "byteOffset", "buffer");
    } else if (objectToString.call(value) === "[object Promise]") {
      braces[0] = `${getPrefix(ctorName, tagStr, "Promise")}{`;
      formatter = () => ["<unknown>"];
    } else if (isWeakSet(value)) {
      braces[0] = `${getPrefix(ctorName, tagStr, "WeakSet")}{`;
      formatter = () => ["<items unknown>"];
    } else if (isWeakMap(value)) {
      braces[0] = `${getPrefix(ctorName, tagStr, "WeakMap")}{`;
      formatter = () => ["<items unknown>"];
    } else {
      const boxed = boxedType(value);
      if (boxed !== undefined) {
        base = formatBoxed(ctx, value, boxed, ctorName, tagStr);
        if (boxed === "String") {
          keys = keys.filter((k) => typeof k !== "string" || !isIndexKey(k));
        }
        if (bare()) return base;
      } else {
        if (bare()) return `${getPrefix(ctorName, tagStr, "Object")}{}`;
        braces[0] = `${getPrefix(ctorName, tagStr, "Object")}{`;
      }
    }
  }

  if (recurseTimes > ctx.depth) {
    let name = getPrefix(ctorName, tagStr, "Object").slice(0, -1);
    if (ctorName !== null) name = `[${name}]`;
    return name;
  }
  recurseTimes += 1;
  ctx.seen.push(value);
  let output: string[];
  try {
    output = formatter(ctx, value, recurseTimes);
    for (const key of keys) {
      output.push(formatProperty(ctx, value, recurseTimes, key, extrasKind));
    }
    output.push(...inherited);
  } finally {
    ctx.seen.pop();
  }
  if (ctx.circular !== undefined) {
    const index = ctx.circular.get(value);
    if (index !== undefined) {
      const reference = `<ref *${index}>`;
      base = base === "" ? reference : `${reference} ${base}`;
    }
  }
  const start = base === "" ? braces[0] : `${base} ${braces[0]}`;
  if (output.length === 0) return `${start}${braces[1]}`;
  return `${start} ${output.join(", ")} ${braces[1]}`;
}

function formatProperty(
  ctx: Ctx,
  value: object,
  recurseTimes: number,
  key: PropertyKey,
  kind: Kind,
): string {
  const desc = Object.getOwnPropertyDescriptor(value, key) ?? {
    value: (value as Record<PropertyKey, unknown>)[key],
    enumerable: true,
  };
  let str: string;
  if (desc.value !== undefined) {
    ctx.indentationLvl += 2;
    str = formatValue(ctx, desc.value, recurseTimes);
    ctx.indentationLvl -= 2;
  } else if (desc.get !== undefined) {
    str = desc.set !== undefined ? "[Getter/Setter]" : "[Getter]";
  } else if (desc.set !== undefined) {
    str = "[Setter]";
  } else {
    str = "undefined";
  }
  if (kind === Kind.ArrayEntry) return str;
  let name: string;
  if (typeof key === "symbol") {
    name = `[${symbolToString.call(key)}]`;
  } else if (key === "__proto__") {
    name = "['__proto__']";
  } else if (desc.enumerable === false) {
    name = `[${key}]`;
  } else if (IDENTIFIER_KEY.test(key as string)) {
    name = key as string;
  } else {
    name = strEscape(String(key));
  }
  return `${name}: ${str}`;
}

function remainingText(remaining: number): string {
  return `... ${remaining} more item${remaining > 1 ? "s" : ""}`;
}

function formatArray(ctx: Ctx, value: object, recurseTimes: number): string[] {
  const arr = value as unknown[];
  const valLen = arr.length;
  const len = Math.min(Math.max(0, ctx.maxArrayLength), valLen);
  const output: string[] = [];
  for (let i = 0; i < len; i++) {
    if (!hasOwn.call(arr, i)) return formatSparseArray(ctx, arr, recurseTimes, len, output, i);
    output.push(formatProperty(ctx, arr, recurseTimes, i, Kind.ArrayEntry));
  }
  const remaining = valLen - len;
  if (remaining > 0) output.push(remainingText(remaining));
  return output;
}

function formatSparseArray(
  ctx: Ctx,
  value: unknown[],
  recurseTimes: number,
  maxLength: number,
  output: string[],
  start: number,
): string[] {
  const keys = Object.keys(value);
  let index = start;
  for (let i = start; i < keys.length && output.length < maxLength; i++) {
    const key = keys[i]!;
    const tmp = Number(key);
    if (tmp > 2 ** 32 - 2) break;
    if (`${index}` !== key) {
      if (!INDEX_KEY.test(key)) break;
      const empty = tmp - index;
      output.push(`<${empty} empty item${empty > 1 ? "s" : ""}>`);
      index = tmp;
      if (output.length === maxLength) break;
    }
    output.push(formatProperty(ctx, value, recurseTimes, key, Kind.ArrayEntry));
    index++;
  }
  const remaining = value.length - index;
  if (output.length !== maxLength) {
    if (remaining > 0) output.push(`<${remaining} empty item${remaining > 1 ? "s" : ""}>`);
  } else if (remaining > 0) {
    output.push(remainingText(remaining));
  }
  return output;
}

// Shown after the elements when hidden properties are asked for (`%o`); all but the first are
// getters on the prototype, so listing own keys would not find them.
const TYPED_ARRAY_HIDDEN = ["BYTES_PER_ELEMENT", "length", "byteLength", "byteOffset", "buffer"];

function formatTypedArray(ctx: Ctx, value: object, recurseTimes: number): string[] {
  const arr = value as ArrayLike<number | bigint>;
  const length = arr.length;
  const max = Math.min(Math.max(0, ctx.maxArrayLength), length);
  const output: string[] = [];
  for (let i = 0; i < max; i++) {
    const v = arr[i]!;
    output.push(typeof v === "bigint" ? `${v}n` : formatNumber(v));
  }
  if (length > max) output.push(remainingText(length - max));
  if (ctx.showHidden) {
    ctx.indentationLvl += 2;
    for (const key of TYPED_ARRAY_HIDDEN) {
      const shown = formatValue(
        ctx,
        (arr as unknown as Record<string, unknown>)[key],
        recurseTimes,
        true,
      );
      output.push(`[${key}]: ${shown}`);
    }
    ctx.indentationLvl -= 2;
  }
  return output;
}

function formatSet(ctx: Ctx, value: object, recurseTimes: number): string[] {
  const size = setSizeGetter.call(value) as number;
  const max = Math.min(Math.max(0, ctx.maxArrayLength), size);
  const output: string[] = [];
  ctx.indentationLvl += 2;
  let i = 0;
  for (const v of setValues.call(value as Set<unknown>)) {
    if (i >= max) break;
    output.push(formatValue(ctx, v, recurseTimes));
    i++;
  }
  if (size > max) output.push(remainingText(size - max));
  ctx.indentationLvl -= 2;
  return output;
}

function formatMap(ctx: Ctx, value: object, recurseTimes: number): string[] {
  const size = mapSizeGetter.call(value) as number;
  const max = Math.min(Math.max(0, ctx.maxArrayLength), size);
  const output: string[] = [];
  ctx.indentationLvl += 2;
  let i = 0;
  for (const [k, v] of mapEntries.call(value as Map<unknown, unknown>)) {
    if (i >= max) break;
    output.push(`${formatValue(ctx, k, recurseTimes)} => ${formatValue(ctx, v, recurseTimes)}`);
    i++;
  }
  if (size > max) output.push(remainingText(size - max));
  ctx.indentationLvl -= 2;
  return output;
}

function formatArrayBuffer(ctx: Ctx, value: object): string[] {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(value as ArrayBuffer);
  } catch {
    return ["(detached)"];
  }
  const shown = Math.min(ctx.maxArrayLength, bytes.length);
  const hex: string[] = [];
  for (let i = 0; i < shown; i++) hex.push(bytes[i]!.toString(16).padStart(2, "0"));
  let str = hex.join(" ");
  const remaining = bytes.length - ctx.maxArrayLength;
  if (remaining > 0) str += ` ... ${remaining} more byte${remaining > 1 ? "s" : ""}`;
  return [`[Uint8Contents]: <${str}>`];
}

function formatBoxed(
  ctx: Ctx,
  value: object,
  type: string,
  ctorName: string | null,
  tag: string,
): string {
  let primitive: unknown;
  switch (type) {
    case "Number":
      primitive = numberValueOf.call(value);
      break;
    case "String":
      primitive = stringValueOf.call(value);
      break;
    case "Boolean":
      primitive = booleanValueOf.call(value);
      break;
    case "BigInt":
      primitive = bigintValueOf.call(value);
      break;
    default:
      primitive = symbolValueOf.call(value);
  }
  let base = `[${type}`;
  if (type !== ctorName) base += ctorName === null ? " (null prototype)" : ` (${ctorName})`;
  // Boxed strings are never truncated by Node.
  base += `: ${formatPrimitive({ ...ctx, maxStringLength: Number.POSITIVE_INFINITY }, primitive)}]`;
  if (tag !== "" && tag !== ctorName) base += ` [${tag}]`;
  return base;
}

function getFunctionBase(value: object, ctorName: string | null, tag: string): string {
  let source = "";
  try {
    source = functionToString.call(value);
  } catch {
    // Not a real function (a callable proxy): fall through.
  }
  if (source.startsWith("class") && source.endsWith("}")) {
    const slice = source.slice(5, -1);
    const bracket = slice.indexOf("{");
    if (bracket !== -1 && !slice.slice(0, bracket).includes("(")) {
      return getClassBase(value, ctorName, tag);
    }
  }
  let type = "Function";
  const kind = objectToString.call(value);
  if (kind === "[object GeneratorFunction]") type = "GeneratorFunction";
  else if (kind === "[object AsyncFunction]") type = "AsyncFunction";
  else if (kind === "[object AsyncGeneratorFunction]") type = "AsyncGeneratorFunction";
  let base = `[${type}`;
  if (ctorName === null) base += " (null prototype)";
  const name = (value as { name?: unknown }).name;
  if (name === "" || typeof name !== "string") base += " (anonymous)";
  else base += `: ${name}`;
  base += "]";
  if (ctorName !== type && ctorName !== null) base += ` ${ctorName}`;
  if (tag !== "" && ctorName !== tag) base += ` [${tag}]`;
  return base;
}

function getClassBase(value: object, ctorName: string | null, tag: string): string {
  const name = (hasOwn.call(value, "name") && (value as { name?: unknown }).name) || "(anonymous)";
  let base = `class ${String(name)}`;
  if (ctorName !== "Function" && ctorName !== null) base += ` [${ctorName}]`;
  if (tag !== "" && ctorName !== tag) base += ` [${tag}]`;
  if (ctorName !== null) {
    const superName = (Object.getPrototypeOf(value) as { name?: unknown } | null)?.name;
    if (superName) base += ` extends ${String(superName)}`;
  } else {
    base += " extends [null prototype]";
  }
  return `[${base}]`;
}

function improveStack(stack: string, ctorName: string | null, name: string, tag: string): string {
  let len = name.length;
  if (
    ctorName === null ||
    (name.endsWith("Error") &&
      stack.startsWith(name) &&
      (stack.length === len || stack[len] === ":" || stack[len] === "\n"))
  ) {
    let fallback = "Error";
    if (ctorName === null) {
      const start =
        /^([A-Z][a-z_ A-Z0-9[\]()-]+)(?::|\n\s+at)/.exec(stack) ??
        /^([a-z_A-Z0-9-]*Error)$/.exec(stack);
      fallback = start?.[1] ?? "";
      len = fallback.length;
      fallback = fallback || "Error";
    }
    const prototype = getPrefix(ctorName, tag, fallback).slice(0, -1);
    if (name !== prototype) {
      if (prototype.includes(name)) {
        stack = len === 0 ? `${prototype}: ${stack}` : `${prototype}${stack.slice(len)}`;
      } else {
        stack = `${prototype} [${name}]${stack.slice(len)}`;
      }
    }
  }
  return stack;
}

function formatError(
  ctx: Ctx,
  err: Error,
  ctorName: string | null,
  tag: string,
  keys: PropertyKey[],
): string {
  const name = err.name != null ? String(err.name) : "Error";
  let stack: string;
  const rawStack = (err as { stack?: unknown }).stack;
  if (rawStack) {
    stack = typeof rawStack === "string" ? rawStack : formatValue(ctx, rawStack, 0);
  } else {
    stack = errorToString.call(err);
  }
  if (!ctx.showHidden && keys.length !== 0) {
    for (const prop of ["name", "message", "stack"]) {
      const index = keys.indexOf(prop);
      const v = (err as unknown as Record<string, unknown>)[prop];
      if (index !== -1 && typeof v === "string" && stack.includes(v)) keys.splice(index, 1);
    }
  }
  if ("cause" in err && (keys.length === 0 || !keys.includes("cause"))) keys.push("cause");
  const errors = (err as { errors?: unknown }).errors;
  if (Array.isArray(errors) && (keys.length === 0 || !keys.includes("errors"))) {
    keys.push("errors");
  }
  stack = improveStack(stack, ctorName, name, tag);
  const message = (err as { message?: unknown }).message;
  let pos = (typeof message === "string" && message !== "" && stack.indexOf(message)) || -1;
  if (pos !== -1) pos += (message as string).length;
  const stackStart = stack.indexOf("\n    at", pos);
  if (stackStart === -1) stack = `[${stack}]`;
  if (ctx.indentationLvl !== 0) {
    stack = stack.replaceAll("\n", `\n${" ".repeat(ctx.indentationLvl)}`);
  }
  return stack;
}

// ---------------------------------------------------------------------------
// util.format
// ---------------------------------------------------------------------------

function hasBuiltInToString(value: object): boolean {
  if (typeof (value as { toString?: unknown }).toString !== "function") return true;
  if (hasOwn.call(value, "toString")) return false;
  let pointer: object | null = value;
  do {
    pointer = Object.getPrototypeOf(pointer) as object | null;
  } while (pointer !== null && !hasOwn.call(pointer, "toString"));
  if (pointer === null) return true;
  const descriptor = Object.getOwnPropertyDescriptor(pointer, "constructor");
  return (
    descriptor !== undefined &&
    typeof descriptor.value === "function" &&
    builtInObjects.has(descriptor.value.name)
  );
}

function tryStringify(value: unknown): string {
  try {
    return String(JSON.stringify(value));
  } catch (err) {
    if (err instanceof TypeError && /circular/i.test(err.message)) return "[Circular]";
    throw err;
  }
}

/** Node's `util.format`: printf-style `%s %d %i %f %j %o %O %c %%` in a leading string, then the rest joined by spaces. */
export function format(...args: unknown[]): string {
  const first = args[0];
  let a = 0;
  let str = "";
  let join = "";
  if (typeof first === "string") {
    if (args.length === 1) return first;
    let tempStr = "";
    let lastPos = 0;
    for (let i = 0; i < first.length - 1; i++) {
      if (first.charCodeAt(i) !== 37) continue; // '%'
      const next = first.charCodeAt(++i);
      if (a + 1 !== args.length) {
        switch (next) {
          case 115: {
            // 's'
            const arg = args[++a];
            if (typeof arg === "number") tempStr = formatNumber(arg);
            else if (typeof arg === "bigint") tempStr = `${arg}n`;
            else if (typeof arg !== "object" || arg === null || !hasBuiltInToString(arg)) {
              tempStr = String(arg);
            } else tempStr = inspect(arg, { depth: 0 });
            break;
          }
          case 106: // 'j'
            tempStr = tryStringify(args[++a]);
            break;
          case 100: {
            // 'd'
            const arg = args[++a];
            if (typeof arg === "bigint") tempStr = `${arg}n`;
            else if (typeof arg === "symbol") tempStr = "NaN";
            else tempStr = formatNumber(Number(arg));
            break;
          }
          case 79: // 'O'
            tempStr = inspect(args[++a]);
            break;
          case 111: // 'o'
            tempStr = inspect(args[++a], { showHidden: true, depth: 4 });
            break;
          case 105: {
            // 'i'
            const arg = args[++a];
            if (typeof arg === "bigint") tempStr = `${arg}n`;
            else if (typeof arg === "symbol") tempStr = "NaN";
            // biome-ignore lint/correctness/useParseIntRadix: "%i" parses "0x10" as 16, as Node does.
            else tempStr = formatNumber(Number.parseInt(arg as string));
            break;
          }
          case 102: {
            // 'f'
            const arg = args[++a];
            if (typeof arg === "symbol") tempStr = "NaN";
            else tempStr = formatNumber(Number.parseFloat(arg as string));
            break;
          }
          case 99: // 'c'
            a += 1;
            tempStr = "";
            break;
          case 37: // '%'
            str += first.slice(lastPos, i);
            lastPos = i + 1;
            continue;
          default:
            continue;
        }
        if (lastPos !== i - 1) str += first.slice(lastPos, i - 1);
        str += tempStr;
        lastPos = i + 1;
      } else if (next === 37) {
        str += first.slice(lastPos, i);
        lastPos = i + 1;
      }
    }
    if (lastPos !== 0) {
      a++;
      join = " ";
      if (lastPos < first.length) str += first.slice(lastPos);
    }
  }
  while (a < args.length) {
    const value = args[a];
    str += join;
    str += typeof value !== "string" ? inspect(value) : value;
    join = " ";
    a++;
  }
  return str;
}

// Custom inspect methods of the app's receive this function.
guardLoaded([inspect]);
