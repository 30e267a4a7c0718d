/**
 * The context guard: decides whether a context may serve another execution.
 *
 * After the app's modules are imported, the host *seals* the context: every
 * object reachable from the global object, from the intrinsics and from the
 * app's top-level bindings is registered as pre-existing. From then on each
 * execution runs in a new *epoch*, and the context stays clean as long as no
 * execution changes anything that existed before it began. The app script is
 * instrumented (../instrument.ts) so that property writes, writes to variables
 * of older function activations and reads of values reachable only through
 * closures go through this module; the built-ins that change their arguments,
 * their receiver or an object a caller-chosen constructor made
 * (Array.prototype.push, Map.prototype.set, Object.assign, Array.from, …) are
 * wrapped to check their target. A change to pre-existing state *taints* the
 * context: the execution itself is unaffected (it ran on the state every
 * execution starts from), and the host discards the context afterwards.
 *
 * State the guard cannot watch makes the app not reusable when it exists at
 * sealing time (iterator objects, promises' resolving functions, promises of
 * subclasses, FinalizationRegistry, WebAssembly, code made from strings during
 * import, a custom Error.prepareStackTrace), and taints the context when an
 * execution reaches it later.
 *
 * Registration runs no app code: it reads own property descriptors (never
 * calling getters), recognises built-in objects by brand checks of captured
 * built-ins (never by Symbol.toStringTag), and skips proxies (whose target and
 * handler it knows). Everything the guard calls after the app's code has run
 * was captured when the prelude ran: changes to the built-ins cannot blind it
 * (and taint anyway).
 */

const ReflectApply = Reflect.apply;
const ReflectConstruct = Reflect.construct;
const uncurry =
  <T, A extends unknown[], R>(f: (this: T, ...args: A) => R) =>
  (self: T, ...args: A): R =>
    ReflectApply(f, self, args);

const ownKeys = Reflect.ownKeys;
const getOwnPropertyDescriptor = Reflect.getOwnPropertyDescriptor;
const getPrototypeOf = Reflect.getPrototypeOf;
const defineProperty = Reflect.defineProperty;
const isFrozen = Object.isFrozen;
const isSealed = Object.isSealed;
const isExtensible = Object.isExtensible;
const isArray = Array.isArray;
const isView = ArrayBuffer.isView;
const symbolKeyFor = Symbol.keyFor;
const wmGet = uncurry(
  WeakMap.prototype.get as (this: WeakMap<WeakKey, unknown>, k: WeakKey) => unknown,
);

/**
 * The guard's own collections carry the original methods as own properties:
 * user code cannot reach them to change them, and calls stay monomorphic.
 */
interface PrivateWeakSet {
  has(v: unknown): boolean;
  add(v: unknown): void;
}
interface PrivateWeakMap<V> {
  get(k: unknown): V | undefined;
  set(k: unknown, v: V): void;
}
const WeakSetHas = WeakSet.prototype.has;
const WeakSetAdd = WeakSet.prototype.add;
const WeakMapGet = WeakMap.prototype.get;
const WeakMapSet = WeakMap.prototype.set;
function privateWeakSet(): PrivateWeakSet {
  const set = new WeakSet();
  defineProperty(set, "has", { value: WeakSetHas });
  defineProperty(set, "add", { value: WeakSetAdd });
  return set as unknown as PrivateWeakSet;
}
function privateWeakMap<V>(): PrivateWeakMap<V> {
  const map = new WeakMap();
  defineProperty(map, "get", { value: WeakMapGet });
  defineProperty(map, "set", { value: WeakMapSet });
  return map as unknown as PrivateWeakMap<V>;
}

/** The traversal's stack: a linked list of object literals (no Array methods to trust). */
interface Stack {
  head: { v: unknown; next: Stack["head"] } | null;
}
const push = (stack: Stack, v: unknown): void => {
  if (v !== null && v !== undefined) stack.head = { v, next: stack.head };
};
const arrayPush = uncurry(Array.prototype.push as (this: unknown[], ...items: unknown[]) => number);
const stringTrim = uncurry(String.prototype.trim as (this: string) => string);
const regexpExec = uncurry(
  RegExp.prototype.exec as (this: RegExp, s: string) => RegExpExecArray | null,
);
const functionToString = Function.prototype.toString;
const getter = (proto: object | undefined, key: PropertyKey) =>
  proto
    ? (getOwnPropertyDescriptor(proto, key)?.get as ((this: unknown) => unknown) | undefined)
    : undefined;
const mapSize = getter(Map.prototype, "size")!;
const setSize = getter(Set.prototype, "size")!;
const mapForEach = Map.prototype.forEach as (
  this: unknown,
  f: (v: unknown, k: unknown) => void,
) => void;
const setForEach = Set.prototype.forEach as (this: unknown, f: (v: unknown) => void) => void;
const promiseThen = Promise.prototype.then as (
  this: unknown,
  f: (v: unknown) => unknown,
  r: (e: unknown) => unknown,
) => unknown;
const regexpSource = getter(RegExp.prototype, "source")!;
const TypedArrayProto = getPrototypeOf(Uint8Array.prototype) as object;
const typedArrayTag = getter(TypedArrayProto, Symbol.toStringTag)!;
const typedArrayBuffer = getter(TypedArrayProto, "buffer")!;
const typedArrayLength = getter(TypedArrayProto, "length")!;
const dataViewBuffer = getter(DataView.prototype, "buffer")!;
const OriginalPromise = Promise;
const promiseSpecies = getter(Promise, Symbol.species);
const OriginalFunction = Function;
const OriginalError = Error;
const ErrorPrototype = Error.prototype;
const ObjectPrototype = Object.prototype;
// biome-ignore lint/security/noGlobalEval: the guard wraps eval to see code made from strings.
const originalEval = eval;

type AnyObject = object;
type Site = number | string;

const call0 = (f: (this: unknown) => unknown, self: unknown): unknown => ReflectApply(f, self, []);

const isObject = (v: unknown): v is AnyObject =>
  (typeof v === "object" && v !== null) || typeof v === "function";

/** What a WeakSet can hold: objects, and symbols outside the global registry. */
const isWeakKey = (v: unknown): v is WeakKey =>
  isObject(v) || (typeof v === "symbol" && symbolKeyFor(v) === undefined);

const protoOf = (v: unknown): AnyObject | null => (isObject(v) ? getPrototypeOf(v) : null);

// ---------------------------------------------------------------------------
// State

const registry = privateWeakSet();
const registered = (v: unknown): boolean => isWeakKey(v) && registry.has(v);
let sealed = false;
let sealing = false;
let tainted = false;
let taintReason: Site | undefined;
/** Why the app cannot reuse contexts, found while sealing. */
let unsafeReason: string | undefined;
/** Code made from a string while the modules were imported. */
let importDynamicCode = false;
let rootsThunk: (() => unknown[]) | undefined;
/** Registered regular expressions and their `lastIndex` when registered. */
const regexps: Array<{ re: RegExp; lastIndex: unknown }> = [];
/** Bound functions' targets and arguments; proxies' targets and handlers (hidden from reflection). */
const hidden = privateWeakMap<{ proxy: boolean; refs: unknown[] }>();
/** Readers of private fields, by class (static fields) and by class prototype (instance fields). */
const privateReaders = privateWeakMap<(o: AnyObject) => unknown[]>();
/** Instances with private fields → the readers (private methods) of their classes. */
const privateHolders = privateWeakMap<Array<(this: AnyObject) => unknown[]>>();
/**
 * Built-in objects whose prototype is not the one they were made with (moved
 * with setPrototypeOf, or constructed with another new.target) → that one.
 */
