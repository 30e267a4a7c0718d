/**
 * The site port: HTTP actions routed by the app's `convex/http.ts`
 * (`httpRouter()` with exact paths and path prefixes). Each request runs as
 * an HTTP action in the actions runtime; a bearer token, if valid, is its
 * identity. No route: 404. An HTTP action that throws before its response
 * started: 500, logged with the function's logs.
 *
 * Bodies are streamed both ways (runtime/httpStreams.ts carries them to and
 * from the isolate). A request body whose Content-Length is at most 64 KiB is
 * read first and handed over with the request (one round trip less); any
 * other is read from the socket a chunk at a time as the action pulls
 * `request.body` (or reads it with text(), json(), …), never whole. A
 * Response whose body is in memory (a string, bytes, a Blob, …) is sent with
 * a Content-Length; one whose body is a ReadableStream is written a chunk at a
 * time as the action produces it (chunked transfer encoding unless the action
 * set a Content-Length, which must then be right), each chunk waiting for the
 * socket to drain.
 *
 * Limits: 20 MiB each way (the Convex docs' limit for HTTP actions), counted
 * as the bytes pass. A declared Content-Length over it is answered 413 at
 * once. A streamed request body that grows over it fails the action's read
 * and is answered 413 (what follows is read and dropped, up to another
 * 20 MiB, then the connection is closed). A streamed response that grows over
 * it fails the action and is cut off. A client that goes away mid-response
 * cancels the action's stream, which ends the action. An action that fails
 * after its response started (its stream errored, it timed out) cuts the
 * response off, so the client sees an incomplete body, and the error is
 * logged. The action's time limit (10 minutes) includes the streaming.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { FunctionError, type HttpRequestMessage } from "../functions/runner.js";
import { SyscallError } from "../runtime/execution.js";
import type { HttpExchange, HttpResponseHead } from "../runtime/httpStreams.js";
import type { UserIdentity } from "../runtime/syscalls.js";
import type { Deployment } from "./deployment.js";
import { listen } from "./listen.js";
import { requestUrl } from "./requestUrl.js";

/** Largest request or response body of an HTTP action. */
const MAX_HTTP_BODY_BYTES = 20 * 1024 * 1024;
/** Request bodies declared (Content-Length) this small are read before the action runs. */
const INLINE_REQUEST_BYTES = 64 * 1024;

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
      // Write errors surface through the exchange; a response must never crash the server.
      res.on("error", () => {});
      void handle(deployment, req, res).catch(() => {
        if (res.headersSent) {
          res.destroy();
          return;
        }
        res.writeHead(500);
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

function text(
  res: ServerResponse,
  status: number,
  body: string,
  extra: Record<string, string> = {},
): void {
  res.writeHead(status, {
    "Content-Type": "text/plain; charset=utf-8",
    "Content-Length": Buffer.byteLength(body),
    ...extra,
  });
  res.end(body);
}

async function readBody(req: IncomingMessage): Promise<Buffer | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_HTTP_BODY_BYTES) return null;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

const TOO_LARGE = `Request body too large (limit ${MAX_HTTP_BODY_BYTES} bytes)`;

/**
 * A request body read as the action pulls it: the socket is paused between
 * reads, so at most a chunk or two is held here (backpressure by pull).
 */
class StreamedRequestBody {
  private queue: Buffer[] = [];
  private ended = false;
  private failure: SyscallError | null = null;
  private waiters: (() => void)[] = [];
  private received = 0;
  private discarding = false;
  /** The body grew over the limit. */
  tooLarge = false;

  constructor(private readonly req: IncomingMessage) {
    req.pause();
    req.on("data", (chunk: Buffer) => this.onData(chunk));
    req.on("end", () => {
      this.ended = true;
      this.notify();
    });
    req.on("error", () => this.fail("The client's request failed while its body was read"));
    req.on("close", () => {
      if (!req.complete) this.fail("The client went away while sending the request body");
    });
  }

  private onData(chunk: Buffer): void {
    this.received += chunk.length;
    if (this.discarding) {
      // Read and dropped so that the response can still reach the client, within reason.
      if (this.received > 2 * MAX_HTTP_BODY_BYTES) this.req.socket.destroy();
      return;
    }
    if (this.received > MAX_HTTP_BODY_BYTES) {
      this.tooLarge = true;
      this.fail(TOO_LARGE);
      this.discard();
      return;
    }
    this.queue.push(chunk);
    this.req.pause();
    this.notify();
  }

  private fail(message: string): void {
    this.failure ??= new SyscallError(message);
    this.notify();
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  async read(): Promise<Buffer | null> {
    for (;;) {
      const chunk = this.queue.shift();
      if (chunk !== undefined) return chunk;
      if (this.failure !== null) throw this.failure;
      if (this.ended) return null;
      this.req.resume();
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** No more of the body is wanted: read and drop the rest. */
  discard(): void {
    if (this.discarding) return;
    this.discarding = true;
    this.queue = [];
    this.req.resume();
  }
}

/** The response headers to send: the action's, less what Node sets itself. */
function headersOf(list: [string, string][]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of list) {
    if (name === "transfer-encoding") continue;
    const prev = out[name];
    out[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  return out;
}

/** One request's bodies for its HTTP action (runtime/httpStreams.ts). */
class SiteExchange implements HttpExchange {
  readonly clientGone: Promise<void>;
  /** The streamed response's status and headers were sent. */
  started = false;
  private sent = 0;

  constructor(
    private readonly res: ServerResponse,
    private readonly body: StreamedRequestBody | null,
  ) {
    this.clientGone = new Promise((resolve) => {
      res.once("close", () => {
        if (!res.writableFinished) resolve();
      });
    });
  }

  readRequest(): Promise<Uint8Array | null> {
    return this.body === null ? Promise.resolve(null) : this.body.read();
  }

  cancelRequest(): void {
    this.body?.discard();
  }

  async startResponse(head: HttpResponseHead, first: Uint8Array): Promise<void> {
    if (this.res.destroyed) throw gone();
    let headers: Record<string, string | string[]>;
    try {
      headers = headersOf(head.headers);
      this.res.writeHead(head.status, head.statusText || undefined, headers);
    } catch (e) {
      // Only a raw syscall can get here (Response checks status and headers): nothing was sent yet.
      throw new SyscallError(`Invalid HTTP response: ${(e as Error).message}`);
    }
    this.started = true;
    // A Content-Length the action set must be the truth: Node fails a write past it, and the end before it.
    if (headers["content-length"] !== undefined) this.res.strictContentLength = true;
    await this.writeResponse(first);
  }

  writeResponse(chunk: Uint8Array): Promise<void> {
    const res = this.res;
    this.sent += chunk.length;
    if (this.sent > MAX_HTTP_BODY_BYTES) {
      return Promise.reject(
        new SyscallError(
          `The HTTP action's response body is larger than the limit of ${MAX_HTTP_BODY_BYTES} bytes`,
        ),
      );
    }
    if (res.destroyed || res.writableEnded) return Promise.reject(gone());
    return new Promise((resolve, reject) => {
      let ok: boolean;
      try {
        ok = res.write(chunk);
      } catch (e) {
        reject(new SyscallError(e instanceof Error ? e.message : String(e)));
        return;
      }
      if (ok) {
        resolve();
        return;
      }
      const drained = () => {
        res.off("close", closed);
        resolve();
      };
      const closed = () => {
        res.off("drain", drained);
        reject(gone());
      };
      res.once("drain", drained);
      res.once("close", closed);
    });
  }
}

function gone(): SyscallError {
  return new SyscallError("The client went away before the response ended");
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
  const url = requestUrl(req, deployment.urls.site || "http://localhost");
  if (url === null) return text(res, 400, `Invalid request target ${JSON.stringify(req.url)}`);
  if (!runner.servesHttp) {
    return text(res, 404, "This deployment has no HTTP actions (convex/http.ts)");
  }
  const method = req.method ?? "GET";
  const declared =
    req.headers["content-length"] === undefined ? null : Number(req.headers["content-length"]);
  if (declared !== null && declared > MAX_HTTP_BODY_BYTES)
    return text(res, 413, TOO_LARGE, { Connection: "close" });
  const hasBody =
    method !== "GET" &&
    method !== "HEAD" &&
    (declared !== null ? declared > 0 : req.headers["transfer-encoding"] !== undefined);
  let inline: string | null = null;
  let streamed: StreamedRequestBody | null = null;
  if (hasBody && declared !== null && declared <= INLINE_REQUEST_BYTES) {
    const bytes = await readBody(req);
    if (bytes === null) return text(res, 413, TOO_LARGE, { Connection: "close" });
    if (bytes.length > 0) inline = bytes.toString("base64");
  } else if (hasBody) {
    const body = new StreamedRequestBody(req);
    streamed = body;
    // What the action left unread is read and dropped, so that the connection stays usable.
    res.once("finish", () => {
      if (!req.complete) body.discard();
    });
  }
  const headers: [string, string][] = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2)
    headers.push([req.rawHeaders[i]!, req.rawHeaders[i + 1]!]);
  const message: HttpRequestMessage = {
    method,
    url: url.href,
    path: url.pathname,
    headers,
    body: inline,
    ...(streamed !== null ? { streamed: true } : {}),
  };
  const exchange = new SiteExchange(res, streamed);
  let outcome: Awaited<ReturnType<typeof runner.httpAction>>;
  try {
    outcome = await runner.httpAction(message, {
      identity: await identityOf(deployment, req),
      exchange,
    });
  } catch (e) {
    const why = e instanceof FunctionError ? e.message : "internal error";
    process.stderr.write(`tessera: HTTP action ${method} ${url.pathname} failed: ${why}\n`);
    // Started: the client must not take what it got for the whole body.
    if (exchange.started) return void res.destroy();
    if (streamed?.tooLarge) return text(res, 413, TOO_LARGE);
    return text(res, 500, `Server Error: ${why}`);
  }
  const response = outcome.response;
  if (response === null) return text(res, 404, `No HttpAction routed for ${url.pathname}`);
  if (response.streamed) {
    if (response.aborted || res.destroyed) return void res.destroy();
    try {
      res.end();
    } catch (e) {
      // A Content-Length the action set and did not fill.
      process.stderr.write(
        `tessera: HTTP action ${method} ${url.pathname} failed: ${(e as Error).message}\n`,
      );
      res.destroy();
    }
    return;
  }
  // The action caught the failed read of a body over the limit: the client is told anyway.
  if (streamed?.tooLarge) return text(res, 413, TOO_LARGE);
  const bytes = response.body === null ? Buffer.alloc(0) : Buffer.from(response.body, "base64");
  if (bytes.length > MAX_HTTP_BODY_BYTES)
    return text(res, 500, `Server Error: the response body is over ${MAX_HTTP_BODY_BYTES} bytes`);
  const out = headersOf(response.headers);
  out["content-length"] = String(bytes.length);
  res.writeHead(response.status, response.statusText || undefined, out);
  res.end(method === "HEAD" ? undefined : bytes);
}
