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
 * closures go through this module; the built-ins that change their arguments
 * or receiver (Object.assign, Array.prototype.push, Map.prototype.set, …) are
 * wrapped to check their target. A change to pre-existing state *taints* the
 * context: the execution itself is unaffected (it ran on the state every
 * execution starts from), and the host discards the context afterwards.
 *
 * State the guard cannot watch makes the app not reusable when it exists at
 * sealing time (generator and iterator objects, promises' resolving
 * functions, FinalizationRegistry, WebAssembly instances, code made from
 * strings during import), and taints the context when an execution reaches
 * it later.
 *
 * Everything here is captured when the prelude runs, before any user code:
 * later changes to the built-ins cannot blind the guard (and taint anyway).
 */

const uncurry =
  <T, A extends unknown[], R>(f: (this: T, ...args: A) => R) =>
  (self: T, ...args: A): R =>
    Reflect.apply(f, self, args);

const ReflectApply = Reflect.apply;
const ReflectConstruct = Reflect.construct;
const ownKeys = Reflect.ownKeys;
const getOwnPropertyDescriptor = Reflect.getOwnPropertyDescriptor;
const getPrototypeOf = Reflect.getPrototypeOf;
const defineProperty = Reflect.defineProperty;
const isFrozen = Object.isFrozen;
const isSealed = Object.isSealed;
const isExtensible = Object.isExtensible;
const isView = ArrayBuffer.isView;
const wsHas = uncurry(WeakSet.prototype.has as (this: WeakSet<object>, v: object) => boolean);
const wsAdd = uncurry(
  WeakSet.prototype.add as (this: WeakSet<object>, v: object) => WeakSet<object>,
);
const wmGet = uncurry(
  WeakMap.prototype.get as (this: WeakMap<object, unknown>, k: object) => unknown,
);
const wmSet = uncurry(
  WeakMap.prototype.set as (
    this: WeakMap<object, unknown>,
    k: object,
    v: unknown,
  ) => WeakMap<object, unknown>,
);
const arrayPush = uncurry(Array.prototype.push as (this: unknown[], ...items: unknown[]) => number);
const mapForEach = uncurry(
  Map.prototype.forEach as (
    this: Map<unknown, unknown>,
    f: (v: unknown, k: unknown) => void,
  ) => void,
);
const setForEach = uncurry(
  Set.prototype.forEach as (this: Set<unknown>, f: (v: unknown) => void) => void,
);
const promiseThen = uncurry(
  Promise.prototype.then as (
    this: Promise<unknown>,
    f: (v: unknown) => unknown,
    r: (e: unknown) => unknown,
  ) => Promise<unknown>,
);
const objectToString = uncurry(Object.prototype.toString as (this: unknown) => string);
const functionToString = Function.prototype.toString;
const regexpExec = uncurry(
  RegExp.prototype.exec as (this: RegExp, s: string) => RegExpExecArray | null,
);
const TypedArrayProto = getPrototypeOf(Uint8Array.prototype) as object;
const typedArrayTag = uncurry(
  getOwnPropertyDescriptor(TypedArrayProto, Symbol.toStringTag)!.get as (
    this: unknown,
  ) => string | undefined,
);
const typedArrayBuffer = uncurry(
  getOwnPropertyDescriptor(TypedArrayProto, "buffer")!.get as (this: unknown) => ArrayBufferLike,
);
const typedArrayLength = uncurry(
  getOwnPropertyDescriptor(TypedArrayProto, "length")!.get as (this: unknown) => number,
);
const dataViewBuffer = uncurry(
  getOwnPropertyDescriptor(DataView.prototype, "buffer")!.get as (this: unknown) => ArrayBufferLike,
);
const OriginalFunction = Function;
// biome-ignore lint/security/noGlobalEval: the guard wraps eval to see code made from strings.
const originalEval = eval;

type AnyObject = object;
type Site = number | string;

const isObject = (v: unknown): v is AnyObject =>
  (typeof v === "object" && v !== null) || typeof v === "function";