const originOf = privateWeakMap<AnyObject>();
/** Objects the prelude keeps for an object of one of its classes, by class prototype. */
const internalsOf = privateWeakMap<(o: AnyObject) => unknown[]>();
const hiddenOf = (o: unknown) => hidden.get(o);
const internalsFor = (o: unknown) => internalsOf.get(o);
/** Built-in functions without a name that are not promise resolving functions. */
const namelessNatives = privateWeakSet();
/** Wrapper → original built-in, for Function.prototype.toString. */
const originals = privateWeakMap<AnyObject>();

function taint(reason: Site): void {
  if (!tainted) {
    tainted = true;
    taintReason = reason;
  }
}

/** State the guard cannot watch: unsafe while sealing, a taint afterwards. */
function unwatchable(what: string): void {
  if (sealing) unsafeReason ??= what;
  else taint(what);
}

// ---------------------------------------------------------------------------
// Recognising built-in objects (brand checks that run no user code)

const brand = (check: ((this: unknown) => unknown) | undefined, o: unknown): boolean => {
  if (check === undefined) return false;
  try {
    call0(check, o);
    return true;
  } catch {
    return false;
  }
};

const intl = globalThis.Intl as unknown as Record<string, { prototype: AnyObject } | undefined>;
const wasm = (globalThis as unknown as { WebAssembly?: Record<string, { prototype: AnyObject }> })
  .WebAssembly;
const FinalizationRegistryProto = (
  globalThis as { FinalizationRegistry?: { prototype: AnyObject } }
).FinalizationRegistry?.prototype;
const finalizationUnregister = FinalizationRegistryProto
  ? (getOwnPropertyDescriptor(FinalizationRegistryProto, "unregister")?.value as (
      this: unknown,
      token: unknown,
    ) => unknown)
  : undefined;

/** Kinds of objects registration treats specially, each with its prototype and brand check. */
interface Kind {
  proto: AnyObject | undefined;
  is: (o: AnyObject) => boolean;
  visit: (o: AnyObject, stack: Stack) => void;
}

const kinds: Kind[] = [
  {
    proto: Map.prototype,
    is: (o) => o !== Map.prototype && brand(mapSize, o),
    visit: (o, stack) =>
      ReflectApply(mapForEach, o, [
        (v: unknown, k: unknown) => {
          push(stack, k);
          push(stack, v);
        },
      ]),
  },
  {
    proto: Set.prototype,
    is: (o) => o !== Set.prototype && brand(setSize, o),
    visit: (o, stack) => ReflectApply(setForEach, o, [(v: unknown) => push(stack, v)]),
  },
  {
    proto: Promise.prototype,
    // Not a subclass's prototype (which holds its own `constructor`, whose `prototype` it is).
    is: (o) => o !== Promise.prototype && !isPrototypeObject(o),
    visit: (o) => watchPromise(o),
  },
  {
    proto: RegExp.prototype,
    is: (o) => o !== RegExp.prototype && brand(regexpSource, o),
    visit: (o) => {
      const desc = getOwnPropertyDescriptor(o, "lastIndex");
      arrayPush(regexps, { re: o as RegExp, lastIndex: desc?.value });
    },
  },
  // (DateTimeFormat's format is the prelude's, which registers it: time.ts.)
  intlFormat("NumberFormat", "format"),
  intlFormat("Collator", "compare"),
  {
    proto: FinalizationRegistryProto,
    is: (o) =>
      finalizationUnregister !== undefined &&
      o !== FinalizationRegistryProto &&
      (() => {
        try {
          ReflectApply(finalizationUnregister, o, [{}]);
          return true;
        } catch {
          return false;
        }
      })(),
    visit: () => unwatchable("a FinalizationRegistry"),
  },
  ...(["Instance", "Memory", "Table", "Global"] as const).map(
    (name): Kind => ({
      proto: wasm?.[name]?.prototype,
      is: (o) =>
        o !== wasm?.[name]?.prototype &&
        brand(
          getter(
            wasm?.[name]?.prototype,
            { Instance: "exports", Memory: "buffer", Table: "length", Global: "value" }[name],
          ),
          o,
        ),
      visit: () => unwatchable(`a WebAssembly.${name}`),
    }),
  ),
];

function intlFormat(name: string, key: string): Kind {
  const proto = intl[name]?.prototype;
  const resolvedOptions = proto
    ? (getOwnPropertyDescriptor(proto, "resolvedOptions")?.value as (this: unknown) => unknown)
    : undefined;
  const bound = getter(proto, key);
  return {
    proto,
    is: (o) => o !== proto && brand(resolvedOptions, o),
    // Its bound function is made on first use and kept: make it now, and know it.
    visit: (o, stack) => {
      if (bound === undefined) return;
      const f = call0(bound, o);
      if (isObject(f)) namelessNatives.add(f);
      push(stack, f);
    },
  };
}

/** Prototypes of objects whose state changes as they run: iterators. */
const iteratorPrototypes: AnyObject[] = [];
/**
 * Objects that lead to intrinsics reachable only through instances (their
 * prototypes are registered when sealing), made when the prelude is
 * evaluated: before the app could replace the built-ins that make them.
 */
const intrinsicSamples: unknown[] = (() => {
  const iterators: unknown[] = [
    [][Symbol.iterator](),
    new Map()[Symbol.iterator](),
    new Set()[Symbol.iterator](),
    ""[Symbol.iterator](),
    "".matchAll(/(?:)/g),
  ];
  const values = [][Symbol.iterator]() as { map?: (f: (x: unknown) => unknown) => unknown };
  if (typeof values.map === "function") iterators[iterators.length] = values.map((x) => x);
  const segmenter = (Intl as { Segmenter?: new () => { segment(s: string): object } }).Segmenter;
  const others: unknown[] = [
    async () => {},
    function* () {},
    async function* () {},
    (function* () {})(),
    (async function* () {})(),
  ];
  if (segmenter) {
    const segments = new segmenter().segment("");
    others[others.length] = segments;
    iterators[iterators.length] = (segments as Iterable<unknown>)[Symbol.iterator]();
  }
  for (let i = 0; i < iterators.length; i++) {
    const proto = protoOf(iterators[i]);
    if (proto !== null) iteratorPrototypes[iteratorPrototypes.length] = proto;
  }
  for (let i = 0; i < iterators.length; i++) others[others.length] = iterators[i];
  return others;
})();
/** Prototypes of the prelude's that only its instances lead to: registered when sealing. */
const preludePrototypes: AnyObject[] = [];
/** Objects of the prelude's that user code can reach, made before sealing (guardLoaded). */
const preludeObjects: unknown[] = [];

/** `o` is some function's `prototype` object (it holds its own `constructor` pointing back). */
function isPrototypeObject(o: AnyObject): boolean {
  const ctor = getOwnPropertyDescriptor(o, "constructor");
  if (ctor === undefined || !("value" in ctor) || typeof ctor.value !== "function") return false;
  return getOwnPropertyDescriptor(ctor.value, "prototype")?.value === o;
}

