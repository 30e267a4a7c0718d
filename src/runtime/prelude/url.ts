/**
 * `URL` and `URLSearchParams`, backed by whatwg-url (jsdom's reference
 * implementation of the WHATWG URL standard, with tr46 for IDNA). The module
 * is large (Unicode mapping tables): globals.ts evaluates this file, and
 * whatwg-url with it, on first use of either global in a context rather than
 * in every fresh context.
 *
 * The globals are thin classes holding whatwg-url's objects privately: those
 * carry their implementation objects on a symbol-keyed property, whose
 * methods user code could otherwise call to change a URL behind the context
 * guard's back (guard.ts). Every attribute and method is delegated; setters
 * and mutating methods report to the guard first.
 */
import { guardInternals, guardWrite, weakMapGet } from "./guard.js";
import { inspectCustom, provideGlobals } from "./util.js";

type Callable = (...args: unknown[]) => unknown;

interface WhatwgUrl {
  URL: (new (
    ...args: unknown[]
  ) => object) & {
    prototype: object;
    canParse: Callable;
    parse: Callable;
  };
  URLSearchParams: (new (...args: unknown[]) => object) & { prototype: object };
}

// A require() call, not an import: esbuild bundles the CommonJS package as a
// lazily evaluated module.
const whatwg = require("whatwg-url") as WhatwgUrl;

const ReflectApply = Reflect.apply;
const ReflectConstruct = Reflect.construct;

/** Our objects → whatwg-url's. */
const urls = new WeakMap<object, object>();
const params = new WeakMap<object, object>();
/** A URL's searchParams object (ours), made with the URL. */
const paramsOfUrl = new WeakMap<object, object>();

function inner(map: WeakMap<object, object>, self: unknown, what: string): object {
  const o = typeof self === "object" && self !== null ? weakMapGet(map, self) : undefined;
  if (o === undefined)
    throw new TypeError(`'${what}' called on an object that is not a valid instance`);
  return o;
}

/** `wrapper`, named and sized like `original`. */
function like<F extends object>(wrapper: F, original: { name: string; length: number }): F {
  Object.defineProperty(wrapper, "name", { value: original.name, configurable: true });
  Object.defineProperty(wrapper, "length", { value: original.length, configurable: true });
  return wrapper;
}

export class URL {
  constructor(...args: unknown[]) {
    const url = ReflectConstruct(whatwg.URL, args) as { searchParams: object };
    urls.set(this, url);
    paramsOfUrl.set(this, wrapParams(url.searchParams));
  }

  static canParse(...args: unknown[]): boolean {
    return ReflectApply(whatwg.URL.canParse, whatwg.URL, args) as boolean;
  }

  static parse(...args: unknown[]): URL | null {
    // whatwg-url's own parse checks the arguments (and throws as the standard says).
    if (ReflectApply(whatwg.URL.parse, whatwg.URL, args) === null) return null;
    return ReflectConstruct(URL, args) as URL;
  }
}

export class URLSearchParams {
  constructor(...args: unknown[]) {
    params.set(this, ReflectConstruct(whatwg.URLSearchParams, args));
  }
}

function wrapParams(whatwgParams: object): object {
  const ours = Object.create(URLSearchParams.prototype) as object;
  params.set(ours, whatwgParams);
  return ours;
}

/** Copies the attributes and methods of whatwg-url's prototype onto ours, delegating. */
function delegate(
  ours: object,
  theirs: object,
  map: WeakMap<object, object>,
  interfaceName: string,
  mutators: ReadonlySet<string>,
): void {
  for (const key of Reflect.ownKeys(theirs)) {
    if (key === "constructor") continue;
    const desc = Object.getOwnPropertyDescriptor(theirs, key)!;
    const name = typeof key === "string" ? key : (key.description ?? "");
    const mutates = typeof key === "string" && mutators.has(key);
    if (desc.get || desc.set) {
      const { get, set } = desc;
      Object.defineProperty(ours, key, {
        ...desc,
        get:
          get &&
          like(
            {
              [name](this: unknown) {
                if (interfaceName === "URL" && key === "searchParams") {
                  inner(urls, this, "searchParams");
                  return weakMapGet(paramsOfUrl, this as object);
                }
                return ReflectApply(get, inner(map, this, name), []);
              },
            }[name]!,
            get,
          ),
        set:
          set &&
          like(
            {
              [name](this: unknown, value: unknown) {
                const target = inner(map, this, name);
                guardWrite(this, `a ${interfaceName}`);
                ReflectApply(set, target, [value]);
              },
            }[name]!,
            set,
          ),
      });
    } else if (typeof desc.value === "function") {
      const method = desc.value as Callable;
      Object.defineProperty(ours, key, {
        ...desc,
        value: like(
          {
            [name](this: unknown, ...args: unknown[]) {
              const target = inner(map, this, name);
              if (mutates) guardWrite(this, `a ${interfaceName}`);
              return ReflectApply(method, target, args);
            },
          }[name]!,
          method,
        ),
      });
    } else {
      Object.defineProperty(ours, key, desc);
    }
  }
}