const protoOf = (v: unknown): AnyObject | null => (isObject(v) ? getPrototypeOf(v) : null);

// ---------------------------------------------------------------------------
// State

const registry = new WeakSet<AnyObject>();
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
/** Targets and arguments of bound functions, and proxies' targets and handlers (hidden from reflection). */
const hidden = new WeakMap<AnyObject, unknown[]>();
/** Wrapper → original built-in, for Function.prototype.toString. */
const originals = new WeakMap<AnyObject, AnyObject>();

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
// Registration

const iteratorPrototypes: AnyObject[] = [];
const generatorPrototypes: AnyObject[] = [];

function collectIteratorPrototypes(): void {
  const add = (list: AnyObject[], v: unknown) => {
    if (isObject(v)) arrayPush(list, v);
  };
  add(iteratorPrototypes, getPrototypeOf([][Symbol.iterator]()));
  add(iteratorPrototypes, getPrototypeOf(new Map()[Symbol.iterator]()));
  add(iteratorPrototypes, getPrototypeOf(new Set()[Symbol.iterator]()));
  add(iteratorPrototypes, getPrototypeOf(""[Symbol.iterator]()));
  add(iteratorPrototypes, getPrototypeOf("".matchAll(/(?:)/g)));
  const segmenter = (Intl as { Segmenter?: new () => { segment(s: string): Iterable<unknown> } })
    .Segmenter;
  if (segmenter) {
    add(iteratorPrototypes, getPrototypeOf(new segmenter().segment("")[Symbol.iterator]()));
  }
  const values = [][Symbol.iterator]() as { map?: (f: (x: unknown) => unknown) => unknown };
  if (typeof values.map === "function") add(iteratorPrototypes, protoOf(values.map((x) => x)));
  // Generator objects inherit from their function's `prototype`, which inherits from these.
  add(generatorPrototypes, protoOf(protoOf((function* () {})())));
  add(generatorPrototypes, protoOf(protoOf((async function* () {})())));
}

function includes(list: AnyObject[], v: unknown): boolean {
  for (let i = 0; i < list.length; i++) if (list[i] === v) return true;
  return false;
}

/** Registers `root` and everything reachable from it that is not registered yet. */
function register(root: unknown): void {
  if (!isObject(root) || wsHas(registry, root)) return;
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const o = stack.pop();
    if (!isObject(o) || wsHas(registry, o)) continue;
    wsAdd(registry, o);
    visit(o, stack);
  }
}