function includes(list: AnyObject[], v: unknown): boolean {
  for (let i = 0; i < list.length; i++) if (list[i] === v) return true;
  return false;
}

const ThrowTypeError = getOwnPropertyDescriptor(Function.prototype, "caller")?.get;
const FunctionPrototype = Function.prototype;
const WASM_EXPORT = /^function (?:0|[1-9][0-9]*)\(\) \{ \[native code\] \}$/;

/**
 * Built-in functions made without a name are V8's promise resolving functions
 * (a Promise executor's resolve and reject, those a thenable's `then`
 * receives, Promise.all's element functions), but for %ThrowTypeError%,
 * Function.prototype and Intl's bound format functions (known when their
 * object is registered). Calling one settles a promise that may exist before
 * the execution. WebAssembly exports are built-in functions named by number,
 * which hold their instance. The source text of a built-in shows the name it
 * was made with, whatever its `name` property says now.
 */
function checkNativeFunction(f: AnyObject): void {
  if (f === ThrowTypeError || f === FunctionPrototype || namelessNatives.has(f)) return;
  if (originals.get(f) !== undefined) return;
  if (hiddenOf(f) !== undefined) return; // a bound function
  let source: string;
  try {
    source = ReflectApply(functionToString, f, []) as string;
  } catch {
    return;
  }
  if (source === "function () { [native code] }") {
    unwatchable("a promise's resolve or reject function");
  } else if (regexpExec(WASM_EXPORT, source)) {
    unwatchable("a WebAssembly export");
  }
}

// ---------------------------------------------------------------------------
// Registration

/** Registers `root` and everything reachable from it that is not registered yet. */
function register(root: unknown): void {
  if (!isWeakKey(root) || registry.has(root)) return;
  lastView = undefined;
  const stack: Stack = { head: { v: root, next: null } };
  try {
    while (stack.head !== null) {
      const o = stack.head.v;
      stack.head = stack.head.next;
      if (!isWeakKey(o) || registry.has(o)) continue;
      registry.add(o);
      if (typeof o !== "symbol") visit(o, stack);
    }
  } catch {
    // A half-registered object cannot be trusted (a stack overflow, a revoked proxy, …).
    unwatchable("registration failed");
  }
}

function visit(o: AnyObject, stack: Stack): void {
  // Private fields: of a class object (static), of an instance (recorded when
  // constructed, whatever it is: a base constructor may return anything).
  const staticReader = privateReaders.get(o);
  if (staticReader !== undefined) pushAll(staticReader(o), stack);
  const instanceReaders = privateHolders.get(o);
  if (instanceReaders !== undefined) {
    for (let i = 0; i < instanceReaders.length; i++) {
      pushAll(ReflectApply(instanceReaders[i]!, o, []) as unknown[], stack);
    }
  }
  const extra = hiddenOf(o);
  if (extra !== undefined) {
    for (let i = 0; i < extra.refs.length; i++) push(stack, extra.refs[i]);
    // A proxy: its target and handler are all there is; reflecting on it would run its traps.
    if (extra.proxy) return;
  }
  if (typeof o === "function") checkNativeFunction(o);

  // The prototype chain (and the one the object was made with, if it was
  // moved to another or constructed with another new.target): kinds of
  // built-in objects, prelude internals, errors.
  const proto = getPrototypeOf(o);
  push(stack, proto);
  const seen = { kind: false, error: false, iterator: false };
  walkChain(o, proto, seen, stack);
  const origin = originOf.get(o);
  if (origin !== undefined) walkChain(o, origin, seen, stack);
  if (seen.iterator) unwatchable("an iterator object");

  if (isView(o)) {
    const isTyped = call0(typedArrayTag, o) !== undefined;
    push(stack, call0(isTyped ? typedArrayBuffer : dataViewBuffer, o));
    // Own properties other than the elements.
    const length = isTyped ? (call0(typedArrayLength, o) as number) : 0;
    const keys = ownKeys(o);
    for (let i = length; i < keys.length; i++) pushProperty(o, keys[i]!, stack);
    return;
  }
  const keys = ownKeys(o);
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    // An error's stack is made (by Error.prepareStackTrace, possibly) when first read.
    if (seen.error && key === "stack") continue;
    pushProperty(o, key, stack);
  }
}

function walkChain(
  o: AnyObject,
  first: AnyObject | null,
  seen: { kind: boolean; error: boolean; iterator: boolean },
  stack: Stack,
): void {
  if (includes(iteratorPrototypes, first)) seen.iterator = true;
  for (let p: AnyObject | null = first; p !== null; ) {
    if (p === ErrorPrototype) seen.error = true;
    const internals = internalsFor(p);
    if (internals !== undefined) pushAll(internals(o), stack);
    if (!seen.kind) {
      for (let i = 0; i < kinds.length; i++) {
        const kind = kinds[i]!;
        if (kind.proto === p && kind.is(o)) {
          kind.visit(o, stack);
          seen.kind = true;
          break;
        }
      }
    }
    if (hiddenOf(p)?.proxy) return;
    p = getPrototypeOf(p);
  }
}

function pushAll(values: unknown[], stack: Stack): void {
  for (let i = 0; i < values.length; i++) push(stack, values[i]);
}

function pushProperty(o: AnyObject, key: PropertyKey, stack: Stack): void {
  if (typeof key === "symbol") push(stack, key);
  const desc = getOwnPropertyDescriptor(o, key);
  if (desc === undefined) return;
  if ("value" in desc) {
    push(stack, desc.value);
  } else {
    push(stack, desc.get);
    push(stack, desc.set);
  }
}

/**
 * A settled promise hands its value to whoever awaits it: register the value
 * (our reaction runs before any that user code adds after registration). A
 * pending one can only settle through its resolving functions, which are
 * unwatchable when reached. A promise whose `then` would consult a
 * constructor of the app's (a subclass, a `constructor` property) cannot be
 * read without running app code: unwatchable.
 */
function watchPromise(p: AnyObject): void {
  if (!defaultPromiseConstructor(p)) {
    unwatchable("a promise of a subclass or with its own constructor");
    return;
  }
  try {
    ReflectApply(promiseThen, p, [register, register]);
  } catch {
    // Not a promise after all: an object inheriting from Promise.prototype.
  }
}

function defaultPromiseConstructor(p: AnyObject): boolean {
  for (let o: AnyObject | null = p, depth = 0; o !== null && depth < 64; depth++) {
    if (hiddenOf(o)?.proxy) return false;
    const desc = getOwnPropertyDescriptor(o, "constructor");
    if (desc !== undefined) {
      return (
        "value" in desc &&
        desc.value === OriginalPromise &&
        getter(OriginalPromise, Symbol.species) === promiseSpecies
      );
    }
    o = getPrototypeOf(o);
  }
  return false;
}

// ---------------------------------------------------------------------------
// Writes

/** The last view found unregistered with an unregistered buffer (loops write the same view). */
let lastView: unknown;

function checkView(o: unknown, site: Site): void {
  if (!sealed) {
    noteImportWrite(o, site);
    return;
  }
  if (o === lastView) return;
  if (registered(o)) {
    taint(site);
  } else if (isView(o)) {
    const buffer = call0(
      call0(typedArrayTag, o) !== undefined ? typedArrayBuffer : dataViewBuffer,
      o,
    );
    if (registry.has(buffer as AnyObject)) taint(site);
    else lastView = o;
  }
}

