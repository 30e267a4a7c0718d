/**
 * File storage on the API port: uploads through upload URLs
 * (`POST /api/storage/upload?token=…`, answered `{"storageId": …}`) and the
 * file URLs `storage.getUrl` returns (`GET /api/storage/<signature>/<id>`,
 * with `Range`, `ETag` / `If-None-Match` and a `Digest` header). Bodies
 * stream in both directions: a file of any size passes through a chunk at a
 * time. Also opens a deployment's file storage: the files under
 * `DIR/files/`, the HMAC secret in `DIR/storage-secret`.
 */
import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  writeSync,
} from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import type { Database } from "../database/index.js";
import { FileStorage, StorageError } from "../functions/storage.js";
import { LocalFileStore } from "../persistence/fileStore.js";

const SECRET_FILE = "storage-secret";
const UPLOAD_PATH = "/api/storage/upload";
const FILE_PATH = /^\/api\/storage\/([A-Za-z0-9_-]{22})\/([0-9a-z]{31,37})$/;

/** The secret that signs upload tokens and file URLs: generated once, kept in the data dir. */
export function storageSecret(dataDir: string): Buffer {
  const file = join(dataDir, SECRET_FILE);
  if (existsSync(file)) {
    const hex = readFileSync(file, "utf8").trim();
    if (/^[0-9a-f]{64,}$/.test(hex)) return Buffer.from(hex, "hex");
    throw new Error(`${file} does not hold a storage secret (64 or more hex digits)`);
  }
  const secret = randomBytes(32);
  // Written, synced and renamed: a crash never leaves a half-written secret.
  const temp = `${file}.tmp`;
  const fd = openSync(temp, "w", 0o600);
  try {
    writeSync(fd, `${secret.toString("hex")}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temp, file);
  const dir = openSync(dataDir, "r");
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
  return secret;
}

/**
 * The deployment's file storage: local files under `DIR/files/`. Upload URLs
 * expire after an hour, or `TESSERA_UPLOAD_URL_TTL_MS` (for tests).
 */
export async function openFileStorage(db: Database, dataDir: string): Promise<FileStorage> {
  const ttl = Number(process.env.TESSERA_UPLOAD_URL_TTL_MS ?? "");
  return FileStorage.open({
    db,
    files: await LocalFileStore.open(join(dataDir, "files")),
    secret: storageSecret(dataDir),
    ...(Number.isFinite(ttl) && ttl > 0 ? { uploadUrlTtlMs: ttl } : {}),
    onError: (e) =>
      process.stderr.write(`tessera: file storage: ${e instanceof Error ? e.message : e}\n`),
  });
}

/** Whether `path` is one of the storage routes. */
export function isStoragePath(path: string): boolean {
  return path === UPLOAD_PATH || FILE_PATH.test(path);
}

function replyJson(req: IncomingMessage, res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body);
  const headers: Record<string, string | number> = {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(text),
  };
  // A refused upload's body is not read: close rather than read it all to reuse the connection.
  if (!req.complete) headers.Connection = "close";
  res.writeHead(status, headers);
  res.end(text);
}

function refuse(req: IncomingMessage, res: ServerResponse, e: unknown): void {
  if (e instanceof StorageError) {
    replyJson(req, res, e.status, { code: e.code, message: e.message });
    return;
  }
  if (req.destroyed || res.destroyed) return;
  process.stderr.write(
    `tessera: file storage: ${e instanceof Error ? (e.stack ?? e.message) : e}\n`,
  );
  replyJson(req, res, 500, { code: "InternalServerError", message: "Internal server error" });
}

/** Serves a storage route (`isStoragePath`). */
export async function handleStorageRequest(
  storage: FileStorage,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
): Promise<void> {
  try {
    if (url.pathname === UPLOAD_PATH) {
      if (req.method !== "POST")
        throw new StorageError(
          `${req.method} is not allowed on ${UPLOAD_PATH}`,
          "MethodNotAllowed",
          405,
        );
      return await upload(storage, req, res, url);
    }
    if (req.method !== "GET" && req.method !== "HEAD")
      throw new StorageError(`${req.method} is not allowed on a file URL`, "MethodNotAllowed", 405);
    const m = FILE_PATH.exec(url.pathname)!;
    return await download(storage, req, res, m[1]!, m[2]!);
  } catch (e) {
    refuse(req, res, e);
  }
}

async function upload(
  storage: FileStorage,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
): Promise<void> {
  const encoding = (req.headers["content-encoding"] ?? "identity").toLowerCase();
  if (encoding !== "identity")
    throw new StorageError(
      `Uploads are stored as sent: Content-Encoding ${JSON.stringify(encoding)} is not accepted`,
      "UnsupportedContentEncoding",
      415,
    );
  const contentType = req.headers["content-type"] ?? null;
  const storageId = await storage.upload(url.searchParams.get("token") ?? "", req, contentType);
  replyJson(req, res, 200, { storageId });
}

const notFound = () => new StorageError("File not found", "FileNotFound", 404);

async function download(
  storage: FileStorage,
  req: IncomingMessage,
  res: ServerResponse,
  signature: string,
  storageId: string,
): Promise<void> {
  if (!storage.verifyFileSignature(signature, storageId)) throw notFound();
  let doc: Awaited<ReturnType<FileStorage["lookup"]>>;
  try {
    doc = await storage.lookup(storageId);
  } catch (e) {
    if (e instanceof StorageError) throw notFound();
    throw e;
  }
  if (doc === null) throw notFound();
  const etag = `"${doc.sha256}"`;
  const headers: Record<string, string | number> = {
    "Content-Type": doc.contentType ?? "application/octet-stream",
    ETag: etag,
    Digest: `sha-256=${Buffer.from(doc.sha256, "hex").toString("base64")}`,
    "Accept-Ranges": "bytes",
    "X-Content-Type-Options": "nosniff",
    "Access-Control-Expose-Headers": "Content-Range, Accept-Ranges, ETag, Digest",
  };
  const inm = req.headers["if-none-match"];
  if (inm !== undefined && (inm.trim() === "*" || inm.split(",").some((t) => t.trim() === etag))) {
    res.writeHead(304, { ETag: etag });
    res.end();
    return;
  }
  const size = doc.size;
  let range: { start: number; end: number } | undefined;
  const ifRange = req.headers["if-range"];
  const rangeHeader =
    ifRange === undefined || String(ifRange).trim() === etag ? req.headers.range : undefined;
  if (rangeHeader !== undefined) {
    const parsed = parseRange(rangeHeader, size);
    if (parsed === "unsatisfiable") {
      res.writeHead(416, { ...headers, "Content-Range": `bytes */${size}`, "Content-Length": 0 });
      res.end();
      return;
    }
    range = parsed ?? undefined;
  }
  if (req.method === "HEAD") {
    res.writeHead(range === undefined ? 200 : 206, {
      ...headers,
      "Content-Length": range === undefined ? size : range.end - range.start + 1,
      ...(range !== undefined
        ? { "Content-Range": `bytes ${range.start}-${range.end}/${size}` }
        : {}),
    });
    res.end();
    return;
  }
  const content = size === 0 ? null : await storage.open(storageId, range);
  if (content === null && size !== 0) {
    // Deleted since the lookup, or (logged) lost.
    if ((await storage.lookup(storageId)) !== null)
      process.stderr.write(`tessera: file storage: the bytes of ${storageId} are missing\n`);
    throw notFound();
  }
  if (range === undefined) {
    res.writeHead(200, { ...headers, "Content-Length": size });
  } else {
    res.writeHead(206, {
      ...headers,
      "Content-Length": range.end - range.start + 1,
      "Content-Range": `bytes ${range.start}-${range.end}/${size}`,
    });
  }
  if (content === null) {
    res.end();
    return;
  }
  try {
    await pipeline(content.stream, res);
  } catch {
    // The client went away (or the read failed midway): the connection is closed either way.
    content.stream.destroy();
    res.destroy();
  }
}

/**
 * One `bytes=` range of a file of `size` bytes (`a-b`, `a-`, `-n`): the
 * inclusive range, null to ignore the header (malformed, several ranges,
 * another unit: the whole file is served), or "unsatisfiable".
 */
export function parseRange(
  header: string,
  size: number,
): { start: number; end: number } | null | "unsatisfiable" {
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (m === null || (m[1] === "" && m[2] === "")) return null;
  let start: number;
  let end: number;
  if (m[1] === "") {
    const suffix = Number(m[2]);
    if (suffix === 0) return "unsatisfiable";
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== "" && Number(m[2]) < start) return null;
  }
  if (start >= size || size === 0) return "unsatisfiable";
  return { start, end };
}
