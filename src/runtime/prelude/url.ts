/**
 * `URL` and `URLSearchParams` from whatwg-url (jsdom's reference
 * implementation of the WHATWG URL standard, with tr46 for IDNA). The module
 * is large (Unicode mapping tables), so it is evaluated on first use of either
 * global rather than in every fresh context.
 */
import { cloneHooks } from "./structured_clone.js";
import { inspectCustom } from "./util.js";

interface WhatwgUrl {
  URL: new (url: string, base?: string) => object;
  URLSearchParams: new (init?: unknown) => object;
}

let loaded: WhatwgUrl | undefined;

/** Evaluates whatwg-url (once) and returns its classes. */
export function loadUrl(): WhatwgUrl {
  if (loaded === undefined) {
    // A require() call, not an import: esbuild bundles it as a lazily
    // evaluated module, so the cost is paid on first use only.
    const mod = require("whatwg-url") as WhatwgUrl;
    const { URL, URLSearchParams } = mod;
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
    loaded = { URL, URLSearchParams };
  }
  return loaded;
}

cloneHooks.refused.push({
  test: (v) => loaded !== undefined && v instanceof loaded.URL,
  name: "URL",
});
cloneHooks.refused.push({
  test: (v) => loaded !== undefined && v instanceof loaded.URLSearchParams,
  name: "URLSearchParams",
});