/**
 * The built-in objects the prelude and the bootstrap use at run time. The app
 * may change them while it is imported (the result is its own), but then the
 * prelude may hand its internal objects to app code: such an app is not
 * reusable. Writes to them are noticed before sealing (w, wc, wrappers), and
 * the globals naming them compared when sealing.
 */
const intrinsicObjects = privateWeakSet();
const GLOBAL_NAMES = [
  "Object",
  "Function",
  "Array",
  "String",
  "Number",
  "Boolean",
  "Symbol",
  "BigInt",
  "Math",
  "JSON",
  "Reflect",
  "Promise",
  "Map",
  "Set",
  "WeakMap",
  "WeakSet",
  "WeakRef",
  "RegExp",
  "Error",
  "TypeError",
  "RangeError",
  "SyntaxError",
  "ArrayBuffer",
  "DataView",
  "Uint8Array",
  "Uint16Array",
  "Uint32Array",
  "Int32Array",
  "Float64Array",
  "Intl",
  "Date",
] as const;
const globalValues: unknown[] = [];
/** Where the app changed a built-in while it was imported (a site id, or a built-in's name). */
let changedAtImport: Site | undefined;

function noteIntrinsics(): void {
  const add = (o: unknown) => {
    if (isObject(o)) intrinsicObjects.add(o);
  };
  for (let i = 0; i < GLOBAL_NAMES.length; i++) {
    const value = getOwnPropertyDescriptor(globalThis, GLOBAL_NAMES[i]!)?.value;
    globalValues[i] = value;
    add(value);
    if (typeof value === "function") add(getOwnPropertyDescriptor(value, "prototype")?.value);
  }
  add(TypedArrayProto);
  add(getPrototypeOf(Uint8Array));
  for (let i = 0; i < intrinsicSamples.length; i++) {
    for (
      let p = protoOf(intrinsicSamples[i]);
      p !== null && p !== ObjectPrototype;
      p = getPrototypeOf(p)
    ) {
      add(p);
    }
  }
}

/** Before sealing: `o` is about to change; note it if it is a built-in the prelude relies on. */
function noteImportWrite(o: unknown, where: Site): void {
  if (changedAtImport === undefined && isObject(o) && intrinsicObjects.has(o)) {
    changedAtImport = where;
  }
}

/** Whether writing into `o` changes state that existed before the execution. */
function preExisting(o: unknown): boolean {
  if (registered(o)) return true;
  if (isView(o)) {
    const buffer = call0(
      call0(typedArrayTag, o) !== undefined ? typedArrayBuffer : dataViewBuffer,
      o,
    );
    return registry.has(buffer);
  }
  return isTemplateObject(o);
}

/** Before an object's prototype changes: remember the one it had (see originOf). */
function noteMove(o: unknown): void {
  if (!isObject(o) || hiddenOf(o)?.proxy || originOf.get(o) !== undefined) return;
  const proto = getPrototypeOf(o);
  if (proto !== null) originOf.set(o, proto);
}

/** Template objects are made once per call site and reused by every later evaluation. */
function isTemplateObject(k: unknown): boolean {
  if (!isArray(k) || !isFrozen(k)) return false;
  const raw = getOwnPropertyDescriptor(k, "raw");
  return raw !== undefined && "value" in raw && isArray(raw.value) && isFrozen(raw.value);
}

// ---------------------------------------------------------------------------
// What the instrumented app calls (see instrument.ts)

export interface AppGuard {
  /** The current epoch: 0 while importing, then one per execution once sealed. */
  e: number;
  w<T>(o: T, site: number): T;
  wc<T>(o: T, site: number): T;
  r<T>(v: T): T;
  /** A `super.x` read: registers the value when the home object is from an earlier epoch. */
  rs<T>(epoch: number, v: T): T;
  t(site: number): void;
  /** A class hands over the reader of its static private fields (a static block). */
  pr(ctor: AnyObject, reader: (o: AnyObject) => unknown[]): void;
  /** An instance gets the private fields its class's reader (a private method) reads. */
  pf(o: AnyObject, reader: (this: AnyObject) => unknown[]): void;
  /** A super() call returned `o`, on which the class then defined its fields. */
  sc<T>(o: T, site: number, reader?: (this: AnyObject) => unknown[]): T;
  roots(thunk: () => unknown[]): void;
  install(config: { eval: boolean }): void;
}

const appGuard: AppGuard = {
  e: 0,
  w(o, site) {
    if (sealed) {
      if (registered(o)) taint(site);
    } else {
      noteImportWrite(o, site);
    }
    return o;
  },
  wc(o, site) {
    if (sealed) checkView(o, site);
    else noteImportWrite(o, site);
    return o;
  },
  r(v) {
    if (sealed && isWeakKey(v) && !registry.has(v)) register(v);
    return v;
  },
  rs(epoch, v) {
    if (sealed && epoch !== appGuard.e && isWeakKey(v) && !registry.has(v)) register(v);
    return v;
  },
  t(site) {
    if (sealed) taint(site);
  },
  pr(ctor, reader) {
    privateReaders.set(ctor, reader);
  },
  pf(o, reader) {
    const readers = privateHolders.get(o);
    if (readers === undefined) privateHolders.set(o, [reader]);
    else if (!includes(readers as unknown as AnyObject[], reader)) arrayPush(readers, reader);
  },
  sc(o, site, reader) {
    // Fields were just defined on it: a write, after the fact (the taint still comes first).
    if (sealed && preExisting(o)) taint(site);
    if (reader !== undefined) appGuard.pf(o as AnyObject, reader);
    return o;
  },
  roots(thunk) {
    rootsThunk = thunk;
  },
  install(config) {
    delete (globalThis as Record<string, unknown>).__tessera_guard;
    installWrappers(config);
  },
};

// The app's prologue takes it (and deletes the global): user code cannot name it.
defineProperty(globalThis, "__tessera_guard", {
  value: appGuard,
  writable: false,
  enumerable: false,
  configurable: true,
});

// ---------------------------------------------------------------------------
// Built-ins that change their receiver, their arguments, or what they make

let installed = false;

/** Replaces a method by `wrapper`, which looks like it: same name, length and source text. */
function replaceMethod(target: AnyObject, key: PropertyKey, wrapper: AnyObject): void {
  const desc = getOwnPropertyDescriptor(target, key)!;
  const original = desc.value as AnyObject & { name: string; length: number };
  defineProperty(wrapper, "name", { value: original.name, configurable: true });
  defineProperty(wrapper, "length", { value: original.length, configurable: true });
  originals.set(wrapper, original);
  defineProperty(target, key, { ...desc, value: wrapper });
}

/** Wraps a method: `before` checks the call, `after` its result. */
function wrapMethod(
  target: AnyObject | undefined,
  key: PropertyKey,
  before: ((self: unknown, args: unknown[]) => void) | null,
  after: ((result: unknown) => void) | null = null,
): void {
  if (target === undefined) return;
  const original = getOwnPropertyDescriptor(target, key)?.value as
    | ((...args: unknown[]) => unknown)
    | undefined;
  if (typeof original !== "function") return;
  // A method (not a constructor).
  const wrapper = {
    [key](this: unknown, ...args: unknown[]): unknown {
      if (before !== null) before(this, args);
      const result = ReflectApply(original, this, args);
      if (sealed && after !== null) after(result);
      return result;
    },
  }[key as string]!;
  replaceMethod(target, key, wrapper);
}

