/**
 * File storage below the HTTP layer (functions/storage.ts over a real
 * database and a `LocalFileStore`): documents inserted under IDs chosen
 * beforehand, upload tokens (signature, expiry, single use, also when two
 * uploads race), bytes removed once their document's deletion commits (and
 * not when it aborts), sweeps of orphans, interrupted uploads and expired
 * tokens, and failed stores that leave nothing behind.
 */
import { createHash } from "node:crypto";
import { existsSync, readdirSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DatabaseError } from "../../src/database/index.js";
import {
  FileStorage,
  STORAGE_TABLE,
  StorageError,
  UPLOAD_TOKENS_TABLE,
} from "../../src/functions/storage.js";
import { LocalFileStore } from "../../src/persistence/fileStore.js";
import { newDocumentId } from "../../src/values/index.js";
import { openTestDb, type TestDb, waitFor } from "../helpers.js";

/** How long waits here last and how often they look: 5 s, every 10 ms. */
const WAIT = [5000, 10] as const;

const BASE = "http://tessera.test";
const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

let t: TestDb;
let storage: FileStorage;
let filesDir: string;

beforeEach(async () => {
  t = await openTestDb();
  filesDir = join(t.dir, "files");
  storage = await FileStorage.open({
    db: t.db,
    files: await LocalFileStore.open(filesDir),
    secret: Buffer.alloc(32, 7),
    sweepIntervalMs: 0,
  });
  // The sweep `open` starts (sweeps run one after the other).
  await storage.sweep();
});

afterEach(async () => {
  storage?.close();
  await t?.close();
});

const tokenOf = (url: string) => new URL(url).searchParams.get("token")!;
const blob = (id: string) => join(filesDir, "blobs", id);

async function* chunks(...parts: string[]): AsyncIterable<Uint8Array> {
  for (const p of parts) {
    await new Promise((r) => setTimeout(r, 5));
    yield Buffer.from(p);
  }
}

async function refusal(p: Promise<unknown>): Promise<StorageError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof StorageError) return e;
    throw e;
  }
  throw new Error("expected a StorageError");
}

describe("documents with IDs chosen beforehand", () => {
  it("are inserted only by system code, in their own table, once", async () => {
    const number = t.db.catalog.table(STORAGE_TABLE)!.number;
    const id = newDocumentId(number);
    const doc = { sha256: "00", size: 0 };
    await expect(t.db.run((tx) => tx.insert(STORAGE_TABLE, doc, { id }))).rejects.toThrow();
    await expect(
      t.db.run((tx) =>
        tx.insert(UPLOAD_TOKENS_TABLE, { nonce: "n", expiresMs: 0 }, { system: true, id }),
      ),
    ).rejects.toThrow(/does not belong to table/);
    await t.db.run((tx) => tx.insert(STORAGE_TABLE, doc, { system: true, id }));
    await expect(
      t.db.run((tx) => tx.insert(STORAGE_TABLE, doc, { system: true, id })),
    ).rejects.toThrow(DatabaseError);
    const tx = t.db.begin({ readOnly: true });
    expect((await tx.get(id))?._id).toBe(id);
    tx.abort();
  });
});

describe("uploads", () => {
  it("record the file with its hash, size and type", async () => {
    const id = await storage.upload(tokenOf(storage.uploadUrl(BASE)), chunks("ab", "cd"), "text/x");
    expect(await storage.lookup(id)).toMatchObject({
      _id: id,
      sha256: sha256("abcd"),
      size: 4,
      contentType: "text/x",
    });
    expect(existsSync(blob(id))).toBe(true);
  });

  it("refuse forged, expired and spent tokens", async () => {
    const token = tokenOf(storage.uploadUrl(BASE));
    const forged = `${token.slice(0, -1)}${token.endsWith("A") ? "B" : "A"}`;
    expect((await refusal(storage.upload(forged, chunks("x"), null))).code).toBe(
      "InvalidUploadToken",
    );
    const old = tokenOf(storage.uploadUrl(BASE, Date.now() - 2 * 3600_000));
    expect((await refusal(storage.upload(old, chunks("x"), null))).code).toBe("UploadUrlExpired");
    await storage.upload(token, chunks("x"), null);
    const spent = await refusal(storage.upload(token, chunks("y"), null));
    expect(spent.code).toBe("UploadUrlUsed");
    expect(spent.status).toBe(409);
  });

  it("with one token, racing: one wins and the other leaves no file", async () => {
    const token = tokenOf(storage.uploadUrl(BASE));
    const results = await Promise.allSettled([
      storage.upload(token, chunks("one", "1"), null),
      storage.upload(token, chunks("two", "2"), null),
    ]);
    const won = results.filter((r) => r.status === "fulfilled");
    expect(won).toHaveLength(1);
    const lost = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect((lost.reason as StorageError).code).toBe("UploadUrlUsed");
    expect(readdirSync(join(filesDir, "blobs"))).toEqual([
      (won[0] as PromiseFulfilledResult<string>).value,
    ]);
    expect(readdirSync(join(filesDir, "tmp"))).toEqual([]);
  });

  it("that fail midway leave nothing", async () => {
    async function* failing(): AsyncIterable<Uint8Array> {
      yield Buffer.from("partial");
      throw new Error("connection reset");
    }
    await expect(storage.upload(tokenOf(storage.uploadUrl(BASE)), failing(), null)).rejects.toThrow(
      "connection reset",
    );
    expect(readdirSync(join(filesDir, "blobs"))).toEqual([]);
    expect(readdirSync(join(filesDir, "tmp"))).toEqual([]);
  });
});

