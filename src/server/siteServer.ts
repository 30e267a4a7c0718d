/**
 * The site port: HTTP actions routed by the app's `convex/http.ts`
 * (`httpRouter()` with exact paths and path prefixes). Each request runs as
 * an HTTP action in the actions runtime; a bearer token, if valid, is its
 * identity. No route: 404. An HTTP action that throws: 500, logged with the
 * function's logs. Request and response bodies are limited to 20 MiB (the
 * Convex docs' limit) and are buffered, not streamed.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { FunctionError, type HttpRequestMessage } from "../functions/runner.js";
import type { UserIdentity } from "../runtime/syscalls.js";
import type { Deployment } from "./deployment.js";
import { listen } from "./listen.js";

/** Largest request or response body of an HTTP action. */
const MAX_HTTP_BODY_BYTES = 20 * 1024 * 1024;

export class SiteServer {
  private constructor(
    private readonly http: Server,
    readonly url: string,
  ) {}

  static async start(
    deployment: Deployment,
    options: { port: number; host?: string },
  ): Promise<SiteServer> {
    const http = createServer((req, res) => {
      void handle(deployment, req, res).catch(() => {
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
    });
    return new SiteServer(http, await listen(http, options.port, options.host));
  }

  async close(): Promise<void> {
    this.http.closeAllConnections();
    await new Promise<void>((resolve) => this.http.close(() => resolve()));
  }
}

function text(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, {
    "Content-Type": "text/plain; charset=utf-8",
    "Content-Length": Buffer.byteLength(body),
  });
  res.end(body);
}

async function readBody(req: IncomingMessage): Promise<Buffer | null> {
  if (Number(req.headers["content-length"] ?? 0) > MAX_HTTP_BODY_BYTES) return null;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_HTTP_BODY_BYTES) return null;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

async function identityOf(
  deployment: Deployment,
  req: IncomingMessage,
): Promise<UserIdentity | null> {
  const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? "");
  if (m === null) return null;
  try {
    return (await deployment.auth.verifyUserToken(m[1]!)).identity;
  } catch {
    // An invalid token is no identity: the HTTP action decides what that means.
    return null;
  }
}

async function handle(deployment: Deployment, req: IncomingMessage, res: ServerResponse) {
  const runner = deployment.runner;
  const url = new URL(req.url ?? "/", deployment.urls.site || "http://localhost");
  if (!runner.servesHttp) {
    return text(res, 404, "This deployment has no HTTP actions (convex/http.ts)");
  }
  const body = await readBody(req);
  if (body === null)
    return text(res, 413, `Request body too large (limit ${MAX_HTTP_BODY_BYTES} bytes)`);
  const headers: [string, string][] = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2)
    headers.push([req.rawHeaders[i]!, req.rawHeaders[i + 1]!]);
  const method = req.method ?? "GET";
  const message: HttpRequestMessage = {
    method,
    url: url.href,
    path: url.pathname,
    headers,
    body:
      method === "GET" || method === "HEAD" || body.length === 0 ? null : body.toString("base64"),
  };
  let outcome: Awaited<ReturnType<typeof runner.httpAction>>;
  try {
    outcome = await runner.httpAction(message, { identity: await identityOf(deployment, req) });
  } catch (e) {
    const why = e instanceof FunctionError ? e.message : "internal error";
    process.stderr.write(`tessera: HTTP action ${method} ${url.pathname} failed: ${why}\n`);
    return text(res, 500, `Server Error: ${why}`);
  }
  const response = outcome.response;
  if (response === null) return text(res, 404, `No HttpAction routed for ${url.pathname}`);
  const bytes = response.body === null ? Buffer.alloc(0) : Buffer.from(response.body, "base64");
  if (bytes.length > MAX_HTTP_BODY_BYTES)
    return text(res, 500, `Server Error: the response body is over ${MAX_HTTP_BODY_BYTES} bytes`);
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of response.headers) {
    const prev = out[name];
    out[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  out["content-length"] = String(bytes.length);
  res.writeHead(response.status, response.statusText || undefined, out);
  res.end(method === "HEAD" ? undefined : bytes);
}