const checkThis = (what: string) => (self: unknown) => checkView(self, what);
const checkArg =
  (what: string, index = 0) =>
  (_self: unknown, args: unknown[]) =>
    checkView(args[index], what);
const OriginalArray = Array;
const OriginalArrayBuffer = ArrayBuffer;
const OriginalRegExp = RegExp;
const TypedArrayConstructors: AnyObject[] = [
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
const originalSpecies = new Map<AnyObject, unknown>();
for (const C of [OriginalArray, OriginalArrayBuffer, OriginalRegExp, ...TypedArrayConstructors]) {
  originalSpecies.set(C, getter(C, Symbol.species));
}

/**
 * The `constructor` an object's species lookup would find, read from
 * descriptors (no getters run); `false` when only running code could tell
 * (an accessor, a proxy).
 */
function constructorOf(o: unknown): unknown {
  if (!isObject(o)) return undefined;
  for (let p: AnyObject | null = o; p !== null; p = getPrototypeOf(p)) {
    if (hiddenOf(p)?.proxy) return false;
    const desc = getOwnPropertyDescriptor(p, "constructor");
    if (desc !== undefined) return "value" in desc ? desc.value : false;
  }
  return undefined;
}

/** Whether `C` is one of `builtins` with its species getter as it was. */
function defaultConstructor(C: unknown, builtins: AnyObject[]): boolean {
  if (!includes(builtins, C)) return false;
  return getter(C as AnyObject, Symbol.species) === originalSpecies.get(C as AnyObject);
}

/** Which objects the built-in would make for `self`: only its own kind (true), or maybe anything. */
const arraySpeciesDefault = (self: unknown): boolean =>
  !isArray(self) ||
  (() => {
    const C = constructorOf(self);
    return C === undefined || defaultConstructor(C, [OriginalArray]);
  })();
const arrayStaticDefault = (self: unknown): boolean =>
  self === OriginalArray || typeof self !== "function";
const typedArraySpeciesDefault = (self: unknown): boolean =>
  defaultConstructor(constructorOf(self), TypedArrayConstructors);
const typedArrayStaticDefault = (self: unknown): boolean => includes(TypedArrayConstructors, self);
const arrayBufferSpeciesDefault = (self: unknown): boolean =>
  defaultConstructor(constructorOf(self), [OriginalArrayBuffer]);
const regexpSpeciesDefault = (self: unknown): boolean =>
  defaultConstructor(constructorOf(self), [OriginalRegExp]);

/**
 * Wraps a built-in that makes an object with a constructor the caller
 * chose (a species, `this`) and writes into it: that object may be one that
 * existed before. Checked when the call returns; when it throws midway, its
 * writes cannot be seen, so a caller-chosen constructor taints then.
 */
function wrapMaker(
  target: AnyObject | undefined,
  key: string,
  what: string,
  isDefault: (self: unknown) => boolean,
  before: ((self: unknown, args: unknown[]) => void) | null = null,
): void {
  if (target === undefined) return;
  const original = getOwnPropertyDescriptor(target, key)?.value as
    | ((...args: unknown[]) => unknown)
    | undefined;
  if (typeof original !== "function") return;
  const wrapper = {
    [key](this: unknown, ...args: unknown[]): unknown {
      if (sealed && before !== null) before(this, args);
      let result: unknown;
      try {
        result = ReflectApply(original, this, args);
      } catch (e) {
        if (sealed && !isDefault(this)) taint(what);
        throw e;
      }
      if (sealed) checkView(result, what);
      return result;
    },
  }[key]!;
  replaceMethod(target, key, wrapper);
}

function installWrappers(config: { eval: boolean }): void {
  if (installed) return;
  installed = true;

  for (const key of ["assign", "defineProperty", "defineProperties"]) {
    wrapMethod(Object, key, checkArg(`Object.${key}`));
  }
  wrapMethod(Object, "setPrototypeOf", (_s, args) => {
    noteMove(args[0]);
    if (sealed) checkView(args[0], "Object.setPrototypeOf");
  });
  wrapMethod(Object, "freeze", (_s, args) => {
    if (!sealed) noteImportWrite(args[0], "Object.freeze");
    else if (registered(args[0]) && !isFrozen(args[0])) taint("Object.freeze");
  });
  wrapMethod(Object, "seal", (_s, args) => {
    if (!sealed) noteImportWrite(args[0], "Object.seal");
    else if (registered(args[0]) && !isSealed(args[0])) taint("Object.seal");
  });
  wrapMethod(Object, "preventExtensions", (_s, args) => {
    if (!sealed) noteImportWrite(args[0], "Object.preventExtensions");
    else if (registered(args[0]) && isExtensible(args[0])) taint("Object.preventExtensions");
  });
  for (const key of ["defineProperty", "deleteProperty"]) {
    wrapMethod(Reflect, key, checkArg(`Reflect.${key}`));
  }
  wrapMethod(Reflect, "setPrototypeOf", (_s, args) => {
    noteMove(args[0]);
    if (sealed) checkView(args[0], "Reflect.setPrototypeOf");
  });
  // An object constructed with another new.target has that one's prototype:
  // remember the prototype its constructor would have given it.
  const construct = Reflect.construct;
  replaceMethod(
    Reflect,
    "construct",
    {
      construct(this: unknown, ...args: unknown[]): unknown {
        const result = ReflectApply(construct, this, args);
        const target = args[0];
        const newTarget = args[2];
        if (
          newTarget !== undefined &&
          newTarget !== target &&
          isObject(result) &&
          isObject(target)
        ) {
          const proto = getOwnPropertyDescriptor(target, "prototype");
          if (
            proto !== undefined &&
            "value" in proto &&
            isObject(proto.value) &&
            originOf.get(result) === undefined
          ) {
            originOf.set(result, proto.value);
          }
        }
        return result;
      },
    }.construct,
  );
  wrapMethod(Reflect, "preventExtensions", (_s, args) => {
    if (!sealed) noteImportWrite(args[0], "Reflect.preventExtensions");
    else if (registered(args[0]) && isExtensible(args[0])) taint("Reflect.preventExtensions");
  });
  wrapMethod(Reflect, "set", (_s, args) => {
    checkView(args[0], "Reflect.set");
    if (args.length > 3) checkView(args[3], "Reflect.set");
  });
  const objectProto = Object.prototype as Record<string, unknown>;
  for (const key of ["__defineGetter__", "__defineSetter__"]) {
    wrapMethod(objectProto, key, checkThis(`Object.prototype.${key}`));
  }
  const protoDesc = getOwnPropertyDescriptor(objectProto, "__proto__");
  if (protoDesc?.set) {
    const set = protoDesc.set;
    // A method (not a constructor), as the original setter.
    const wrappedSet = {
      setProto(this: unknown, v: unknown): void {
        noteMove(this);
        if (!sealed) noteImportWrite(this, "__proto__");
        else if (registered(this)) taint("__proto__");
        ReflectApply(set, this, [v]);
      },
    }.setProto;
    defineProperty(wrappedSet, "name", { value: "set __proto__", configurable: true });
    originals.set(wrappedSet, set);
    defineProperty(objectProto, "__proto__", { ...protoDesc, set: wrappedSet });
  }

  const arrayProto = Array.prototype;
  for (const key of ["copyWithin", "fill", "pop", "push", "reverse", "shift", "sort", "unshift"]) {
    wrapMethod(arrayProto, key, checkThis(`Array.prototype.${key}`));
  }
  wrapMaker(
    arrayProto,
    "splice",
    "Array.prototype.splice",
    arraySpeciesDefault,
    checkThis("Array.prototype.splice"),
  );
  for (const key of ["concat", "filter", "flat", "flatMap", "map", "slice"]) {
    wrapMaker(arrayProto, key, `Array.prototype.${key}`, arraySpeciesDefault);
  }
  for (const key of ["from", "of"]) wrapMaker(Array, key, `Array.${key}`, arrayStaticDefault);
  const TypedArray = getPrototypeOf(Uint8Array) as AnyObject;
  for (const key of ["copyWithin", "fill", "reverse", "set", "sort"]) {
    wrapMethod(TypedArrayProto, key, checkThis(`TypedArray.prototype.${key}`));
  }
  for (const key of ["filter", "map", "slice", "subarray"]) {
    wrapMaker(TypedArrayProto, key, `TypedArray.prototype.${key}`, typedArraySpeciesDefault);
  }
  for (const key of ["from", "of"]) {
    wrapMaker(TypedArray, key, `TypedArray.${key}`, typedArrayStaticDefault);
  }
  const dataViewKeys = ownKeys(DataView.prototype);
  for (let i = 0; i < dataViewKeys.length; i++) {
    const key = dataViewKeys[i]!;
    if (typeof key === "string" && key.startsWith("set")) {
      wrapMethod(DataView.prototype, key, checkThis(`DataView.prototype.${key}`));
    }
  }
  for (const key of ["resize", "transfer", "transferToFixedLength"]) {
    wrapMethod(ArrayBuffer.prototype, key, checkThis(`ArrayBuffer.prototype.${key}`));
  }
  wrapMaker(
    ArrayBuffer.prototype,
    "slice",
    "ArrayBuffer.prototype.slice",
    arrayBufferSpeciesDefault,
  );
  const SharedArrayBufferProto = (globalThis as { SharedArrayBuffer?: { prototype: AnyObject } })
    .SharedArrayBuffer?.prototype;
  wrapMethod(SharedArrayBufferProto, "grow", checkThis("SharedArrayBuffer.prototype.grow"));
  wrapMaker(SharedArrayBufferProto, "slice", "SharedArrayBuffer.prototype.slice", () => false);
  for (const key of ["add", "and", "compareExchange", "exchange", "or", "store", "sub", "xor"]) {
    wrapMethod(Atomics, key, checkArg(`Atomics.${key}`));
  }
  for (const key of ["set", "delete", "clear"]) {
    wrapMethod(Map.prototype, key, checkThis(`Map.prototype.${key}`));
  }
  for (const key of ["add", "delete", "clear"]) {
    wrapMethod(Set.prototype, key, checkThis(`Set.prototype.${key}`));
  }
  // An entry keyed by something made in this execution cannot be reached by a
  // later one (but for template objects, which every evaluation shares).
  const preExistingKey = (k: unknown) => registered(k) || isTemplateObject(k);
  const checkEntry = (what: string) => (self: unknown, args: unknown[]) => {
    if (registered(self) && preExistingKey(args[0])) taint(what);
  };
  for (const key of ["set", "delete"])
    wrapMethod(WeakMap.prototype, key, checkEntry(`WeakMap.prototype.${key}`));
  for (const key of ["add", "delete"])
    wrapMethod(WeakSet.prototype, key, checkEntry(`WeakSet.prototype.${key}`));
  // Values held by a registered WeakMap (for a pre-existing key) or WeakRef are pre-existing too.
  const weakMapGet = WeakMap.prototype.get;
  replaceMethod(
    WeakMap.prototype,
    "get",
    {
      get(this: unknown, key: unknown): unknown {
        const value = ReflectApply(weakMapGet, this, [key]);
        if (sealed && registered(this) && preExistingKey(key)) register(value);
        return value;
      },
    }.get,
  );
  if (typeof WeakRef === "function") {
    const deref = WeakRef.prototype.deref;
    replaceMethod(
      WeakRef.prototype,
      "deref",
      {
        deref(this: unknown): unknown {
          const value = ReflectApply(deref, this, []);
          if (sealed && registered(this)) register(value);
          return value;
        },
      }.deref,
    );
  }
  const dateKeys = ownKeys(Date.prototype);
  for (let i = 0; i < dateKeys.length; i++) {
    const key = dateKeys[i]!;
    if (typeof key === "string" && key.startsWith("set")) {
      wrapMethod(Date.prototype, key, checkThis(`Date.prototype.${key}`));
    }
  }
  wrapMethod(RegExp.prototype, "compile", checkThis("RegExp.prototype.compile"));
  // The RegExp protocol sets `lastIndex` on whatever object it is called on;
  // a registered regular expression gets it back at the end (endExecution).
  const protocol = [Symbol.match, Symbol.matchAll, Symbol.replace, Symbol.search, Symbol.split];
  for (let i = 0; i < protocol.length; i++) {
    const symbol = protocol[i]!;
    // @@split and @@matchAll also set it on an object their species constructor makes.
    const usesSpecies = symbol === Symbol.split || symbol === Symbol.matchAll;
    wrapMethod(RegExp.prototype, symbol, (self) => {
      if (registered(self) && !brand(regexpSource, self)) taint("the RegExp protocol on an object");
      if (usesSpecies && !regexpSpeciesDefault(self)) taint("a RegExp species constructor");
    });
  }
  // Generators: advancing one that existed before changes it.
  for (const sample of [function* () {}, async function* () {}]) {
    const generatorProto = protoOf(protoOf(sample()));
    for (const key of ["next", "return", "throw"]) {
      wrapMethod(generatorProto ?? undefined, key, checkThis("a generator that existed before"));
    }
  }
  wrapJsonParse();
  wrapErrorCaptureStackTrace();
  wrapIntlConstructors();
  wrapBind();
  wrapProxy();
  wrapDynamicCode(config.eval);
  noteIntrinsics();
  // toString of a wrapper shows the original's (native) source.
  replaceMethod(
    Function.prototype,
    "toString",
    {
      toString(this: unknown): string {
        const original = isObject(this) ? originals.get(this) : undefined;
        return ReflectApply(functionToString, original ?? this, []) as string;
      },
    }.toString,
  );
}

/** JSON.parse writes into the holder its reviver saw as `this`. */
function wrapJsonParse(): void {
  const parse = JSON.parse;
  replaceMethod(
    JSON,
    "parse",
    {
      parse(this: unknown, text: unknown, reviver?: unknown): unknown {
        if (typeof reviver !== "function") return ReflectApply(parse, this, [text, reviver]);
        const f = reviver as (this: unknown, k: string, v: unknown) => unknown;
        return ReflectApply(parse, this, [
          text,
          function (this: unknown, k: string, v: unknown): unknown {
            if (sealed) checkView(this, "JSON.parse's reviver");
            return ReflectApply(f, this, [k, v]);
          },
        ]);
      },
    }.parse,
  );
}

function wrapErrorCaptureStackTrace(): void {
  const capture = (OriginalError as { captureStackTrace?: (o: object, f?: unknown) => void })
    .captureStackTrace;
  if (typeof capture !== "function") return;
  const wrapper = {
    captureStackTrace(this: unknown, target: unknown, constructorOpt?: unknown): void {
      if (sealed) checkView(target, "Error.captureStackTrace");
      // Frames above the wrapper are the caller's, as with the original.
      ReflectApply(capture, this, [target, constructorOpt ?? wrapper]);
    },
  }.captureStackTrace;
  replaceMethod(OriginalError, "captureStackTrace", wrapper);
}

/**
 * Intl.DateTimeFormat and Intl.NumberFormat, called as functions on an object
 * inheriting from their prototype, store a formatter in it (a legacy of
 * ECMA-402): taint when that object is registered.
 */
function wrapIntlConstructors(): void {
  for (const name of ["DateTimeFormat", "NumberFormat"]) {
    const original = intl[name] as unknown as ((...args: unknown[]) => unknown) | undefined;
    if (typeof original !== "function") continue;
    const wrapper = function (this: unknown, ...args: unknown[]): unknown {
      if (new.target === undefined) {
        if (sealed && registered(this)) taint(`Intl.${name} called on an existing object`);
        return ReflectApply(original, this, args);
      }
      return ReflectConstruct(original, args, new.target);
    };
    defineProperty(wrapper, "name", { value: name, configurable: true });
    defineProperty(wrapper, "length", { value: original.length, configurable: true });
    const keys = ownKeys(original);
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      if (key === "name" || key === "length") continue;
      defineProperty(wrapper, key, getOwnPropertyDescriptor(original, key)!);
    }
    const proto = (original as unknown as { prototype: AnyObject }).prototype;
    defineProperty(proto, "constructor", {
      ...getOwnPropertyDescriptor(proto, "constructor"),
      value: wrapper,
    });
    originals.set(wrapper, original);
    defineProperty(intl, name, { ...getOwnPropertyDescriptor(intl, name), value: wrapper });
  }
}

