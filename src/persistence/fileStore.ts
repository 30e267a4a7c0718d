/**
 * Where the bytes of stored files live (`ctx.storage`), behind one interface
 * so that an S3-compatible store can replace the local one. A store knows
 * keys and bytes; which files exist as far as the app is concerned is the
 * database's business (the `_storage` table, see functions/storage.ts).
 *
 * `LocalFileStore` keeps each file as one file on the local disk:
 * `DIR/blobs/<key>`, written as `DIR/tmp/<key>.<random>` while it streams in
 * (hashed on the way), synced, then renamed into place with the directory
 * synced: a file is either complete under its key or absent, never half there.
 */
import { createHash, randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { type FileHandle, mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";

export interface PutResult {
  /** Hex SHA-256 of the content. */
  sha256: string;
  size: number;
}

/** An inclusive byte range, as HTTP `Range` gives it. */
export interface ByteRange {
  start: number;
  end: number;
}

export interface FileContent {
  /** The bytes (the range asked for, or all of them). */
  stream: Readable;
  /** Size of the whole file. */
  size: number;
}

export interface StoredKey {
  key: string;
  /** Last modification, in ms since the epoch. */
  mtimeMs: number;
}

export class FileTooLargeError extends Error {
  override name = "FileTooLargeError";
}

export interface FileStore {
  /**
   * Stores the bytes of `source` under `key` (a new key: keys are never
   * reused), durably, streaming: only a chunk at a time is in memory. Resolves
   * once the file is complete under its key; if it rejects (the source
   * failed, `maxBytes` exceeded), nothing is left under the key.
   */
  put(
    key: string,
    source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    options?: { contentType?: string | null; maxBytes?: number },
  ): Promise<PutResult>;
  /** The file under `key` (or a range of it), or null if there is none. */
  get(key: string, range?: ByteRange): Promise<FileContent | null>;
  /** Removes the file under `key`; a missing file is fine. */
  delete(key: string): Promise<void>;
  /** Every stored key (for sweeping files no document records). */
  list(): AsyncIterable<StoredKey>;
  /** Removes what interrupted `put`s left behind that is older than `olderThanMs`; returns how many. */
  removeStaleTemporaries(olderThanMs: number): Promise<number>;
}

/** Keys are file names: letters, digits, `_` and `-`. */
const KEY = /^[A-Za-z0-9_-]{1,128}$/;

function checkKey(key: string): void {
  if (!KEY.test(key)) throw new Error(`Invalid file key ${JSON.stringify(key)}`);
}

/** Makes a directory's entries durable (after a file in it was created or renamed). */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export class LocalFileStore implements FileStore {
  private readonly blobs: string;
  private readonly tmp: string;

  private constructor(readonly dir: string) {
    this.blobs = join(dir, "blobs");
    this.tmp = join(dir, "tmp");
  }

  static async open(dir: string): Promise<LocalFileStore> {
    const store = new LocalFileStore(dir);
    await mkdir(store.blobs, { recursive: true });
    await mkdir(store.tmp, { recursive: true });
    await syncDirectory(dir);
    return store;
  }

  async put(
    key: string,
    source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    options: { contentType?: string | null; maxBytes?: number } = {},
  ): Promise<PutResult> {
    checkKey(key);
    const temp = join(this.tmp, `${key}.${randomBytes(6).toString("hex")}`);
    const hash = createHash("sha256");
    const max = options.maxBytes ?? Number.POSITIVE_INFINITY;
    let size = 0;
    let handle: FileHandle | null = await open(temp, "wx", 0o600);
    try {
      for await (const chunk of source) {
        size += chunk.length;
        if (size > max) throw new FileTooLargeError(`The file is larger than ${max} bytes`);
        hash.update(chunk);
        // One write at a time: the source is not read further until it is done (backpressure).
        let offset = 0;
        while (offset < chunk.length) {
          const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset);
          offset += bytesWritten;
        }
      }
      await handle.sync();
      await handle.close();
      handle = null;
      await rename(temp, join(this.blobs, key));
      await syncDirectory(this.blobs);
    } catch (e) {
      await handle?.close().catch(() => {});
      await rm(temp, { force: true }).catch(() => {});
      throw e;
    }
    return { sha256: hash.digest("hex"), size };
  }

  async get(key: string, range?: ByteRange): Promise<FileContent | null> {
    checkKey(key);
    let handle: FileHandle;
    try {
      handle = await open(join(this.blobs, key), "r");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw e;
    }
    try {
      const { size } = await handle.stat();
      // The stream owns the handle (and closes it): a file deleted meanwhile stays readable.
      const stream = handle.createReadStream(
        range === undefined
          ? { highWaterMark: 256 * 1024 }
          : { start: range.start, end: range.end, highWaterMark: 256 * 1024 },
      );
      return { stream, size };
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    await rm(join(this.blobs, key), { force: true });
  }

  async *list(): AsyncIterable<StoredKey> {
    for (const name of await readdir(this.blobs)) {
      if (!KEY.test(name)) continue;
      try {
        const s = await stat(join(this.blobs, name));
        yield { key: name, mtimeMs: s.mtimeMs };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      }
    }
  }

  async removeStaleTemporaries(olderThanMs: number): Promise<number> {
    const cutoff = Date.now() - olderThanMs;
    let removed = 0;
    for (const name of await readdir(this.tmp)) {
      const path = join(this.tmp, name);
      try {
        if ((await stat(path)).mtimeMs <= cutoff) {
          await rm(path, { force: true });
          removed++;
        }
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      }
    }
    return removed;
  }
}