delegate(URL.prototype, whatwg.URL.prototype, urls, "URL", new Set());
delegate(
  URLSearchParams.prototype,
  whatwg.URLSearchParams.prototype,
  params,
  "URLSearchParams",
  new Set(["append", "delete", "set", "sort"]),
);
for (const C of [URL, URLSearchParams]) {
  const desc = Object.getOwnPropertyDescriptor(C.prototype, "constructor")!;
  Object.defineProperty(C.prototype, "constructor", { ...desc, enumerable: false });
}
for (const key of ["canParse", "parse"]) {
  Object.defineProperty(URL, key, {
    ...Object.getOwnPropertyDescriptor(URL, key),
    enumerable: true,
  });
}
Object.defineProperty(URL, "length", { value: 1, configurable: true });

// Iteration: whatwg-url's iterators and forEach would hand user code its own
// objects. Ours are generators (advancing one that existed before taints the
// context) over whatwg-url's live iterator, and forEach passes our object.
{
  const proto = URLSearchParams.prototype as unknown as Record<PropertyKey, unknown>;
  const theirs = whatwg.URLSearchParams.prototype as unknown as Record<PropertyKey, Callable>;
  const iterate = (method: Callable) =>
    function* (this: unknown) {
      const it = ReflectApply(method, inner(params, this, "entries"), []) as Iterator<unknown>;
      for (;;) {
        const step = it.next();
        if (step.done) return;
        yield step.value;
      }
    };
  for (const key of ["entries", "keys", "values"] as const) {
    const method = theirs[key]!;
    Object.defineProperty(proto, key, {
      ...Object.getOwnPropertyDescriptor(proto, key),
      value: like({ [key]: iterate(method) }[key]!, method),
    });
  }
  Object.defineProperty(proto, Symbol.iterator, {
    ...Object.getOwnPropertyDescriptor(proto, Symbol.iterator),
    value: proto.entries,
  });
  const forEach = theirs.forEach!;
  Object.defineProperty(proto, "forEach", {
    ...Object.getOwnPropertyDescriptor(proto, "forEach"),
    value: like(
      {
        forEach(this: URLSearchParams, callback: unknown, thisArg?: unknown) {
          inner(params, this, "forEach");
          if (typeof callback !== "function") {
            // whatwg-url's own error for a callback that is not a function.
            return ReflectApply(forEach, inner(params, this, "forEach"), [callback, thisArg]);
          }
          const entries = (this as unknown as { entries(): Iterable<[string, string]> }).entries();
          for (const [key, value] of entries) ReflectApply(callback, thisArg, [value, key, this]);
        },
      }.forEach,
      forEach,
    ),
  });
}
guardInternals(URL.prototype, (o) => [weakMapGet(urls, o), weakMapGet(paramsOfUrl, o)]);
guardInternals(URLSearchParams.prototype, (o) => [weakMapGet(params, o)]);

Object.defineProperty(URL.prototype, inspectCustom, {
  value: function (
    this: Record<string, unknown>,
    depth: number,
    options: unknown,
    inspect: (v: unknown, o: unknown) => string,
  ) {
    const fields: Record<string, unknown> = {};
    for (const key of [
      "href",
      "origin",
      "protocol",
      "username",
      "password",
      "host",
      "hostname",
      "port",
      "pathname",
      "search",
      "searchParams",
      "hash",
    ]) {
      fields[key] = this[key];
    }
    return `URL ${inspect(fields, { ...(options as object), depth })}`;
  },
  configurable: true,
  writable: true,
});
Object.defineProperty(URLSearchParams.prototype, inspectCustom, {
  value: function (
    this: Iterable<[string, string]>,
    depth: number,
    options: unknown,
    inspect: (v: unknown, o: unknown) => string,
  ) {
    const entries = [...this].map(
      ([k, v]) => `${inspect(k, options)} => ${inspect(v, { ...(options as object), depth })}`,
    );
    return entries.length === 0
      ? "URLSearchParams {}"
      : `URLSearchParams { ${entries.join(", ")} }`;
  },
  configurable: true,
  writable: true,
});

provideGlobals({ URL, URLSearchParams });