/** Bound functions hide their target and arguments from reflection: keep them for registration. */
function wrapBind(): void {
  const bind = Function.prototype.bind;
  replaceMethod(
    Function.prototype,
    "bind",
    {
      bind(this: unknown, ...args: unknown[]): unknown {
        const bound = ReflectApply(bind, this, args) as AnyObject;
        const refs: unknown[] = [this];
        for (let i = 0; i < args.length; i++) arrayPush(refs, args[i]);
        hidden.set(bound, { proxy: false, refs });
        return bound;
      },
    }.bind,
  );
}

function wrapProxy(): void {
  const OriginalProxy = Proxy;
  const record = (proxy: AnyObject, target: unknown, handler: unknown) => {
    hidden.set(proxy, { proxy: true, refs: [target, handler] });
    // Writes through a proxy of a registered object (or of a view of a registered buffer) reach it.
    if (sealed && preExisting(target)) registry.add(proxy);
  };
  // A bound function: constructible, without a `prototype`, like Proxy itself.
  function ProxyImpl(this: unknown, target: AnyObject, handler: ProxyHandler<AnyObject>): unknown {
    if (new.target === undefined) {
      // Let the original throw its own error.
      return ReflectApply(OriginalProxy as unknown as (...a: unknown[]) => unknown, undefined, [
        target,
        handler,
      ]);
    }
    const proxy = ReflectConstruct(OriginalProxy, [target, handler]) as AnyObject;
    record(proxy, target, handler);
    return proxy;
  }
  const WrappedProxy = ReflectApply(Function.prototype.bind, ProxyImpl, [undefined]) as AnyObject;
  defineProperty(WrappedProxy, "name", { value: "Proxy", configurable: true });
  defineProperty(WrappedProxy, "length", { value: 2, configurable: true });
  const originalRevocable = OriginalProxy.revocable;
  const revocable = {
    revocable(target: AnyObject, handler: ProxyHandler<AnyObject>) {
      const result = ReflectApply(originalRevocable, OriginalProxy, [target, handler]) as {
        proxy: AnyObject;
        revoke: () => void;
      };
      record(result.proxy, target, handler);
      const revoke = result.revoke;
      const proxy = result.proxy;
      const wrappedRevoke = () => {
        if (sealed && registered(proxy)) taint("revoking a proxy");
        revoke();
      };
      originals.set(wrappedRevoke, revoke);
      namelessNatives.add(wrappedRevoke);
      result.revoke = wrappedRevoke;
      return result;
    },
  }.revocable;
  originals.set(revocable, originalRevocable);
  originals.set(WrappedProxy, OriginalProxy);
  defineProperty(WrappedProxy, "revocable", {
    value: revocable,
    writable: true,
    enumerable: false,
    configurable: true,
  });
  defineProperty(globalThis, "Proxy", {
    ...getOwnPropertyDescriptor(globalThis, "Proxy"),
    value: WrappedProxy,
  });
}

