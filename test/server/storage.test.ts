/**
 * File storage on a real `tessera serve` process through the official
 * clients: uploads through `generateUploadUrl` + POST, the `_storage` system
 * table, file URLs from `getUrl` (content type, ranges, validators), upload
 * URLs that are single-use and expire, deletion (a subscribed query sees it),
 * `store` / `get` of Blobs in actions and mutations, CORS for browser
 * uploads, and crash safety: files acknowledged before a SIGKILL survive it,
 * and what an interrupted upload left behind is swept at the next start.
 */
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { decodeDocumentId, newDocumentId } from "../../src/values/index.js";
import { rejection, waitFor } from "../helpers.js";
import { type ServerProcess, startServer } from "./serverProcess.js";

/** How long waits here last and how often they look: 10 s, every 20 ms. */
const WAIT = [10_000, 20] as const;

// biome-ignore lint/suspicious/noExplicitAny: the fixture app is addressed untyped
const api = anyApi as any;

const sha256 = (b: Uint8Array | string) => createHash("sha256").update(b).digest("hex");

interface StorageDoc {
  _id: string;
  _creationTime: number;
  sha256: string;
  size: number;
  contentType?: string;
}

function helpers(get: () => ServerProcess) {
  const http = () => new ConvexHttpClient(get().url, { logger: false });
  const uploadUrl = (): Promise<string> => http().mutation(api.storage.generateUploadUrl, {});
  const post = (url: string, body: Uint8Array | string, type?: string) =>
    fetch(url, {
      method: "POST",
      body,
      ...(type !== undefined ? { headers: { "Content-Type": type } } : {}),
    });
  const upload = async (body: Uint8Array | string, type?: string): Promise<string> => {
    const r = await post(await uploadUrl(), body, type);
    expect(r.status).toBe(200);
    const { storageId } = (await r.json()) as { storageId: string };
    return storageId;
  };
  return { http, uploadUrl, post, upload };
}

