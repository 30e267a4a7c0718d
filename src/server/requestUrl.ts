/**
 * A request's URL with its path as the client sent it. `new URL(req.url, base)`
 * reads a target that starts with `//` as a host (`//hello` becomes `/` on the
 * host `hello`) and throws on `//` alone, which turned a request for `//` into
 * a 500 and, in the WebSocket upgrade handler, an exception that ended the
 * process. A path is appended to the origin instead.
 */
import type { IncomingMessage } from "node:http";

/** The URL of `req` against `origin` (scheme and host, no path); null if the target is none. */
export function requestUrl(req: IncomingMessage, origin = "http://localhost"): URL | null {
  const target = req.url ?? "/";
  try {
    // Origin-form (a path) as sent; absolute-form (`http://host/path`, proxies) as it is.
    return new URL(target.startsWith("/") ? `${new URL(origin).origin}${target}` : target);
  } catch {
    return null;
  }
}
