/**
 * The API port: `GET /version`, the HTTP function API (`httpApi.ts`) and
 * the WebSocket sync endpoint `/api/<client version>/sync`, with CORS so
 * that browser apps on other origins can call it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { brotliDecompressSync, gunzipSync, inflateSync } from "node:zlib";
import { WebSocket, WebSocketServer } from "ws";
import { parseClientVersion, versionAtLeast } from "../sync/protocol.js";
import { Session, type SessionTransport } from "../sync/session.js";
import { AdminApi } from "./adminApi.js";
import type { Deployment } from "./deployment.js";
import { HttpError, handleFunctionCall } from "./httpApi.js";
import { listen } from "./listen.js";
import { PushManager } from "./push.js";
import { requestUrl } from "./requestUrl.js";
import { handleStorageRequest, isStoragePath } from "./storage.js";
import { textFrame } from "./textFrames.js";

export interface ApiServerOptions {
  port: number;
  host?: string;
  /** Where HTTP actions are served (reported to the CLI as the site URL). */
  siteUrl?: string;
}

const SYNC_PATH = /^\/api\/([^/]+)\/sync$/;
const TEXT_FRAME = { binary: false } as const;
/** Largest request body accepted on the HTTP API. */
const MAX_BODY_BYTES = 16 * 1024 * 1024;
/** Largest push (decompressed): a bundled app with its source maps. */
const MAX_PUSH_BYTES = 256 * 1024 * 1024;

/**
 * A session's socket. One class rather than an object literal per connection:
 * a fan-out reads `bufferedAmount` and calls `send` on thousands of sessions in
 * one pass, and a getter made per connection is a different function each
 * time, which leaves that read on V8's slow path.
 */
class SocketTransport implements SessionTransport {
  private corked = false;
  private readonly uncork = () => {
    this.corked = false;
    this.socket.uncork();
  };

  constructor(
    private readonly ws: WebSocket,
    private readonly socket: Duplex,
  ) {}

  // A Buffer holds a message's UTF-8, the same for every session of a
  // fan-out: its text frame is built once and written as it is.
  send(text: string | Buffer): void {
    if (typeof text === "string" || this.ws.readyState !== WebSocket.OPEN) {
      this.ws.send(text, TEXT_FRAME);
    } else {
      this.socket.write(textFrame(text));
    }
  }

  get bufferedAmount(): number {
    return this.ws.bufferedAmount;
  }

  // ws writes every frame on this socket: corking it joins this turn's frames.
  cork(): void {
    if (this.corked) return;
    this.corked = true;
    this.socket.cork();
    process.nextTick(this.uncork);
  }

  close(code: number, reason: string): void {
    this.ws.close(code, reason);
  }
}

export class ApiServer {
  private constructor(
    readonly http: Server,
    private readonly wss: WebSocketServer,
    readonly url: string,
    private readonly pushes: PushManager,
  ) {}

  static async start(deployment: Deployment, options: ApiServerOptions): Promise<ApiServer> {
    const sync = deployment.sync;
    const maxMessage = sync.limits.maxMessageBytes;
    // ws refuses frames above maxPayload by closing with 1009; the session
    // refuses smaller oversized messages with a FatalError first.
    const wss = new WebSocketServer({
      noServer: true,
      maxPayload: maxMessage * 2,
      perMessageDeflate: false,
    });
    const pushes = new PushManager(deployment);
    const admin = new AdminApi(deployment, pushes);
    const http = createServer((req, res) => {
      void handleRequest(deployment, admin, req, res);
    });
    http.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      // What throws here is thrown by the HTTP parser's callback: it would end the process.
      let version: ReturnType<typeof parseClientVersion>;
      try {
        const url = requestUrl(req);
        const m = url === null ? null : SYNC_PATH.exec(url.pathname);
        if (m === null) {
          socket.end("HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
          return;
        }
        version = parseClientVersion(decodeURIComponent(m[1]!));
      } catch {
        // A client version that is not valid percent-encoding, say.
        socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        ws.binaryType = "nodebuffer";
        const session = new Session(sync, new SocketTransport(ws, socket), {
          // TransitionChunk arrived in convex 1.28.
          transitionChunks: version !== null && versionAtLeast(version, 1, 28),
        });
        ws.on("message", (data, isBinary) => {
          if (isBinary) {
            session.receive("\u0000binary");
            return;
          }
          session.receive((data as Buffer).toString("utf8"));
        });
        ws.on("close", () => session.disconnected());
        ws.on("error", () => session.disconnected());
      });
    });
    const url = await listen(http, options.port, options.host);
    deployment.urls = { cloud: url, site: options.siteUrl ?? "" };
    return new ApiServer(http, wss, url, pushes);
  }

  get port(): number {
    return (this.http.address() as AddressInfo).port;
  }

  /** Stops accepting connections and closes every socket. */
  async close(): Promise<void> {
    this.pushes.close();
    for (const ws of this.wss.clients) ws.terminate();
    this.wss.close();
    this.http.closeAllConnections();
    await new Promise<void>((resolve) => this.http.close(() => resolve()));
  }
}

