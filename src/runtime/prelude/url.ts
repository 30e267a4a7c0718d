/**
 * `URL` and `URLSearchParams` from whatwg-url (jsdom's reference
 * implementation of the WHATWG URL standard, with tr46 for IDNA). The module
 * is large (Unicode mapping tables): globals.ts evaluates this file, and
 * whatwg-url with it, on first use of either global in a context rather than
 * in every fresh context.
 */
import { guardReach, guardWrite } from "./guard.js";
import { inspectCustom, provideGlobals } from "./util.js";

interface WhatwgUrl {
  URL: new (url: string, base?: string) => object;
  URLSearchParams: new (init?: unknown) => object;
}

// A require() call, not an import: esbuild bundles the CommonJS package as a
// lazily evaluated module.
const { URL, URLSearchParams } = require("whatwg-url") as WhatwgUrl;

// whatwg-url keeps its state in objects of its own, which the guard cannot
// follow: its setters and mutating methods report changes (guard.ts), and a
// URL hands out its searchParams as part of itself.
/** `wrapper`, named and sized like `original`. */
function like<F extends object>(wrapper: F, original: { name: string; length: number }): F {
  Object.defineProperty(wrapper, "name", { value: original.name, configurable: true });
  Object.defineProperty(wrapper, "length", { value: original.length, configurable: true });
  return wrapper;
}
for (const [key, desc] of Object.entries(Object.getOwnPropertyDescriptors(URL.prototype))) {
  const { get, set } = desc;
  if (set !== undefined) {
    Object.defineProperty(URL.prototype, key, {
      ...desc,
      set: like(
        {
          [key](this: object, value: unknown) {
            guardWrite(this, "a URL");
            Reflect.apply(set, this, [value]);
          },
        }[key]!,
        set,
      ),
    });
  } else if (key === "searchParams" && get !== undefined) {
    Object.defineProperty(URL.prototype, key, {
      ...desc,
      get: like(
        {
          searchParams(this: object) {
            return guardReach(this, Reflect.apply(get, this, []));
          },
        }.searchParams,
        get,
      ),
    });
  }
}
for (const key of ["append", "delete", "set", "sort"]) {
  const proto = URLSearchParams.prototype as unknown as Record<
    string,
    (...args: unknown[]) => unknown
  >;
  const method = proto[key]!;
  Object.defineProperty(proto, key, {
    ...Object.getOwnPropertyDescriptor(proto, key),
    value: like(
      {
        [key](this: object, ...args: unknown[]) {
          guardWrite(this, "a URLSearchParams");
          return Reflect.apply(method, this, args);
        },
      }[key]!,
      method,
    ),
  });
}

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