describe("file storage", () => {
  let server: ServerProcess;
  let client: ConvexClient;
  const { http, uploadUrl, post, upload } = helpers(() => server);

  beforeAll(async () => {
    server = await startServer();
    client = new ConvexClient(server.url, {
      webSocketConstructor: WebSocket as unknown as typeof globalThis.WebSocket,
    });
  }, 60_000);

  afterAll(async () => {
    await client?.close();
    await server?.dispose();
  });

  const blobsDir = () => join(server.dataDir, "files", "blobs");

  it("uploads through an upload URL and records the file in _storage", async () => {
    const bytes = randomBytes(100_000);
    const url = await uploadUrl();
    expect(url).toMatch(new RegExp(`^${server.url}/api/storage/upload\\?token=`));
    const r = await post(url, bytes, "image/png");
    expect(r.status).toBe(200);
    const { storageId } = (await r.json()) as { storageId: string };
    const doc = (await http().query(api.storage.doc, { id: storageId })) as StorageDoc;
    expect(doc).toEqual({
      _id: storageId,
      _creationTime: expect.any(Number),
      sha256: sha256(bytes),
      size: 100_000,
      contentType: "image/png",
    });
    const all = (await http().query(api.storage.list, {})) as StorageDoc[];
    expect(all.map((d) => d._id)).toContain(storageId);
    expect(await http().query(api.storage.metadata, { id: storageId })).toEqual({
      storageId,
      sha256: sha256(bytes),
      size: 100_000,
      contentType: "image/png",
    });
    // Without a Content-Type the document has none.
    const bare = await upload(new Uint8Array([1, 2, 3]));
    const bareDoc = (await http().query(api.storage.doc, { id: bare })) as StorageDoc;
    expect(bareDoc.contentType).toBeUndefined();
    expect(bareDoc.size).toBe(3);
  });

  it("serves files at getUrl with their content type, byte ranges and validators", async () => {
    const bytes = randomBytes(10_000);
    const id = await upload(bytes, "application/pdf");
    const url = (await http().query(api.storage.url, { id })) as string;
    expect(url.startsWith(`${server.url}/api/storage/`)).toBe(true);
    expect(url.endsWith(`/${id}`)).toBe(true);

    const whole = await fetch(url);
    expect(whole.status).toBe(200);
    expect(whole.headers.get("content-type")).toBe("application/pdf");
    expect(whole.headers.get("content-length")).toBe("10000");
    expect(whole.headers.get("accept-ranges")).toBe("bytes");
    const etag = whole.headers.get("etag")!;
    expect(etag).toBe(`"${sha256(bytes)}"`);
    expect(whole.headers.get("digest")).toBe(
      `sha-256=${createHash("sha256").update(bytes).digest("base64")}`,
    );
    expect(Buffer.from(await whole.arrayBuffer()).equals(bytes)).toBe(true);

    const part = await fetch(url, { headers: { Range: "bytes=100-199" } });
    expect(part.status).toBe(206);
    expect(part.headers.get("content-range")).toBe("bytes 100-199/10000");
    expect(part.headers.get("content-length")).toBe("100");
    expect(Buffer.from(await part.arrayBuffer()).equals(bytes.subarray(100, 200))).toBe(true);

    const tail = await fetch(url, { headers: { Range: "bytes=-10" } });
    expect(tail.status).toBe(206);
    expect(tail.headers.get("content-range")).toBe("bytes 9990-9999/10000");
    expect(Buffer.from(await tail.arrayBuffer()).equals(bytes.subarray(9990))).toBe(true);

    const open = await fetch(url, { headers: { Range: "bytes=9000-" } });
    expect(open.status).toBe(206);
    expect((await open.arrayBuffer()).byteLength).toBe(1000);

    const past = await fetch(url, { headers: { Range: "bytes=10000-" } });
    expect(past.status).toBe(416);
    expect(past.headers.get("content-range")).toBe("bytes */10000");

    // If-Range with another validator: the whole file.
    const changed = await fetch(url, { headers: { Range: "bytes=0-9", "If-Range": '"other"' } });
    expect(changed.status).toBe(200);
    await changed.arrayBuffer();

    const notModified = await fetch(url, { headers: { "If-None-Match": etag } });
    expect(notModified.status).toBe(304);

    const head = await fetch(url, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe("10000");

    // The storage ID alone (or a wrong signature) does not give access.
    const forged = url.replace(/\/api\/storage\/[^/]+\//, "/api/storage/AAAAAAAAAAAAAAAAAAAAAA/");
    expect((await fetch(forged)).status).toBe(404);

    // No content type given: served as bytes.
    const bare = await upload(new Uint8Array([7]));
    const bareUrl = (await http().query(api.storage.url, { id: bare })) as string;
    expect((await fetch(bareUrl)).headers.get("content-type")).toBe("application/octet-stream");
  });

  it("accepts an upload URL once, and refuses forged ones", async () => {
    const url = await uploadUrl();
    expect((await post(url, "first")).status).toBe(200);
    const again = await post(url, "second");
    expect(again.status).toBe(409);
    expect(((await again.json()) as { message: string }).message).toContain("already used");

    const tampered = url.replace(/token=(.)/, (_m, c: string) => `token=${c === "a" ? "b" : "a"}`);
    const bad = await post(tampered, "x");
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { code: string }).code).toBe("InvalidUploadToken");
    expect((await post(`${server.url}/api/storage/upload`, "x")).status).toBe(400);
    expect((await fetch(url)).status).toBe(405);
  });

  it("answers any upload token, file URL and request headers with a result or a client error, never a 500", async () => {
    const id = await upload(randomBytes(1000), "text/plain");
    const fileUrl = new URL((await http().query(api.storage.url, { id })) as string);
    const goodUpload = new URL(await uploadUrl());
    const token = goodUpload.searchParams.get("token")!;
    /** A string near a valid one: a character changed, cut short, or lengthened. */
    const near = (s: string) =>
      fc
        .tuple(
          fc.nat(s.length),
          fc.constantFrom("change", "cut", "add"),
          fc.string({ maxLength: 3 }),
        )
        .map(([i, how, x]) =>
          how === "change"
            ? s.slice(0, i) + x + s.slice(i + 1)
            : how === "cut"
              ? s.slice(0, i)
              : s + x,
        );
    const [, , , signature, storageId] = fileUrl.pathname.split("/");
    const request = fc.oneof(
      fc.record({
        method: fc.constantFrom("POST", "PUT", "GET"),
        path: fc.constant("/api/storage/upload"),
        query: fc.oneof(near(token), fc.string()).map((t) => `?token=${encodeURIComponent(t)}`),
        headers: fc.record(
          {
            "Content-Type": fc.string(),
            "Content-Encoding": fc.constantFrom("identity", "gzip", "x", ""),
          },
          { requiredKeys: [] },
        ),
      }),
      fc.record({
        method: fc.constantFrom("GET", "HEAD", "POST"),
        path: fc
          .tuple(fc.oneof(near(signature!), fc.string()), fc.oneof(near(storageId!), fc.string()))
          .map(
            ([sig, sid]) => `/api/storage/${encodeURIComponent(sig)}/${encodeURIComponent(sid)}`,
          ),
        query: fc.constant(""),
        headers: fc.record(
          { Range: fc.string(), "If-Range": fc.string(), "If-None-Match": fc.string() },
          { requiredKeys: [] },
        ),
      }),
      // The real file, with any validators and range.
      fc.record({
        method: fc.constantFrom("GET", "HEAD"),
        path: fc.constant(fileUrl.pathname),
        query: fc.constant(""),
        headers: fc.record(
          {
            Range: fc.oneof(
              fc.string(),
              fc.tuple(fc.nat(2000), fc.nat(2000)).map(([a, b]) => `bytes=${a}-${b}`),
            ),
            "If-Range": fc.oneof(fc.string(), fc.constant(`"${sha256("x")}"`)),
            "If-None-Match": fc.string(),
          },
          { requiredKeys: [] },
        ),
      }),
    );
    const headerSafe = (h: Record<string, string>) =>
      // fetch refuses header values with control characters or non-Latin-1 text itself.
      Object.fromEntries(Object.entries(h).filter(([, v]) => /^[\x20-\x7e]*$/.test(v)));
    await fc.assert(
      fc.asyncProperty(request, fc.uint8Array({ maxLength: 64 }), async (r, body) => {
        const res = await fetch(`${server.url}${r.path}${r.query}`, {
          method: r.method,
          headers: headerSafe(r.headers as Record<string, string>),
          ...(r.method === "GET" || r.method === "HEAD" ? {} : { body }),
        });
        await res.arrayBuffer();
        expect(res.status, `${r.method} ${r.path}`).toBeLessThan(500);
      }),
      { numRuns: 300 },
    );
    // The file is still served whole.
    expect((await fetch(fileUrl)).status).toBe(200);
  });

  it("lets one of two concurrent uploads with the same URL win", async () => {
    const url = await uploadUrl();
    const results = await Promise.all([
      post(url, randomBytes(200_000)),
      post(url, randomBytes(200_000)),
    ]);
    expect(results.map((r) => r.status).sort()).toEqual([200, 409]);
    await Promise.all(results.map((r) => r.arrayBuffer()));
  });

  it("deletes files: the document goes, the URL answers 404 and subscribers see it", async () => {
    const id = await upload("short-lived", "text/plain");
    const url = (await http().query(api.storage.url, { id })) as string;
    expect(await (await fetch(url)).text()).toBe("short-lived");

    const seen: Array<string | null> = [];
    const unsubscribe = client.onUpdate(api.storage.url, { id }, (u: string | null) =>
      seen.push(u),
    );
    await waitFor("the first result", () => seen.length > 0, ...WAIT);
    expect(seen[0]).toBe(url);

    // A mutation that deletes and then fails deletes nothing.
    await rejection(client.mutation(api.storage.removeThenFail, { id }));
    expect((await fetch(url)).status).toBe(200);

    await client.mutation(api.storage.remove, { id });
    await waitFor("the subscription to see the deletion", () => seen.at(-1) === null, ...WAIT);
    unsubscribe();
    expect((await fetch(url)).status).toBe(404);
    expect(await http().query(api.storage.doc, { id })).toBeNull();
    expect(await http().query(api.storage.metadata, { id })).toBeNull();
    await waitFor("the file to be removed", () => !existsSync(join(blobsDir(), id)), ...WAIT);
    // Deleting again is an error.
    const e = await rejection(http().mutation(api.storage.remove, { id }));
    expect(e.message).toContain("does not exist");
  });

  it("stores and reads Blobs in actions", async () => {
    const id = (await client.action(api.storage.storeText, {
      text: "hello, storage",
      type: "text/plain",
    })) as string;
    expect(await http().query(api.storage.doc, { id })).toMatchObject({
      sha256: sha256("hello, storage"),
      size: 14,
      contentType: "text/plain",
    });
    expect(await client.action(api.storage.readText, { id })).toEqual({
      text: "hello, storage",
      type: "text/plain",
      size: 14,
      isBlob: true,
    });
    const url = (await http().query(api.storage.url, { id })) as string;
    expect(await (await fetch(url)).text()).toBe("hello, storage");

    // Uploaded bytes read in an action, and a copy stored.
    const uploaded = await upload("from a client", "text/x-note");
    const copy = (await client.action(api.storage.copy, { id: uploaded })) as string;
    expect(copy).not.toBe(uploaded);
    expect(await client.action(api.storage.readText, { id: copy })).toMatchObject({
      text: "from a client",
      type: "text/x-note",
    });

    const inspected = (await client.action(api.storage.inspect, { id: copy, remove: true })) as {
      metadata: unknown;
      url: string;
    };
    expect(inspected.metadata).toEqual({
      storageId: copy,
      sha256: sha256("from a client"),
      size: 13,
      contentType: "text/x-note",
    });
    expect(inspected.url.endsWith(`/${copy}`)).toBe(true);
    expect(await client.action(api.storage.readText, { id: copy })).toBeNull();
    expect((await fetch(inspected.url)).status).toBe(404);

    // No type: the Blob's type is "" and the document has none.
    const untyped = (await client.action(api.storage.storeText, { text: "x" })) as string;
    expect(await client.action(api.storage.readText, { id: untyped })).toMatchObject({ type: "" });
  });

  it("moves Blobs of several MiB between actions and the store", async () => {
    const size = 5 * 1024 * 1024 + 7;
    const { id, same } = (await client.action(api.storage.storeAndReadBytes, { size })) as {
      id: string;
      same: boolean;
    };
    expect(same).toBe(true);
    const expected = Buffer.alloc(size);
    for (let i = 0; i < size; i++) expected[i] = i % 251;
    expect(await http().query(api.storage.doc, { id })).toMatchObject({
      size,
      sha256: sha256(expected),
    });
  });

  it("checks what actions store: a Blob, and its SHA-256 when given", async () => {
    const notBlob = await rejection(client.action(api.storage.storeNotABlob, {}));
    expect(notBlob.message).toContain("store() expects a Blob");
    const wrong = await rejection(
      client.action(api.storage.storeText, { text: "abc", sha256: sha256("abd") }),
    );
    expect(wrong.message).toContain("does not match");
    const hex = (await client.action(api.storage.storeText, {
      text: "abc",
      sha256: sha256("abc"),
    })) as string;
    const base64 = (await client.action(api.storage.storeText, {
      text: "abc",
      sha256: createHash("sha256").update("abc").digest("base64"),
    })) as string;
    expect(hex).not.toBe(base64);
  });

  it("stores and reads files in mutations", async () => {
    const { id, text } = (await http().mutation(api.storage.storeAndReadInMutation, {
      text: "written in a mutation",
    })) as { id: string; text: string };
    expect(text).toBe("written in a mutation");
    expect(await http().query(api.storage.doc, { id })).toMatchObject({
      size: 21,
      contentType: "text/plain",
    });
  });

  it("answers browsers' preflights and cross-origin uploads", async () => {
    const url = await uploadUrl();
    const preflight = await fetch(url, {
      method: "OPTIONS",
      headers: {
        Origin: "http://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
      },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("http://app.example");
    expect(preflight.headers.get("access-control-allow-methods")).toContain("POST");
    expect(preflight.headers.get("access-control-allow-headers")).toContain("content-type");
    const r = await fetch(url, {
      method: "POST",
      body: "from a browser",
      headers: { Origin: "http://app.example", "Content-Type": "text/plain" },
    });
    expect(r.status).toBe(200);
    expect(r.headers.get("access-control-allow-origin")).toBe("http://app.example");
    const { storageId } = (await r.json()) as { storageId: string };
    const fileUrl = (await http().query(api.storage.url, { id: storageId })) as string;
    const got = await fetch(fileUrl, { headers: { Origin: "http://app.example" } });
    expect(got.headers.get("access-control-allow-origin")).toBe("http://app.example");
    expect(got.headers.get("access-control-expose-headers")).toContain("Content-Range");
  });

  it("keeps exactly one file on disk per _storage document", async () => {
    const docs = (await http().query(api.storage.list, {})) as StorageDoc[];
    const ids = docs.map((d) => d._id).sort();
    await waitFor(
      "the files on disk to match the documents",
      () => JSON.stringify(readdirSync(blobsDir()).sort()) === JSON.stringify(ids),
      ...WAIT,
    );
    expect(readdirSync(join(server.dataDir, "files", "tmp"))).toEqual([]);
  });
});

describe("upload URL expiry", () => {
  let server: ServerProcess;
  const { uploadUrl, post } = helpers(() => server);
  // Short, to wait out; a server of its own, so that no other test's uploads must beat it.
  const ttlMs = 1000;

  beforeAll(async () => {
    server = await startServer({ env: { TESSERA_UPLOAD_URL_TTL_MS: String(ttlMs) } });
  }, 60_000);

  afterAll(async () => {
    await server?.dispose();
  });

  it("refuses an upload URL after it expired", async () => {
    const url = await uploadUrl();
    // The URL was made before the mutation returned: it has expired after this.
    await new Promise((r) => setTimeout(r, ttlMs + 500));
    const r = await post(url, "too late");
    expect(r.status).toBe(410);
    expect(((await r.json()) as { message: string }).message).toContain("expired");
  });
});

describe("file storage across restarts", () => {
  let server: ServerProcess;
  let dataDir: string | undefined;
  const { uploadUrl, upload, http } = helpers(() => server);

  beforeAll(async () => {
    server = await startServer();
    dataDir = server.dataDir;
  }, 60_000);

  afterAll(async () => {
    await server?.dispose();
    if (dataDir !== undefined) rmSync(dataDir, { recursive: true, force: true });
  });

  it("keeps every acknowledged file through a SIGKILL and sweeps what an interrupted upload left", async () => {
    const acked = new Map<string, string>();
    for (let i = 0; i < 5; i++) {
      const bytes = randomBytes(50_000 + i);
      acked.set(await upload(bytes, "application/octet-stream"), sha256(bytes));
    }
    // An upload cut off midway by the crash: half its bytes are sent.
    const url = await uploadUrl();
    const hanging = request(url, { method: "POST", headers: { "Content-Length": "2000000" } });
    hanging.on("error", () => {});
    hanging.write(randomBytes(1_000_000));
    const tmp = join(server.dataDir, "files", "tmp");
    await waitFor("the upload to start", () => readdirSync(tmp).length === 1, ...WAIT);
    // And a file stored but never recorded (a crash between the two).
    const tableNumber = decodeDocumentId([...acked.keys()][0]!).tableNumber;
    const orphan = newDocumentId(tableNumber);
    writeFileSync(join(server.dataDir, "files", "blobs", orphan), "orphan");

    process.kill(-server.pid, "SIGKILL");
    await server.stop();
    hanging.destroy();
    // Old enough to be swept (interrupted uploads and orphans are left alone for 10 minutes).
    const hourAgo = new Date(Date.now() - 3600_000);
    for (const f of readdirSync(tmp)) utimesSync(join(tmp, f), hourAgo, hourAgo);
    utimesSync(join(server.dataDir, "files", "blobs", orphan), hourAgo, hourAgo);

    server = await startServer({ dataDir: dataDir! });
    const docs = (await http().query(api.storage.list, {})) as StorageDoc[];
    expect(docs.map((d) => d._id).sort()).toEqual([...acked.keys()].sort());
    for (const [id, hash] of acked) {
      const fileUrl = (await http().query(api.storage.url, { id })) as string;
      const bytes = Buffer.from(await (await fetch(fileUrl)).arrayBuffer());
      expect(sha256(bytes)).toBe(hash);
    }
    // Swept in the background after the start.
    await waitFor(
      "the interrupted upload to be swept",
      () => readdirSync(tmp).length === 0,
      ...WAIT,
    );
    await waitFor(
      "the orphan to be swept",
      () => !readdirSync(join(dataDir!, "files", "blobs")).includes(orphan),
      ...WAIT,
    );
    expect(readdirSync(join(dataDir!, "files", "blobs")).sort()).toEqual([...acked.keys()].sort());
  });
});