describe("stores", () => {
  it("check a given SHA-256 and keep nothing when it differs", async () => {
    const e = await refusal(storage.store(Buffer.from("abc"), null, sha256("abd")));
    expect(e.code).toBe("Sha256Mismatch");
    expect(readdirSync(join(filesDir, "blobs"))).toEqual([]);
    const id = await storage.store(Buffer.from("abc"), "text/plain", sha256("abc"));
    expect(await storage.read(id)).toEqual({
      bytes: Buffer.from("abc"),
      contentType: "text/plain",
    });
  });
});

describe("deletion", () => {
  it("removes the bytes once the document's deletion commits, not when it aborts", async () => {
    const id = await storage.store(Buffer.from("bytes"), null);
    const tx = t.db.begin();
    await storage.delete(tx, id);
    tx.abort();
    await new Promise((r) => setTimeout(r, 50));
    expect(existsSync(blob(id))).toBe(true);
    await t.db.run((tx2) => storage.delete(tx2, id));
    await waitFor("the file to go", () => !existsSync(blob(id)), ...WAIT);
    expect(await storage.lookup(id)).toBeNull();
    expect(await storage.read(id)).toBeNull();
  });

  it("refuses IDs of other tables and malformed ones", async () => {
    const tx = t.db.begin();
    const other = newDocumentId(t.db.catalog.table(UPLOAD_TOKENS_TABLE)!.number);
    expect((await refusal(storage.getUrl(tx, other, BASE))).code).toBe("InvalidStorageId");
    expect((await refusal(storage.getUrl(tx, "nope", BASE))).code).toBe("InvalidStorageId");
    tx.abort();
  });
});

describe("sweeps", () => {
  it("remove old orphans and interrupted uploads, and expired tokens, and keep the rest", async () => {
    const kept = await storage.store(Buffer.from("kept"), null);
    const number = t.db.catalog.table(STORAGE_TABLE)!.number;
    const oldOrphan = newDocumentId(number);
    const youngOrphan = newDocumentId(number);
    writeFileSync(blob(oldOrphan), "old");
    writeFileSync(blob(youngOrphan), "young");
    writeFileSync(join(filesDir, "tmp", "interrupted"), "half");
    writeFileSync(join(filesDir, "tmp", "in-progress"), "half");
    const hourAgo = new Date(Date.now() - 3600_000);
    for (const p of [blob(kept), blob(oldOrphan), join(filesDir, "tmp", "interrupted")])
      utimesSync(p, hourAgo, hourAgo);
    // A spent token past its expiry, and one still valid.
    await storage.upload(tokenOf(storage.uploadUrl(BASE)), chunks("x"), null);
    await t.db.run((tx) =>
      tx.insert(UPLOAD_TOKENS_TABLE, { nonce: "expired", expiresMs: 1 }, { system: true }),
    );

    expect(await storage.sweep()).toEqual({ temporaries: 1, orphans: 1, tokens: 1 });
    expect(existsSync(blob(kept))).toBe(true);
    expect(existsSync(blob(oldOrphan))).toBe(false);
    expect(existsSync(blob(youngOrphan))).toBe(true);
    expect(readdirSync(join(filesDir, "tmp"))).toEqual(["in-progress"]);
    const tx = t.db.begin({ readOnly: true });
    expect(await tx.query(UPLOAD_TOKENS_TABLE, "by_creation_time").collect()).toHaveLength(1);
    tx.abort();
  });
});