function visit(o: AnyObject, stack: unknown[]): void {
  const extra = wmGet(hidden, o) as unknown[] | undefined;
  if (extra !== undefined) {
    for (let i = 0; i < extra.length; i++) arrayPush(stack, extra[i]);
    // A proxy: its target and handler are all there is; reflecting on it would run its traps.
    if (extra.length === 2 && (extra as { proxy?: boolean }).proxy) return;
  }
  let proto: unknown;
  try {
    proto = getPrototypeOf(o);
  } catch {
    proto = null;
  }
  arrayPush(stack, proto);
  if (isObject(proto)) {
    // An iterator's state, or a suspended generator's, changes as it runs.
    if (includes(iteratorPrototypes, proto)) unwatchable("an iterator object");
    else if (
      !includes(generatorPrototypes, proto) &&
      includes(generatorPrototypes, protoOf(proto))
    ) {
      unwatchable("a generator object");
    }
  }
  if (typeof o === "function" && isResolvingFunction(o)) {
    unwatchable("a promise's resolve or reject function");
  }
  const tag = objectToString(o);
  switch (tag) {
    case "[object Promise]":
      watchPromise(o);
      break;
    case "[object Map]":
      try {
        mapForEach(o as Map<unknown, unknown>, (v, k) => {
          arrayPush(stack, k);
          arrayPush(stack, v);
        });
      } catch {}
      break;
    case "[object Set]":
      try {
        setForEach(o as Set<unknown>, (v) => arrayPush(stack, v));
      } catch {}
      break;
    case "[object RegExp]":
      arrayPush(regexps, { re: o as RegExp, lastIndex: (o as RegExp).lastIndex });
      break;
    case "[object FinalizationRegistry]":
    case "[object WebAssembly.Instance]":
    case "[object WebAssembly.Memory]":
    case "[object WebAssembly.Table]":
    case "[object WebAssembly.Global]":
      // (The prototypes carry the same tag.)
      if (hasBrand(tag, o)) unwatchable(`a ${tag.slice(8, -1)}`);
      break;
    case "[object Intl.DateTimeFormat]":
    case "[object Intl.NumberFormat]":
    case "[object Intl.Collator]":
      // Their bound `format`/`compare` functions are made on first use and kept.
      try {
        arrayPush(
          stack,
          (o as { format?: unknown }).format ?? (o as { compare?: unknown }).compare,
        );
      } catch {}
      break;
  }
  if (isView(o)) {
    const length = typedArrayTag(o) !== undefined ? typedArrayLength(o) : 0;
    arrayPush(stack, typedArrayTag(o) !== undefined ? typedArrayBuffer(o) : dataViewBuffer(o));
    // Own properties other than the elements.
    const keys = ownKeys(o);
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      if (typeof key === "string" && i < length) continue;
      pushProperty(o, key, stack);
    }
    return;
  }
  const keys = ownKeys(o);
  for (let i = 0; i < keys.length; i++) pushProperty(o, keys[i]!, stack);
}

/** Brand checks without side effects, for the kinds of objects the guard cannot watch. */
const brands: Record<string, ((o: unknown) => unknown) | undefined> = (() => {
  const getter = (proto: AnyObject | undefined, key: string) => {
    const get = proto ? getOwnPropertyDescriptor(proto, key)?.get : undefined;
    return get ? (o: unknown) => ReflectApply(get, o, []) : undefined;
  };
  const wasm = (globalThis as { WebAssembly?: Record<string, { prototype: AnyObject }> })
    .WebAssembly;
  const unregister = (
    globalThis as { FinalizationRegistry?: { prototype: { unregister: unknown } } }
  ).FinalizationRegistry?.prototype.unregister as ((token: object) => boolean) | undefined;
  return {
    "[object FinalizationRegistry]": unregister
      ? (o: unknown) => ReflectApply(unregister, o, [{}])
      : undefined,
    "[object WebAssembly.Instance]": getter(wasm?.Instance?.prototype, "exports"),
    "[object WebAssembly.Memory]": getter(wasm?.Memory?.prototype, "buffer"),
    "[object WebAssembly.Table]": getter(wasm?.Table?.prototype, "length"),
    "[object WebAssembly.Global]": getter(wasm?.Global?.prototype, "value"),
  };
})();

function hasBrand(tag: string, o: unknown): boolean {
  const check = brands[tag];
  if (check === undefined) return true;
  try {
    check(o);
    return true;
  } catch {
    return false;
  }
}

function pushProperty(o: AnyObject, key: PropertyKey, stack: unknown[]): void {
  let desc: PropertyDescriptor | undefined;
  try {
    desc = getOwnPropertyDescriptor(o, key);
  } catch {
    return;
  }
  if (desc === undefined) return;
  if ("value" in desc) {
    if (isObject(desc.value)) arrayPush(stack, desc.value);
  } else {
    if (desc.get) arrayPush(stack, desc.get);
    if (desc.set) arrayPush(stack, desc.set);
  }
}

/**
 * A settled promise hands its value to whoever awaits it: register the value.
 * (Our reaction runs before any that user code adds after registration.) A
 * pending one can only settle through its resolving functions, which taint
 * when reached (isResolvingFunction), or through promises that do.
 */
function watchPromise(p: AnyObject): void {
  try {
    promiseThen(p as Promise<unknown>, register, register);
  } catch {
    // Not a promise after all (a forged toStringTag).
  }
}