/** The HTTP function API's routes (httpApi.ts). */
const FUNCTION_ROUTES = new Set([
  "/api/query",
  "/api/query_ts",
  "/api/query_at_ts",
  "/api/mutation",
  "/api/action",
  "/api/function",
]);

function isAdminRequest(req: IncomingMessage): boolean {
  return (req.headers.authorization ?? "").startsWith("Convex ");
}

function setCors(req: IncomingMessage, res: ServerResponse): void {
  const origin = req.headers.origin;
  res.setHeader("Access-Control-Allow-Origin", origin ?? "*");
  if (origin !== undefined) res.setHeader("Vary", "Origin");
  res.setHeader("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
  res.setHeader(
    "Access-Control-Allow-Headers",
    req.headers["access-control-request-headers"] ?? "Content-Type, Authorization, Convex-Client",
  );
  res.setHeader("Access-Control-Max-Age", "86400");
}

function reply(res: ServerResponse, status: number, body: string, type = "application/json"): void {
  if (res.headersSent) return;
  res.writeHead(status, { "Content-Type": type, "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

/** Reads a request body of at most `limit` bytes, decompressed as its Content-Encoding says. */
async function readBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<Buffer> {
  const tooLarge = () => new HttpError(413, `Request body too large (limit ${limit} bytes)`);
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > limit) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw tooLarge();
    chunks.push(chunk as Buffer);
  }
  const raw = Buffer.concat(chunks);
  const encoding = (req.headers["content-encoding"] ?? "identity").toLowerCase();
  const options = { maxOutputLength: limit };
  try {
    switch (encoding) {
      case "identity":
        return raw;
      case "br":
        return brotliDecompressSync(raw, options);
      case "gzip":
        return gunzipSync(raw, options);
      case "deflate":
        return inflateSync(raw, options);
    }
  } catch (e) {
    if ((e as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") throw tooLarge();
    throw new HttpError(400, `The request body is not valid ${encoding} data`);
  }
  throw new HttpError(415, `Unsupported Content-Encoding ${JSON.stringify(encoding)}`);
}

async function handleRequest(
  deployment: Deployment,
  admin: AdminApi,
  req: IncomingMessage,
  res: ServerResponse,
) {
  try {
    setCors(req, res);
    const url = requestUrl(req);
    if (url === null) throw new HttpError(400, `Invalid request target ${JSON.stringify(req.url)}`);
    const path = url.pathname;
    if (req.method === "OPTIONS") {
      res.writeHead(204);
      res.end();
      return;
    }
    if (path === "/version" && (req.method === "GET" || req.method === "HEAD")) {
      return reply(res, 200, "tessera", "text/plain");
    }
    // File storage: uploads and downloads stream (no body limit, no buffering).
    if (isStoragePath(path)) return await handleStorageRequest(deployment.files, req, res, url);
    if (admin.handles(req.method ?? "", path)) {
      return reply(res, 200, await admin.handle(req, path, await readBody(req, MAX_PUSH_BYTES)));
    }
    if (path.startsWith("/api/") && !FUNCTION_ROUTES.has(path) && isAdminRequest(req)) {
      // The official CLI retries a 404 for half a minute; tell it at once.
      throw new HttpError(
        400,
        `not supported yet: ${req.method} ${path} (an admin endpoint Tessera does not implement)`,
        "NotSupported",
      );
    }
    if (path.startsWith("/api/")) {
      if (req.method !== "POST")
        throw new HttpError(405, `${req.method} is not allowed on ${path}`);
      const body = (await readBody(req)).toString("utf8");
      const { status, body: out } = await handleFunctionCall(path, req, body, deployment.sync);
      return reply(res, status, out);
    }
    throw new HttpError(404, `No such endpoint: ${path}`, "NotFound");
  } catch (e) {
    if (e instanceof HttpError) {
      return reply(res, e.status, JSON.stringify({ code: e.code, message: e.message }));
    }
    reply(
      res,
      500,
      JSON.stringify({ code: "InternalServerError", message: "Internal server error" }),
    );
  }
}