/** Code made from strings is not instrumented. */
function dynamicCode(args: unknown[]): void {
  if (sealed) {
    taint("code made from a string");
    return;
  }
  // The common way old libraries find the global object is harmless.
  const body = args[args.length - 1];
  if (args.length === 1 && typeof body === "string" && stringTrim(body) === "return this") return;
  importDynamicCode = true;
}

function wrapDynamicCode(wrapEval: boolean): void {
  const constructors: AnyObject[] = [OriginalFunction];
  for (const sample of [async () => {}, function* () {}, async function* () {}]) {
    arrayPush(constructors, (getPrototypeOf(sample) as { constructor: AnyObject }).constructor);
  }
  for (const original of constructors) {
    const ctor = original as new (...args: unknown[]) => unknown;
    const wrapper = function (this: unknown, ...args: unknown[]): unknown {
      dynamicCode(args);
      return ReflectConstruct(ctor, args, new.target ?? ctor);
    };
    defineProperty(wrapper, "name", {
      value: (original as { name: string }).name,
      configurable: true,
    });
    defineProperty(wrapper, "length", { value: 1, configurable: true });
    defineProperty(wrapper, "prototype", {
      value: (original as { prototype: unknown }).prototype,
      writable: false,
      enumerable: false,
      configurable: false,
    });
    originals.set(wrapper, original);
    const proto = (original as { prototype: AnyObject }).prototype;
    defineProperty(proto, "constructor", {
      ...getOwnPropertyDescriptor(proto, "constructor"),
      value: wrapper,
    });
    if (original === OriginalFunction) {
      defineProperty(globalThis, "Function", {
        ...getOwnPropertyDescriptor(globalThis, "Function"),
        value: wrapper,
      });
    }
  }
  if (wrapEval) {
    const wrapper = {
      eval(x: unknown): unknown {
        if (typeof x === "string") dynamicCode([x]);
        return originalEval(x as string);
      },
    }.eval;
    defineProperty(wrapper, "length", { value: 1, configurable: true });
    originals.set(wrapper, originalEval);
    defineProperty(globalThis, "eval", {
      ...getOwnPropertyDescriptor(globalThis, "eval"),
      value: wrapper,
    });
  }
}

