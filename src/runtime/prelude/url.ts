/**
 * `URL` and `URLSearchParams` from whatwg-url (jsdom's reference
 * implementation of the WHATWG URL standard, with tr46 for IDNA). The module
 * is large (Unicode mapping tables): globals.ts evaluates this file, and
 * whatwg-url with it, on first use of either global in a context rather than
 * in every fresh context.
 */
import { inspectCustom, provideGlobals } from "./util.js";

interface WhatwgUrl {
  URL: new (url: string, base?: string) => object;
  URLSearchParams: new (init?: unknown) => object;
}

// A require() call, not an import: esbuild bundles the CommonJS package as a
// lazily evaluated module.
const { URL, URLSearchParams } = require("whatwg-url") as WhatwgUrl;

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
