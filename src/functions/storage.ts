/**
 * File storage (`ctx.storage`): every stored file is a document of the
 * system table `_storage` (`sha256` hex, `size`, `contentType?`, the fields
 * the Convex docs give) whose `_id` is the storage ID, and bytes in a
 * `FileStore` (persistence/fileStore.ts) under that same ID.
 *
 * Crash safety: the ID is allocated first, the bytes are stored under it
 * (complete and synced, or not at all), and only then is the document
 * committed. A crash in between leaves a file no document records, which
 * `sweep` removes later; never a document without its file. Deleting commits
 * the document's removal and then removes the file (a commit listener sees
 * every `_storage` document disappear, whoever deleted it); a crash in
 * between again leaves only an orphan.
 *
 * Upload URLs carry a token: a random nonce and an expiry, signed with the
 * deployment's storage secret (HMAC-SHA256). A token is single-use: its
 * nonce is recorded in `_storage_upload_tokens` in the transaction that
 * inserts the `_storage` document, so of two uploads with one token at most
 * one commits. File URLs are signed too: knowing a storage ID (which the docs
 * call safe to share) does not give access to the file, only its URL does.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import {
  type CommitRecord,
  type Database,
  DatabaseError,
  type Transaction,
} from "../database/index.js";
import type { ByteRange, FileContent, FileStore } from "../persistence/fileStore.js";
import { decodeDocumentId, decodeKey, newDocumentId, ValueError } from "../values/index.js";

export const STORAGE_TABLE = "_storage";
export const UPLOAD_TOKENS_TABLE = "_storage_upload_tokens";
const BY_SHA256 = "by_sha256";
const BY_NONCE = "by_nonce";
const BY_EXPIRY = "by_expiry";
const SYSTEM = { system: true } as const;

/** How long an upload URL is valid (the Convex docs: one hour). */
export const DEFAULT_UPLOAD_URL_TTL_MS = 60 * 60_000;
/** A file no document records is removed by a sweep once it is this old. */
const DEFAULT_ORPHAN_AGE_MS = 10 * 60_000;
const DEFAULT_SWEEP_INTERVAL_MS = 60 * 60_000;
/** Largest file `get` reads into memory for a function (the bytes then cross into its isolate). */
export const MAX_IN_MEMORY_FILE_BYTES = 64 * 1024 * 1024;
/** Files checked against the table per read transaction when sweeping. */
const SWEEP_BATCH = 500;

/** A file's metadata as `storage.getMetadata` returns it. */
export interface FileMetadata {
  storageId: string;
  /** Hex SHA-256 of the content. */
  sha256: string;
  size: number;
  contentType: string | null;
}