// ---------------------------------------------------------------------------
// What the host drives (through globals.ts's __tessera_env)

export interface SealResult {
  reusable: boolean;
  reason?: string;
}

/** Intrinsics reachable only through instances, and the iterator prototypes. */
function sealIntrinsics(): void {
  for (let i = 0; i < intrinsicSamples.length; i++) register(protoOf(intrinsicSamples[i]));
  for (let i = 0; i < preludePrototypes.length; i++) register(preludePrototypes[i]);
  for (let i = 0; i < preludeObjects.length; i++) register(preludeObjects[i]);
}

/**
 * Registers everything that exists now; `loaded` gives the values of the
 * prelude's lazy globals evaluated so far (those loaded later are registered
 * as they load: guardLoaded).
 */
export function seal(loaded: () => unknown[]): SealResult {
  if (sealed) return sealResult();
  resetRegExpStatics();
  sealing = true;
  try {
    if (getOwnPropertyDescriptor(OriginalError, "prepareStackTrace") !== undefined) {
      unsafeReason ??= "the app sets Error.prepareStackTrace";
    }
    sealIntrinsics();
    register(globalThis);
    register(appGuard);
    register(loaded());
    if (rootsThunk) register(rootsThunk());
    register(rootsThunk);
  } finally {
    sealing = false;
  }
  if (importDynamicCode)
    unsafeReason ??= "the app made code from a string while its modules were imported";
  for (let i = 0; i < GLOBAL_NAMES.length; i++) {
    if (getOwnPropertyDescriptor(globalThis, GLOBAL_NAMES[i]!)?.value !== globalValues[i]) {
      changedAtImport ??= `the global ${GLOBAL_NAMES[i]}`;
    }
  }
  if (changedAtImport !== undefined) {
    unsafeReason ??= `the app changed a built-in object while its modules were imported (${typeof changedAtImport === "number" ? `site ${changedAtImport}` : changedAtImport})`;
  }
  if (tainted) unsafeReason ??= `sealing: ${taintReason}`;
  sealed = true;
  appGuard.e = 1;
  return sealResult();
}

function sealResult(): SealResult {
  return unsafeReason === undefined
    ? { reusable: true }
    : { reusable: false, reason: unsafeReason };
}

function resetRegExpStatics(): void {
  // The legacy RegExp.$1… and RegExp.lastMatch reflect the last match made.
  regexpExec(/(?:)/, "");
}

/** Starts an execution in a new epoch. */
export function beginExecution(): void {
  lastView = undefined;
  // In every context, sealed or not: each execution starts with the same statics.
  resetRegExpStatics();
  if (!sealed) return;
  appGuard.e++;
}

/**
 * Ends an execution, once every microtask it left has run: restores what
 * built-ins changed unseen, and says whether the context is still clean
 * ("clean", or "tainted:" and the reason, a site id or a description).
 */
export function endExecution(): string {
  lastView = undefined;
  if (!sealed) return "clean";
  for (let i = 0; i < atEnd.length; i++) atEnd[i]!();
  atEnd.length = 0;
  // Built-ins move the lastIndex of global and sticky regular expressions.
  for (let i = 0; i < regexps.length; i++) {
    const entry = regexps[i]!;
    if (entry.re.lastIndex !== entry.lastIndex) {
      try {
        entry.re.lastIndex = entry.lastIndex as number;
      } catch {
        taint("a regular expression's lastIndex");
      }
    }
  }
  return tainted ? `tainted:${taintReason}` : "clean";
}

// ---------------------------------------------------------------------------
// For the prelude's own classes, whose state the app's instrumentation does
// not see (it lives in module-level WeakMaps): their methods report changes,
// and each class tells registration which objects an instance holds.

/**
 * A prelude class's iterators advance in code the guard does not see: an
 * iterator that existed before an execution is unwatchable. (Their prototype
 * is registered when the context is sealed.)
 */
export function guardIteratorPrototype(proto: AnyObject): void {
  if (!includes(iteratorPrototypes, proto)) arrayPush(iteratorPrototypes, proto);
  arrayPush(preludePrototypes, proto);
  if (sealed) register(proto); // a module evaluated on first use, after sealing
}

/** Undo steps of the prelude's own, run when the execution ends (before the verdict). */
const atEnd: Array<() => void> = [];

/** The prelude changed something it restores itself: `undo` runs when the execution ends. */
export function guardAtEnd(undo: () => void): void {
  if (sealed) arrayPush(atEnd, undo);
}

/**
 * A prelude module made these values, which user code can reach (lazily
 * evaluated modules make them during an execution): they exist for later
 * executions. Registered now when sealed, else when sealing.
 */
export function guardLoaded(values: unknown[]): void {
  if (!sealed) arrayPush(preludeObjects, values);
  else if (loading > 0) arrayPush(loadedWhileLoading, values);
  else register(values);
}

/** Depth of lazily evaluated prelude modules being evaluated (guardLoading). */
let loading = 0;
const loadedWhileLoading: unknown[] = [];

/**
 * Evaluates a lazily loaded prelude module: what it provides is registered
 * once it is complete (a module still defining its classes would taint the
 * context by its own writes).
 */
export function guardLoading<T>(evaluate: () => T): T {
  loading++;
  try {
    return evaluate();
  } finally {
    loading--;
    if (loading === 0 && loadedWhileLoading.length > 0) {
      const values: unknown[] = [];
      for (let i = 0; i < loadedWhileLoading.length; i++) values[i] = loadedWhileLoading[i];
      loadedWhileLoading.length = 0;
      register(values);
    }
  }
}

/** A prelude method is about to change `o` (a Headers, an EventTarget, …). */
export function guardWrite(o: unknown, what: string): void {
  if (sealed && registered(o)) taint(what);
}

/** A prelude function is about to write into the bytes of `view` (a typed array, DataView or ArrayBuffer). */
export function guardWriteBytes(view: unknown, what: string): void {
  if (sealed) checkView(view, what);
}

/** `value` belongs to `holder` (a URL's searchParams, a Request's headers): pre-existing if `holder` is. */
export function guardReach<T>(holder: unknown, value: T): T {
  if (sealed && registered(holder)) register(value);
  return value;
}

/** The values of a Map, read with Map.prototype.forEach as it was before any user code ran. */
export function mapValues<V>(map: Map<unknown, V>): V[] {
  const out: V[] = [];
  ReflectApply(mapForEach, map, [(v: V) => arrayPush(out, v)]);
  return out;
}

/** WeakMap.prototype.get as it was before any user code ran (for `internals` functions). */
export function weakMapGet<V>(map: WeakMap<object, V>, key: object): V | undefined {
  return wmGet(map as WeakMap<WeakKey, unknown>, key) as V | undefined;
}

/**
 * Registration of an object inheriting from `proto` also registers what
 * `internals` returns for it. It runs during registration: it must use only
 * built-ins captured before user code ran (weakMapGet, Reflect.apply kept
 * aside, …) and call no user code.
 */
export function guardInternals(proto: AnyObject, internals: (o: AnyObject) => unknown[]): void {
  internalsOf.set(proto, (o: AnyObject) => {
    try {
      return internals(o);
    } catch {
      return []; // not an instance (the prototype itself)
    }
  });
}