const ThrowTypeError = getOwnPropertyDescriptor(Function.prototype, "caller")?.get;
const FunctionPrototype = Function.prototype;

/**
 * The functions V8 makes to settle a promise (a Promise executor's resolve
 * and reject, those a thenable's `then` receives, Promise.all's element
 * functions) are the only built-in functions without a name, but for two.
 */
function isResolvingFunction(f: AnyObject): boolean {
  // The other two: %ThrowTypeError% and Function.prototype itself.
  if (f === ThrowTypeError || f === FunctionPrototype) return false;
  const name = getOwnPropertyDescriptor(f, "name");
  if (name !== undefined && name.value !== "") return false;
  if (wmGet(originals as WeakMap<object, unknown>, f) !== undefined) return false;
  try {
    return (ReflectApply(functionToString, f, []) as string).endsWith("{ [native code] }");
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// What the instrumented app calls (see instrument.ts)

export interface AppGuard {
  /** The current epoch: 0 while importing, then one per execution once sealed. */
  e: number;
  /** Scratch slot for instrumented private-field reads. */
  $: unknown;
  w<T>(o: T, site: number): T;
  wc<T>(o: T, site: number): T;
  r<T>(v: T): T;
  rv<T>(holder: unknown, v: T): T;
  t(site: number): void;
  roots(thunk: () => unknown[]): void;
  install(config: { eval: boolean }): void;
}

function checkView(o: unknown, site: Site): void {
  if (wsHas(registry, o as AnyObject)) {
    taint(site);
  } else if (isView(o)) {
    const buffer = typedArrayTag(o) !== undefined ? typedArrayBuffer(o) : dataViewBuffer(o);
    if (wsHas(registry, buffer)) taint(site);
  }
}

const appGuard: AppGuard = {
  e: 0,
  $: undefined,
  w(o, site) {
    if (wsHas(registry, o as AnyObject)) taint(site);
    return o;
  },
  wc(o, site) {
    checkView(o, site);
    return o;
  },
  r(v) {
    if (sealed && isObject(v) && !wsHas(registry, v)) register(v);
    return v;
  },
  rv(holder, v) {
    if (wsHas(registry, holder as AnyObject) && isObject(v) && !wsHas(registry, v)) register(v);
    return v;
  },
  t(site) {
    if (sealed) taint(site);
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
// Built-ins that change their receiver or arguments

let installed = false;

function wrapMethod(
  target: AnyObject,
  key: PropertyKey,
  check: (self: unknown, args: unknown[]) => void,
): void {
  const desc = getOwnPropertyDescriptor(target, key);
  const original = desc?.value as ((...args: unknown[]) => unknown) | undefined;
  if (typeof original !== "function") return;
  // A method (not a constructor), named as the original.
  const wrapper = {
    [key](this: unknown, ...args: unknown[]): unknown {
      if (sealed) check(this, args);
      return ReflectApply(original, this, args);
    },
  }[key as string]!;
  defineProperty(wrapper, "length", { value: original.length, configurable: true });
  defineProperty(wrapper, "name", { value: original.name, configurable: true });
  wmSet(originals as WeakMap<object, unknown>, wrapper, original);
  defineProperty(target, key, { ...desc, value: wrapper });
}

const checkThis = (what: string) => (self: unknown) => {
  if (wsHas(registry, self as AnyObject)) taint(what);
};
const checkArg =
  (what: string, index = 0) =>
  (_self: unknown, args: unknown[]) => {
    if (wsHas(registry, args[index] as AnyObject)) taint(what);
  };
const checkThisView = (what: string) => (self: unknown) => checkView(self, what);

function installWrappers(config: { eval: boolean }): void {
  if (installed) return;
  installed = true;
  collectIteratorPrototypes();

  for (const key of ["assign", "defineProperty", "defineProperties", "setPrototypeOf"] as const) {
    wrapMethod(Object, key, checkArg(`Object.${key}`));
  }
  wrapMethod(Object, "freeze", (_s, [o]) => {
    if (wsHas(registry, o as AnyObject) && !isFrozen(o)) taint("Object.freeze");
  });
  wrapMethod(Object, "seal", (_s, [o]) => {
    if (wsHas(registry, o as AnyObject) && !isSealed(o)) taint("Object.seal");
  });
  wrapMethod(Object, "preventExtensions", (_s, [o]) => {
    if (wsHas(registry, o as AnyObject) && isExtensible(o)) taint("Object.preventExtensions");
  });
  for (const key of ["defineProperty", "deleteProperty", "setPrototypeOf"] as const) {
    wrapMethod(Reflect, key, checkArg(`Reflect.${key}`));
  }
  wrapMethod(Reflect, "preventExtensions", (_s, [o]) => {
    if (wsHas(registry, o as AnyObject) && isExtensible(o)) taint("Reflect.preventExtensions");
  });
  wrapMethod(Reflect, "set", (_s, args) => {
    if (wsHas(registry, args[0] as AnyObject)) taint("Reflect.set");
    if (args.length > 3 && wsHas(registry, args[3] as AnyObject)) taint("Reflect.set");
  });
  const objectProto = Object.prototype as Record<string, unknown>;
  for (const key of ["__defineGetter__", "__defineSetter__"]) {
    wrapMethod(objectProto, key, checkThis(`Object.prototype.${key}`));
  }
  const protoDesc = getOwnPropertyDescriptor(objectProto, "__proto__");
  if (protoDesc?.set) {
    const set = protoDesc.set;
    const wrappedSet = function (this: unknown, v: unknown): void {
      if (sealed && wsHas(registry, this as AnyObject)) taint("__proto__");
      ReflectApply(set, this, [v]);
    };
    defineProperty(wrappedSet, "name", { value: "set __proto__", configurable: true });
    wmSet(originals as WeakMap<object, unknown>, wrappedSet, set);
    defineProperty(objectProto, "__proto__", { ...protoDesc, set: wrappedSet });
  }

  for (const key of [
    "copyWithin",
    "fill",
    "pop",
    "push",
    "reverse",
    "shift",
    "sort",
    "splice",
    "unshift",
  ]) {
    wrapMethod(Array.prototype, key, checkThis(`Array.prototype.${key}`));
  }
  for (const key of ["copyWithin", "fill", "reverse", "set", "sort"]) {
    wrapMethod(TypedArrayProto, key, checkThisView(`TypedArray.prototype.${key}`));
  }
  for (const key of ownKeys(DataView.prototype)) {
    if (typeof key === "string" && key.startsWith("set")) {
      wrapMethod(DataView.prototype, key, checkThisView(`DataView.prototype.${key}`));
    }
  }
  for (const key of ["resize", "transfer", "transferToFixedLength"]) {
    wrapMethod(ArrayBuffer.prototype, key, checkThis(`ArrayBuffer.prototype.${key}`));
  }
  for (const key of ["add", "and", "compareExchange", "exchange", "or", "store", "sub", "xor"]) {
    wrapMethod(Atomics, key, (_s, [o]) => checkView(o, `Atomics.${key}`));
  }
  for (const key of ["set", "delete", "clear"])
    wrapMethod(Map.prototype, key, checkThis(`Map.prototype.${key}`));
  for (const key of ["add", "delete", "clear"])
    wrapMethod(Set.prototype, key, checkThis(`Set.prototype.${key}`));
  // An entry keyed by an object made in this execution cannot be reached by a later one.
  const checkEntry = (what: string) => (self: unknown, args: unknown[]) => {
    if (wsHas(registry, self as AnyObject) && wsHas(registry, args[0] as AnyObject)) taint(what);
  };
  for (const key of ["set", "delete"])
    wrapMethod(WeakMap.prototype, key, checkEntry(`WeakMap.prototype.${key}`));
  for (const key of ["add", "delete"])
    wrapMethod(WeakSet.prototype, key, checkEntry(`WeakSet.prototype.${key}`));
  // Values held by a registered WeakMap (for a registered key) or WeakRef are pre-existing too.
  wrapResult(WeakMap.prototype, "get", (_self, args) => wsHas(registry, args[0] as AnyObject));
  if (typeof WeakRef === "function") wrapResult(WeakRef.prototype, "deref");
  for (const key of ownKeys(Date.prototype)) {
    if (typeof key === "string" && key.startsWith("set")) {
      wrapMethod(Date.prototype, key, checkThis(`Date.prototype.${key}`));
    }
  }
  wrapMethod(RegExp.prototype, "compile", checkThis("RegExp.prototype.compile"));
  const captureStackTrace = (Error as { captureStackTrace?: unknown }).captureStackTrace;
  if (typeof captureStackTrace === "function") {
    wrapMethod(Error, "captureStackTrace", checkArg("Error.captureStackTrace"));
  }
  wrapBind();
  wrapProxy();
  wrapDynamicCode(config.eval);
  // toString of a wrapper shows the original's (native) source.
  replaceMethod(
    Function.prototype,
    "toString",
    {
      toString(this: unknown): string {
        const original = isObject(this)
          ? wmGet(originals as WeakMap<object, unknown>, this)
          : undefined;
        return ReflectApply(functionToString, original ?? this, []) as string;
      },
    }.toString,
  );
}

/** Replaces a method by `wrapper`, which must look like it: same name, length and source text. */
function replaceMethod(target: AnyObject, key: string, wrapper: AnyObject): void {
  const desc = getOwnPropertyDescriptor(target, key)!;
  const original = desc.value as AnyObject & { name: string; length: number };
  defineProperty(wrapper, "name", { value: original.name, configurable: true });
  defineProperty(wrapper, "length", { value: original.length, configurable: true });
  wmSet(originals as WeakMap<object, unknown>, wrapper, original);
  defineProperty(target, key, { ...desc, value: wrapper });
}

/** Wraps a method whose result, read from a registered receiver, is pre-existing too. */
function wrapResult(
  target: AnyObject,
  key: string,
  also: (self: unknown, args: unknown[]) => boolean = () => true,
): void {
  const desc = getOwnPropertyDescriptor(target, key);
  const original = desc?.value as ((...args: unknown[]) => unknown) | undefined;
  if (typeof original !== "function") return;
  const wrapper = {
    [key](this: unknown, ...args: unknown[]): unknown {
      const result = ReflectApply(original, this, args);
      if (sealed && wsHas(registry, this as AnyObject) && also(this, args)) register(result);
      return result;
    },
  }[key]!;
  defineProperty(wrapper, "length", { value: original.length, configurable: true });
  wmSet(originals as WeakMap<object, unknown>, wrapper, original);
  defineProperty(target, key, { ...desc, value: wrapper });
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
        wmSet(hidden, bound, [this, ...args]);
        return bound;
      },
    }.bind,
  );
}

function wrapProxy(): void {
  const OriginalProxy = Proxy;
  const record = (proxy: AnyObject, target: unknown, handler: unknown) => {
    const entry = [target, handler] as unknown[] & { proxy?: boolean };
    entry.proxy = true;
    wmSet(hidden, proxy, entry);
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
  const revocable = {
    revocable(target: AnyObject, handler: ProxyHandler<AnyObject>) {
      const result = OriginalProxy.revocable(target, handler);
      record(result.proxy, target, handler);
      const revoke = result.revoke;
      const proxy = result.proxy;
      result.revoke = () => {
        if (sealed && wsHas(registry, proxy)) taint("revoking a proxy");
        revoke();
      };
      return result;
    },
  }.revocable;
  wmSet(originals as WeakMap<object, unknown>, revocable, OriginalProxy.revocable);
  wmSet(originals as WeakMap<object, unknown>, WrappedProxy, OriginalProxy);
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
  if (args.length === 1 && typeof body === "string" && body.trim() === "return this") return;
  importDynamicCode = true;
}

function wrapDynamicCode(wrapEval: boolean): void {
  const constructors: Array<{ original: AnyObject; holder: AnyObject }> = [
    { original: OriginalFunction, holder: globalThis },
  ];
  for (const sample of [async () => {}, function* () {}, async function* () {}]) {
    const proto = getPrototypeOf(sample) as { constructor: AnyObject };
    constructors.push({ original: proto.constructor, holder: proto });
  }
  for (const { original } of constructors) {
    const ctor = original as new (...args: unknown[]) => unknown;
    const name = (original as { name: string }).name;
    const wrapper = function (this: unknown, ...args: unknown[]): unknown {
      dynamicCode(args);
      return ReflectConstruct(ctor, args, new.target ?? ctor);
    };
    defineProperty(wrapper, "name", { value: name, configurable: true });
    defineProperty(wrapper, "length", { value: 1, configurable: true });
    defineProperty(wrapper, "prototype", {
      value: (original as { prototype: unknown }).prototype,
      writable: false,
      enumerable: false,
      configurable: false,
    });
    wmSet(originals as WeakMap<object, unknown>, wrapper, original);
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
    wmSet(originals as WeakMap<object, unknown>, wrapper, originalEval);
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

/**
 * Registers everything that exists now. `loadLazy` evaluates the prelude's
 * lazy globals first, so that their objects exist and are registered.
 */
export function seal(loadLazy: () => void): SealResult {
  if (sealed)
    return {
      reusable: unsafeReason === undefined,
      ...(unsafeReason ? { reason: unsafeReason } : {}),
    };
  loadLazy();
  resetRegExpStatics();
  sealing = true;
  try {
    register(globalThis);
    // Intrinsics only reachable through instances.
    for (const sample of [
      async () => {},
      function* () {},
      async function* () {},
      (function* () {})(),
      (async function* () {})(),
    ]) {
      register(getPrototypeOf(sample));
    }
    for (const proto of iteratorPrototypes) register(proto);
    register(appGuard);
    if (rootsThunk) register(rootsThunk());
    register(rootsThunk);
  } finally {
    sealing = false;
  }
  if (importDynamicCode)
    unsafeReason ??= "the app made code from a string while its modules were imported";
  sealed = true;
  appGuard.e = 1;
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
  appGuard.$ = undefined;
  if (!sealed) return;
  appGuard.e++;
  resetRegExpStatics();
}

export interface ExecutionGuardResult {
  /** The execution changed state that existed before it: the context must not serve another. */
  tainted: boolean;
  reason?: Site;
}

/** Ends an execution: restores what built-ins changed unseen, and reports whether the context is still clean. */
export function endExecution(): ExecutionGuardResult {
  appGuard.$ = undefined;
  if (!sealed) return { tainted: false };
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
  return tainted
    ? { tainted, ...(taintReason !== undefined ? { reason: taintReason } : {}) }
    : { tainted };
}

// ---------------------------------------------------------------------------
// For the prelude's own classes, whose state the app's instrumentation does
// not see (it lives in module-level WeakMaps and in whatwg-url's objects):
// their methods report changes and hand out internal objects through these.

/** A prelude method is about to change `o` (a Headers, an EventTarget, …). */
export function guardWrite(o: unknown, what: string): void {
  if (sealed && wsHas(registry, o as AnyObject)) taint(what);
}

/** A prelude function is about to write into the bytes of `view` (a typed array, DataView or ArrayBuffer). */
export function guardWriteBytes(view: unknown, what: string): void {
  if (sealed) checkView(view, what);
}

/** `value` belongs to `holder` (a URL's searchParams, a Request's headers): pre-existing if `holder` is. */
export function guardReach<T>(holder: unknown, value: T): T {
  if (sealed && wsHas(registry, holder as AnyObject) && isObject(value)) register(value);
  return value;
}