/** A refusal the caller can act on; `status` is the HTTP status it maps to. */
export class StorageError extends Error {
  override name = "StorageError";
  constructor(
    message: string,
    readonly code: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

export interface FileStorageOptions {
  db: Database;
  files: FileStore;
  /** Key of the HMACs of upload tokens and file URLs (at least 32 random bytes, kept across restarts). */
  secret: Buffer;
  uploadUrlTtlMs?: number;
  /** Age after which a file no document records, or an interrupted upload, is removed. */
  orphanAgeMs?: number;
  /** How often sweeps run besides the one at open (0: only at open). */
  sweepIntervalMs?: number;
  onError?: (e: unknown) => void;
}

function base64url(b: Buffer): string {
  return b.toString("base64url");
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export class FileStorage {
  readonly files: FileStore;
  private readonly db: Database;
  private readonly secret: Buffer;
  private readonly ttlMs: number;
  private readonly orphanAgeMs: number;
  private readonly onError: (e: unknown) => void;
  /** Files being written or just written whose document is not committed yet: never swept. */
  private readonly inFlight = new Set<string>();
  private readonly unsubscribe: () => void;
  private timer: NodeJS.Timeout | null = null;
  private sweeping: Promise<unknown> | null = null;
  private closed = false;

  private constructor(options: FileStorageOptions) {
    this.db = options.db;
    this.files = options.files;
    this.secret = options.secret;
    this.ttlMs = options.uploadUrlTtlMs ?? DEFAULT_UPLOAD_URL_TTL_MS;
    this.orphanAgeMs = options.orphanAgeMs ?? DEFAULT_ORPHAN_AGE_MS;
    this.onError = options.onError ?? (() => {});
    this.unsubscribe = this.db.onPublish((commits) => this.afterCommits(commits));
  }

  /**
   * Creates the system tables if needed and starts a sweep (in the
   * background: it lists every file), then sweeps periodically.
   */
  static async open(options: FileStorageOptions): Promise<FileStorage> {
    await ensureStorageTables(options.db);
    const storage = new FileStorage(options);
    void storage.sweep().catch((e) => storage.report(e));
    const every = options.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS;
    if (every > 0) {
      storage.timer = setInterval(() => {
        void storage.sweep().catch((e) => storage.report(e));
      }, every);
      storage.timer.unref();
    }
    return storage;
  }

  /** Background failures, unless closed meanwhile (a sweep cut off by shutdown is not news). */
  private report(e: unknown): void {
    if (!this.closed) this.onError(e);
  }

  close(): void {
    this.closed = true;
    this.unsubscribe();
    if (this.timer !== null) clearInterval(this.timer);
  }

  private get tableNumber(): number {
    const table = this.db.catalog.table(STORAGE_TABLE);
    if (table === undefined) throw new Error("the _storage table does not exist");
    return table.number;
  }

  private sign(purpose: string, payload: string): string {
    return base64url(
      createHmac("sha256", this.secret).update(`${purpose}\n${payload}`).digest().subarray(0, 16),
    );
  }

  // ---- URLs ------------------------------------------------------------------

  /** A new upload URL: single-use, valid for `uploadUrlTtlMs`. */
  uploadUrl(baseUrl: string, nowMs = Date.now()): string {
    const payload = `${randomBytes(16).toString("hex")}.${nowMs + this.ttlMs}`;
    return `${baseUrl}/api/storage/upload?token=${payload}.${this.sign("upload", payload)}`;
  }

  /** The URL that serves a file (signed: the storage ID alone does not give access). */
  fileUrl(baseUrl: string, storageId: string): string {
    return `${baseUrl}/api/storage/${this.sign("file", storageId)}/${storageId}`;
  }

  /** Whether `signature` is the one `fileUrl` puts in the URL of `storageId`. */
  verifyFileSignature(signature: string, storageId: string): boolean {
    return safeEqual(signature, this.sign("file", storageId));
  }

  /** Checks an upload token's signature and expiry; its nonce and expiry. */
  verifyUploadToken(token: string, nowMs = Date.now()): { nonce: string; expiresMs: number } {
    const m = /^([0-9a-f]{32})\.(\d{1,16})\.([A-Za-z0-9_-]{22})$/.exec(token);
    if (m === null || !safeEqual(m[3]!, this.sign("upload", `${m[1]}.${m[2]}`)))
      throw new StorageError(
        "Invalid upload URL: its token is not valid",
        "InvalidUploadToken",
        400,
      );
    const expiresMs = Number(m[2]);
    if (expiresMs <= nowMs)
      throw new StorageError(
        "This upload URL has expired: generate a new one with ctx.storage.generateUploadUrl()",
        "UploadUrlExpired",
        410,
      );
    return { nonce: m[1]!, expiresMs };
  }

  // ---- in a function's transaction ---------------------------------------------

  /** The `_storage` document of a storage ID in `tx` (read set included), or null. */
  async document(tx: Transaction, storageId: string): Promise<StorageDoc | null> {
    this.checkId(storageId);
    return (await tx.get(storageId)) as StorageDoc | null;
  }

  async getUrl(tx: Transaction, storageId: string, baseUrl: string): Promise<string | null> {
    const doc = await this.document(tx, storageId);
    return doc === null ? null : this.fileUrl(baseUrl, storageId);
  }

  async getMetadata(tx: Transaction, storageId: string): Promise<FileMetadata | null> {
    const doc = await this.document(tx, storageId);
    return doc === null ? null : metadataOf(doc);
  }

  /** Deletes a file's document in `tx`; its bytes go once that commits. */
  async delete(tx: Transaction, storageId: string): Promise<void> {
    const doc = await this.document(tx, storageId);
    if (doc === null)
      throw new StorageError(
        `File with storage ID ${JSON.stringify(storageId)} does not exist`,
        "StorageIdNotFound",
        404,
      );
    await tx.delete(storageId, SYSTEM);
  }

  /**
   * Stores `bytes` and records the file in `tx` (a mutation's `store`). If
   * `tx` never commits, the file is an orphan for the next sweep.
   */
  async storeIn(
    tx: Transaction,
    bytes: Uint8Array,
    contentType: string | null,
    expectedSha256?: string,
  ): Promise<string> {
    const id = newDocumentId(this.tableNumber);
    this.inFlight.add(id);
    try {
      const put = await this.putChecked(id, [bytes], contentType, expectedSha256);
      await tx.insert(STORAGE_TABLE, storageFields(put, contentType), { ...SYSTEM, id });
      return id;
    } finally {
      this.inFlight.delete(id);
    }
  }

  /** A file's content and type in `tx` (a mutation's `get`), whole, in memory. */
  async readIn(
    tx: Transaction,
    storageId: string,
  ): Promise<{ bytes: Buffer; contentType: string | null } | null> {
    const doc = await this.document(tx, storageId);
    const bytes = doc === null ? null : await this.readWhole(storageId, doc);
    // Bytes gone meanwhile: deleted since `tx` began, so `tx` will conflict and run again.
    return bytes === null ? null : { bytes, contentType: doc!.contentType ?? null };
  }

  // ---- on their own (actions, HTTP) -------------------------------------------------

  /**
   * An upload through an upload URL: checks the token, streams `source` into
   * the store, then records the file and spends the token in one
   * transaction. Resolves with the new storage ID.
   */
  async upload(
    token: string,
    source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    contentType: string | null,
  ): Promise<string> {
    const { nonce, expiresMs } = this.verifyUploadToken(token);
    // Refuse a spent token before reading any bytes (checked again when recording).
    const tx = this.db.begin({ readOnly: true });
    try {
      if (await tokenSpent(tx, nonce)) throw tokenSpentError();
    } finally {
      tx.abort();
    }
    return this.storeStream(source, contentType, undefined, async (t) => {
      if (await tokenSpent(t, nonce)) throw tokenSpentError();
      await t.insert(UPLOAD_TOKENS_TABLE, { nonce, expiresMs }, SYSTEM);
    });
  }

  /** Stores bytes as a new file in a transaction of its own (an action's `store`). */
  store(bytes: Uint8Array, contentType: string | null, expectedSha256?: string): Promise<string> {
    return this.storeStream([bytes], contentType, expectedSha256);
  }

  /** The `_storage` document of a storage ID at the latest snapshot, or null. */
  async lookup(storageId: string): Promise<StorageDoc | null> {
    const tx = this.db.begin({ readOnly: true });
    try {
      return await this.document(tx, storageId);
    } finally {
      tx.abort();
    }
  }

  /** A file's content and type (an action's `get`), whole, in memory. */
  async read(storageId: string): Promise<{ bytes: Buffer; contentType: string | null } | null> {
    const doc = await this.lookup(storageId);
    const bytes = doc === null ? null : await this.readWhole(storageId, doc);
    return bytes === null ? null : { bytes, contentType: doc!.contentType ?? null };
  }

  /** Streams a file (or a range of it) whose document `lookup` found; null if its bytes are gone. */
  open(storageId: string, range?: ByteRange): Promise<FileContent | null> {
    return this.files.get(storageId, range);
  }

  /** Runs `f` in a transaction of its own (retried on conflicts). */
  async inTransaction<T>(f: (tx: Transaction) => Promise<T>): Promise<T> {
    return (await this.db.run(f)).value;
  }

  private async storeStream(
    source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    contentType: string | null,
    expectedSha256: string | undefined,
    alsoInTx?: (tx: Transaction) => Promise<void>,
  ): Promise<string> {
    const id = newDocumentId(this.tableNumber);
    this.inFlight.add(id);
    try {
      const put = await this.putChecked(id, source, contentType, expectedSha256);
      try {
        await this.db.run(async (tx) => {
          await alsoInTx?.(tx);
          await tx.insert(STORAGE_TABLE, storageFields(put, contentType), { ...SYSTEM, id });
        });
      } catch (e) {
        await this.files.delete(id).catch(this.onError);
        throw e;
      }
      return id;
    } finally {
      this.inFlight.delete(id);
    }
  }

  private async putChecked(
    id: string,
    source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    contentType: string | null,
    expectedSha256: string | undefined,
  ): Promise<{ sha256: string; size: number }> {
    const put = await this.files.put(id, source, { contentType });
    if (expectedSha256 !== undefined && !sameDigest(put.sha256, expectedSha256)) {
      await this.files.delete(id).catch(this.onError);
      throw new StorageError(
        `The file's SHA-256 (${put.sha256}) does not match the one given (${expectedSha256})`,
        "Sha256Mismatch",
      );
    }
    return put;
  }

  /** A file's bytes; null if they were removed after `doc` was read (a deletion committed since). */
  private async readWhole(storageId: string, doc: StorageDoc): Promise<Buffer | null> {
    if (doc.size > MAX_IN_MEMORY_FILE_BYTES)
      throw new StorageError(
        `not supported yet: reading a file larger than ${MAX_IN_MEMORY_FILE_BYTES} bytes into a function (this one has ${doc.size}); serve it with storage.getUrl instead`,
        "FileTooLarge",
      );
    const content = await this.files.get(storageId);
    if (content === null) {
      if ((await this.lookup(storageId)) === null) return null;
      throw new Error(`the bytes of stored file ${storageId} are missing`);
    }
    const chunks: Buffer[] = [];
    for await (const chunk of content.stream) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  private checkId(storageId: string): void {
    let tableNumber: number;
    try {
      tableNumber = decodeDocumentId(storageId).tableNumber;
    } catch (e) {
      if (e instanceof ValueError)
        throw new StorageError(
          `Invalid storage ID ${JSON.stringify(storageId)}`,
          "InvalidStorageId",
        );
      throw e;
    }
    if (tableNumber !== this.tableNumber)
      throw new StorageError(
        `Invalid storage ID ${JSON.stringify(storageId)}: it is the ID of a document in another table`,
        "InvalidStorageId",
      );
  }

  // ---- removing bytes nobody records -----------------------------------------------

  /** After commits that wrote `_storage` documents: the bytes of the ones now gone are removed. */
  private afterCommits(commits: readonly CommitRecord[]): void {
    const table = this.db.catalog.table(STORAGE_TABLE);
    if (table === undefined || this.closed) return;
    const byId = this.db.catalog.byIdIndex(table.number).number;
    const ids: string[] = [];
    for (const c of commits)
      for (const k of c.keys)
        if (k.indexNumber === byId) {
          const id = decodeKey(k.key)[0];
          if (typeof id === "string") ids.push(id);
        }
    if (ids.length > 0) void this.removeUnrecorded(ids).catch((e) => this.report(e));
  }

  /** Removes the bytes of those of `ids` that no document records (now). */
  private async removeUnrecorded(ids: readonly string[]): Promise<number> {
    let removed = 0;
    for (let i = 0; i < ids.length; i += SWEEP_BATCH) {
      const gone: string[] = [];
      const tx = this.db.begin({ readOnly: true });
      try {
        for (const id of ids.slice(i, i + SWEEP_BATCH))
          if ((await tx.get(id)) === null) gone.push(id);
      } finally {
        tx.abort();
      }
      for (const id of gone) await this.files.delete(id);
      removed += gone.length;
    }
    return removed;
  }

  /**
   * Removes interrupted uploads and files no document records, once older
   * than `orphanAgeMs` (a crash between storing and recording, a deletion
   * whose file removal was cut off, a mutation's `store` that never
   * committed), and spent upload tokens past their expiry.
   */
  sweep(): Promise<{ temporaries: number; orphans: number; tokens: number }> {
    const run = async () => {
      const temporaries = await this.files.removeStaleTemporaries(this.orphanAgeMs);
      const cutoff = Date.now() - this.orphanAgeMs;
      const storageTable = this.tableNumber;
      let orphans = 0;
      let batch: string[] = [];
      for await (const { key, mtimeMs } of this.files.list()) {
        if (this.closed) break;
        if (mtimeMs > cutoff || this.inFlight.has(key)) continue;
        try {
          if (decodeDocumentId(key).tableNumber !== storageTable) continue;
        } catch {
          continue;
        }
        batch.push(key);
        if (batch.length >= SWEEP_BATCH) {
          orphans += await this.removeUnrecorded(batch);
          batch = [];
        }
      }
      if (batch.length > 0 && !this.closed) orphans += await this.removeUnrecorded(batch);
      const tokens = this.closed ? 0 : await this.removeExpiredTokens();
      return { temporaries, orphans, tokens };
    };
    // One sweep at a time.
    const next = (this.sweeping ?? Promise.resolve()).catch(() => {}).then(run);
    this.sweeping = next;
    return next;
  }

  private async removeExpiredTokens(): Promise<number> {
    let removed = 0;
    for (;;) {
      const { value } = await this.db.run(async (tx) => {
        const expired = await tx
          .query(UPLOAD_TOKENS_TABLE, BY_EXPIRY, [
            { type: "Lt", fieldPath: "expiresMs", value: Date.now() },
          ])
          .next(SWEEP_BATCH);
        for (const doc of expired) await tx.delete(doc._id as string, SYSTEM);
        return expired.length;
      });
      removed += value;
      if (value < SWEEP_BATCH) return removed;
    }
  }
}

/** A `_storage` document. */
export interface StorageDoc {
  _id: string;
  _creationTime: number;
  sha256: string;
  size: number;
  contentType?: string;
}

function storageFields(
  put: { sha256: string; size: number },
  contentType: string | null,
): Record<string, string | number> {
  return {
    sha256: put.sha256,
    size: put.size,
    ...(contentType !== null && contentType !== "" ? { contentType } : {}),
  };
}

function metadataOf(doc: StorageDoc): FileMetadata {
  return {
    storageId: doc._id,
    sha256: doc.sha256,
    size: doc.size,
    contentType: doc.contentType ?? null,
  };
}

/** Compares a hex digest with one given in hex or base64. */
function sameDigest(hex: string, given: string): boolean {
  if (given.toLowerCase() === hex) return true;
  const raw = Buffer.from(hex, "hex");
  return (
    given.replace(/=+$/, "") === raw.toString("base64").replace(/=+$/, "") ||
    given === raw.toString("base64url")
  );
}

async function tokenSpent(tx: Transaction, nonce: string): Promise<boolean> {
  const found = await tx
    .query(UPLOAD_TOKENS_TABLE, BY_NONCE, [{ type: "Eq", fieldPath: "nonce", value: nonce }])
    .next(1);
  return found.length > 0;
}

function tokenSpentError(): StorageError {
  return new StorageError(
    "This upload URL was already used: each one accepts a single upload. Generate a new one with ctx.storage.generateUploadUrl()",
    "UploadUrlUsed",
    409,
  );
}

/** Creates `_storage` and the upload tokens table (with their indexes) if the deployment has none yet. */
export async function ensureStorageTables(db: Database): Promise<void> {
  if (
    db.catalog.table(STORAGE_TABLE) !== undefined &&
    db.catalog.table(UPLOAD_TOKENS_TABLE) !== undefined
  )
    return;
  await db.run(async (tx) => {
    if (tx.table(STORAGE_TABLE) === undefined)
      await tx.createIndex(STORAGE_TABLE, BY_SHA256, ["sha256"], SYSTEM);
    if (tx.table(UPLOAD_TOKENS_TABLE) === undefined) {
      await tx.createIndex(UPLOAD_TOKENS_TABLE, BY_NONCE, ["nonce"], SYSTEM);
      await tx.createIndex(UPLOAD_TOKENS_TABLE, BY_EXPIRY, ["expiresMs"], SYSTEM);
    }
  });
  await db.waitForBackgroundWork();
}

/** Turns storage and database refusals into a message for user code. */
export function isStorageRefusal(e: unknown): e is StorageError | DatabaseError {
  return e instanceof StorageError || e instanceof DatabaseError;
}
