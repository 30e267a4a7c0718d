import { execFileSync } from "node:child_process";
import { copyFileSync, fstatSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import Sqlite from "better-sqlite3";
import fc from "fast-check";
import { describe, expect, it, vi } from "vitest";
import { type IndexWrite, SqlitePersistence } from "../../src/persistence/index.js";
import type { SqliteOptions } from "../../src/persistence/sqlite.js";
import { compareKeys } from "../../src/values/index.js";
import { gate, sleep, tempDir, track, waitFor } from "../helpers.js";

function withStore<T>(
  f: (p: SqlitePersistence, path: string) => Promise<T>,
  options: Omit<SqliteOptions, "path"> = {},
): Promise<T> {
  const dir = tempDir();
  const path = join(dir.path, "db.sqlite");
  const p = new SqlitePersistence({ path, ...options });
  return f(p, path).finally(async () => {
    await p.close();
    dir.remove();
  });
}

const b = (...bytes: number[]) => Buffer.from(bytes);

/** A batch writing one document (key `b(ts)`) at `ts`. */
const batch = (ts: bigint) => ({
  documents: [{ tableNumber: 1, id: b(Number(ts)), ts, value: `${ts}` }],
  indexes: [],
  maxTs: ts,
});

/** What an index scan must return, computed from every entry ever written. */
function naiveScan(
  model: IndexWrite[],
  range: { start: Buffer; end: Buffer | null },
  at: bigint,
  order: "asc" | "desc",
  limit: number,
) {
  const latest = new Map<string, IndexWrite>();
  for (const e of model) if (e.ts <= at) latest.set(e.key.toString("hex"), e);
  return [...latest.values()]
    .filter(
      (e) =>
        e.docId !== null &&
        compareKeys(e.key, range.start) >= 0 &&
        (range.end === null || compareKeys(e.key, range.end) < 0),
    )
    .sort((x, y) => compareKeys(x.key, y.key) * (order === "asc" ? 1 : -1))
    .slice(0, limit)
    .map((e) => ({ key: e.key, docId: e.docId }));
}

describe("SQLite persistence", () => {
  it("returns the version of a document visible at each timestamp", () =>
    withStore(async (p) => {
      await p.write({
        documents: [{ tableNumber: 1, id: b(7), ts: 10n, value: "1" }],
        indexes: [],
        maxTs: 10n,
      });
      await p.write({
        documents: [{ tableNumber: 1, id: b(7), ts: 20n, value: "2" }],
        indexes: [],
        maxTs: 20n,
      });
      await p.write({
        documents: [{ tableNumber: 1, id: b(7), ts: 30n, value: null }],
        indexes: [],
        maxTs: 30n,
      });
      expect(await p.getDocument(1, b(7), 9n)).toBeNull();
      expect(await p.getDocument(1, b(7), 10n)).toBe("1");
      expect(await p.getDocument(1, b(7), 25n)).toBe("2");
      expect(await p.getDocument(1, b(7), 30n)).toBeNull();
      expect(await p.getDocument(2, b(7), 25n)).toBeNull();
      expect((await p.load()).maxTs).toBe(30n);
    }));

  it("index scans return the latest live version of each key, like a naive model", async () => {
    const key = fc.integer({ min: 0, max: 6 }).map((k) => b(1, k));
    const write = fc.record({ key, live: fc.boolean(), doc: fc.integer({ min: 0, max: 3 }) });
    const scan = fc.record({
      ts: fc.integer({ min: 0, max: 40 }),
      lo: fc.integer({ min: 0, max: 7 }),
      hi: fc.option(fc.integer({ min: 0, max: 8 })),
      order: fc.constantFrom<"asc" | "desc">("asc", "desc"),
      limit: fc.integer({ min: 1, max: 8 }),
    });
    await withStore(async (p) => {
      let ts = 0n;
      await fc.assert(
        fc.asyncProperty(
          // Up to 30 versions of a key: more than a page of rows for small limits.
          fc.array(fc.array(write, { minLength: 1, maxLength: 4 }), { maxLength: 30 }),
          fc.array(scan, { maxLength: 10 }),
          async (batches, scans) => {
            // A fresh index number per run keeps runs independent.
            const index = Number(ts) + 1000;
            const base = ts;
            const model: IndexWrite[] = [];
            for (const batch of batches) {
              ts += 1n;
              const seen = new Set<string>();
              const entries = batch
                .filter((w) => !seen.has(w.key.toString("hex")) && seen.add(w.key.toString("hex")))
                .map((w) => ({
                  indexNumber: index,
                  key: w.key,
                  ts,
                  docId: w.live ? b(9, w.doc) : null,
                }));
              model.push(...entries);
              await p.write({ documents: [], indexes: entries, maxTs: ts });
            }
            for (const s of scans) {
              const at = base + BigInt(s.ts);
              const range = { start: b(1, s.lo), end: s.hi === null ? null : b(1, s.hi) };
              const got = await p.scanIndex(index, range, at, s.order, s.limit);
              expect(got).toEqual(naiveScan(model, range, at, s.order, s.limit));
            }
          },
        ),
        { numRuns: 200 },
      );
    });
  });

  it("index scans read keys whose versions fill several pages of rows", () =>
    withStore(async (p) => {
      // Keys 1..3 with 1, 60 and 3 versions (key 2 dead at every third); rows
      // come in pages of the limit plus a few, so key 2 alone fills pages.
      const model: IndexWrite[] = [];
      for (let ts = 1n; ts <= 60n; ts++) {
        const entries: IndexWrite[] = [
          { indexNumber: 5, key: b(1, 2), ts, docId: ts % 3n === 0n ? null : b(9, Number(ts)) },
        ];
        if (ts === 1n) entries.push({ indexNumber: 5, key: b(1, 1), ts, docId: b(9, 1) });
        if (ts % 20n === 0n) entries.push({ indexNumber: 5, key: b(1, 3), ts, docId: b(8, 3) });
        model.push(...entries);
        await p.write({ documents: [], indexes: entries, maxTs: ts });
      }
      for (const at of [1n, 2n, 3n, 30n, 59n, 60n])
        for (const order of ["asc", "desc"] as const)
          for (const limit of [1, 2, 3, 100])
            for (const range of [
              { start: b(1, 0), end: null },
              { start: b(1, 2), end: b(1, 3) },
              { start: b(1, 2), end: null },
            ])
              expect(await p.scanIndex(5, range, at, order, limit)).toEqual(
                naiveScan(model, range, at, order, limit),
              );
    }));

  it("reads the log in timestamp order, always in whole commits", () =>
    withStore(async (p) => {
      for (let ts = 1n; ts <= 5n; ts++) {
        await p.write({
          documents: [0, 1, 2].map((i) => ({ tableNumber: 1, id: b(i), ts, value: `${ts}` })),
          indexes: [],
          maxTs: ts,
        });
      }
      const page = await p.readLog(1n, 5n, 4);
      expect(page.map((r) => r.ts)).toEqual([2n, 2n, 2n, 3n, 3n, 3n]);
      expect((await p.readLog(3n, 4n, 100)).map((r) => r.ts)).toEqual([4n, 4n, 4n]);
    }));

  it("writes a batch atomically: a failing batch throws at once and leaves nothing behind", () =>
    withStore(async (p) => {
      const doc = { tableNumber: 1, id: b(1), ts: 5n, value: "x" };
      expect(() =>
        p.write({ documents: [{ ...doc, id: b(2) }, doc, doc], indexes: [], maxTs: 5n }),
      ).toThrow();
      expect(await p.getDocument(1, b(2), 10n)).toBeNull();
      expect((await p.load()).maxTs).toBe(0n);
    }));

  it("keeps mutation answers with their batch, across a reopen, until forgotten by age", async () => {
    const dir = tempDir();
    const path = join(dir.path, "db.sqlite");
    const answer = (requestId: number, ts: bigint) => ({
      client: "c1",
      requestId,
      ts,
      text: `r${requestId}`,
    });
    let p = new SqlitePersistence({ path });
    try {
      await p.write({ ...batch(5n), answers: [answer(0, 5n)] });
      // A batch that fails leaves no answer behind either.
      const doc = { tableNumber: 1, id: b(2), ts: 6n, value: "y" };
      expect(() =>
        p.write({ documents: [doc, doc], indexes: [], maxTs: 6n, answers: [answer(1, 6n)] }),
      ).toThrow();
      await p.write({ documents: [], indexes: [], maxTs: 7n, answers: [answer(2, 7n)] });
      await p.close();
      p = new SqlitePersistence({ path });
      expect(await p.mutationAnswer("c1", 0)).toEqual(answer(0, 5n));
      expect(await p.mutationAnswer("c1", 1)).toBeNull();
      expect(await p.mutationAnswer("c2", 0)).toBeNull();
      expect(await p.forgetMutationAnswers(7n, 10)).toBe(1);
      expect(await p.mutationAnswer("c1", 0)).toBeNull();
      expect(await p.mutationAnswer("c1", 2)).toEqual(answer(2, 7n));
    } finally {
      await p.close();
      dir.remove();
    }
  });

  it("syncs a WAL left by a process that died before load() reports anything from it", async () => {
    const dir = tempDir();
    const path = join(dir.path, "db.sqlite");
    const p = new SqlitePersistence({ path });
    try {
      await p.write(batch(5n));
      // The files as a killed process leaves them: the WAL not checkpointed.
      const copy = join(dir.path, "copy.sqlite");
      copyFileSync(path, copy);
      copyFileSync(`${path}-wal`, `${copy}-wal`);
      const synced: number[] = [];
      const reopened = new SqlitePersistence({
        path: copy,
        syncFile: async (fd) => {
          synced.push(fd);
        },
      });
      try {
        expect((await reopened.load()).maxTs).toBe(5n);
        expect(synced).toHaveLength(1);
      } finally {
        await reopened.close();
      }
    } finally {
      await p.close();
      dir.remove();
    }
  });

  it("syncs the WAL's directory once, after the WAL's first sync and before that write resolves", async () => {
    const dir = tempDir();
    const { held, release } = gate();
    const synced: string[] = [];
    const p = new SqlitePersistence({
      path: join(dir.path, "db.sqlite"),
      syncDirectory: (d) => {
        synced.push(d);
        return held;
      },
    });
    try {
      const first = track(p.write(batch(5n)));
      await waitFor("the directory sync", () => synced.length > 0, 5000, 5);
      expect(synced).toEqual([dir.path]);
      await sleep(20);
      expect(first.done).toBe(false);
      release();
      await waitFor("the first write", () => first.done, 5000, 5);
      await p.write(batch(6n));
      expect(synced).toEqual([dir.path]);
    } finally {
      release();
      await p.close();
      dir.remove();
    }
  });

  it("applies a batch before write() returns: reads see it while its sync is under way", async () => {
    const dir = tempDir();
    const { held, release } = gate();
    const p = new SqlitePersistence({ path: join(dir.path, "db.sqlite"), syncFile: () => held });
    try {
      let durable = false;
      const write = p.write({
        documents: [{ tableNumber: 1, id: b(1), ts: 5n, value: "x" }],
        indexes: [],
        maxTs: 5n,
      });
      void write.then(() => {
        durable = true;
      });
      expect(await p.getDocument(1, b(1), 5n)).toBe("x");
      expect(durable).toBe(false);
      release();
      await write;
      expect(durable).toBe(true);
    } finally {
      release();
      await p.close();
      dir.remove();
    }
  });

  it("uses WAL, synced by write() itself, and refuses a store written in another format", async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "db.sqlite");
      const p = new SqlitePersistence({ path });
      expect(p.durability()).toEqual({
        journalMode: "wal",
        synchronous: "NORMAL",
        walSyncAtWrite: "thread pool",
        walAutocheckpoint: 4000,
      });
      await p.close();
      const raw = new Sqlite(path);
      expect(raw.pragma("journal_mode", { simple: true })).toBe("wal");
      raw.prepare("UPDATE meta SET value = 99 WHERE key = 'schema_version'").run();
      raw.close();
      expect(() => new SqlitePersistence({ path })).toThrow(/storage format 99/);
    } finally {
      dir.remove();
    }
  });

  it("belongs to one process: a second opening of the file is refused while the first serves on", async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "db.sqlite");
      const p = new SqlitePersistence({ path });
      await p.write({ documents: [{ tableNumber: 1, id: b(7), ts: 1n, value: "1" }], indexes: [] });
      expect(() => new SqlitePersistence({ path, busyTimeoutMs: 100 })).toThrow(
        /in use by another process.*one Tessera server per data directory/,
      );
      // The lock is a file of its own beside the store, which the checkpointer thread shares.
      const lock = new Sqlite(`${path}-lock`, { timeout: 100 });
      try {
        expect(() => lock.exec("BEGIN EXCLUSIVE")).toThrow(/locked/);
      } finally {
        lock.close();
      }
      // The refusal left the owner untouched.
      await p.write({ documents: [{ tableNumber: 1, id: b(7), ts: 2n, value: "2" }], indexes: [] });
      expect(p.getDocument(1, b(7), 2n)).toBe("2");
      await p.close();
      const again = new SqlitePersistence({ path, busyTimeoutMs: 100 });
      expect(again.getDocument(1, b(7), 2n)).toBe("2");
      await again.close();
    } finally {
      dir.remove();
    }
  });

  describe("checkpoints", () => {
    /** Writes `n` documents of `bytes` each, one batch per document, from `ts` + 1 on. */
    async function writeLarge(p: SqlitePersistence, from: bigint, n: number, bytes: number) {
      for (let ts = from + 1n; ts <= from + BigInt(n); ts++) {
        await p.write({
          documents: [
            { tableNumber: 1, id: b(Number(ts % 200n)), ts, value: `${ts}`.padEnd(bytes, "x") },
          ],
          indexes: [],
          maxTs: ts,
        });
      }
      return from + BigInt(n);
    }

    /** A checkpointer module of the fixtures. */
    const fixture = (name: string) => new URL(`../fixtures/persistence/${name}`, import.meta.url);

    it("are made by the checkpointer thread, and the WAL restarts instead of growing", () =>
      withStore(
        async (p, path) => {
          // This connection checkpoints itself only as a backstop, at 4,000 frames.
          expect(p.durability().walAutocheckpoint).toBe(4000);
          let ts = 0n;
          for (let cycle = 0; cycle < 12; cycle++) {
            const before = p.checkpointStats().background;
            ts = await writeLarge(p, ts, 4, 40_000);
            await waitFor("the checkpointer's copy of the WAL", () => {
              return p.checkpointStats().background > before;
            });
          }
          // 48 batches of ~40 KB were appended: without the checkpoints the WAL
          // would hold them all (~2 MB).
          expect(statSync(`${path}-wal`).size).toBeLessThan(1_000_000);
          expect(p.checkpointStats()).toMatchObject({ failed: null });
          expect(p.getDocument(1, b(Number(ts % 200n)), ts)).toBe(`${ts}`.padEnd(40_000, "x"));
          await p.close();
          const again = new SqlitePersistence({ path });
          expect(again.getDocument(1, b(Number(ts % 200n)), ts)).toBe(`${ts}`.padEnd(40_000, "x"));
          expect(again.countRows("documents")).toBe(48);
          await again.close();
        },
        { checkpointFrames: 40 },
      ));

    it("go on without writes until the whole WAL is copied", () =>
      withStore(
        async (p) => {
          await writeLarge(p, 0n, 1, 1000);
          // One write asked once; the checkpointer keeps reporting frames left, so it is asked again.
          await waitFor("checkpoints asked without writes", () => {
            return p.checkpointStats().incomplete >= 3;
          });
          expect(p.checkpointStats()).toMatchObject({ background: 0 });
        },
        { checkpointFrames: 1, checkpointerModule: fixture("stuckCheckpointer.mjs") },
      ));

    it("are made by this connection as a backstop when the checkpointer cannot keep up", () =>
      withStore(
        async (p, path) => {
          expect(p.durability().walAutocheckpoint).toBe(100);
          // ~4 MB (~1,000 frames) into a WAL kept near 100 frames by SQLite's own checkpoints.
          const ts = await writeLarge(p, 0n, 100, 40_000);
          expect(p.checkpointStats()).toMatchObject({ background: 0, failed: null });
          expect(statSync(`${path}-wal`).size).toBeLessThan(1_500_000);
          expect(p.getDocument(1, b(Number(ts % 200n)), ts)).toBe(`${ts}`.padEnd(40_000, "x"));
        },
        {
          checkpointFrames: 20,
          backstopFrames: 100,
          checkpointerModule: fixture("stuckCheckpointer.mjs"),
        },
      ));

    it("end with close(), which a process waiting on nothing else sees through", () => {
      const dir = tempDir();
      try {
        const out = execFileSync(
          process.execPath,
          [
            "--import",
            fileURLToPath(new URL("../../bin/ts-register.mjs", import.meta.url)),
            fileURLToPath(new URL("../fixtures/persistence/closeInChild.ts", import.meta.url)),
            dir.path,
          ],
          { encoding: "utf8", timeout: 30_000 },
        );
        expect(out.trim()).toBe("closed");
      } finally {
        dir.remove();
      }
    });

    it("start their thread as the store opens when asked, without the process's flags", async () => {
      const spy = vi.spyOn(console, "error").mockImplementation(() => {});
      try {
        await withStore(
          async (p) => {
            // No write: only the start at open can have run the module.
            await waitFor("the checkpointer's start", () => p.checkpointStats().failed !== null);
            // Not the test process's flags (and with them the TypeScript hooks of an
            // `--import`): the thread needs none, and they tripled the cost of its start.
            expect(process.execArgv.length).toBeGreaterThan(0);
            expect(p.checkpointStats().failed).toBe("started with execArgv []");
          },
          { checkpointerAtOpen: true, checkpointerModule: fixture("flagsCheckpointer.mjs") },
        );
      } finally {
        spy.mockRestore();
      }
    });

    it("fall back to this connection when the checkpointer thread fails", async () => {
      const errors: unknown[] = [];
      const spy = vi.spyOn(console, "error").mockImplementation((...args) => errors.push(args));
      try {
        await withStore(
          async (p, path) => {
            let ts = await writeLarge(p, 0n, 2, 1000);
            await waitFor("the checkpointer's failure", () => p.checkpointStats().failed !== null);
            expect(p.checkpointStats().failed).toMatch(/fails on purpose/);
            expect(String(errors[0])).toMatch(/checkpointer .* failed/);
            // SQLite's own checkpoints (every 1,000 pages) keep the WAL bounded from now on.
            expect(p.durability().walAutocheckpoint).toBe(1000);
            ts = await writeLarge(p, ts, 150, 40_000);
            expect(statSync(`${path}-wal`).size).toBeLessThan(5_500_000);
            expect(p.getDocument(1, b(Number(ts % 200n)), ts)).toBe(`${ts}`.padEnd(40_000, "x"));
          },
          { checkpointFrames: 1, checkpointerModule: fixture("failingCheckpointer.mjs") },
        );
      } finally {
        spy.mockRestore();
      }
    });
  });

  describe("WAL syncs", () => {
    /** A `syncFile` whose syncs finish when the test says so. */
    function gatedSync() {
      const syncs: Array<{ fd: number; finish: (e?: Error) => void }> = [];
      const syncFile = (fd: number) =>
        new Promise<void>((resolve, reject) =>
          syncs.push({ fd, finish: (e) => (e ? reject(e) : resolve()) }),
        );
      // The directory's sync after the first one is another test's subject: done at once here.
      return { syncs, syncFile, syncDirectory: async () => {} };
    }
    const settle = () => new Promise((r) => setImmediate(r));

    it("acknowledges a write only after a sync of the WAL that began after it committed", async () => {
      const dir = tempDir();
      const path = join(dir.path, "db.sqlite");
      const { syncs, syncFile, syncDirectory } = gatedSync();
      const p = new SqlitePersistence({ path, syncFile, syncDirectory });
      try {
        const w1 = track(p.write(batch(1n)));
        await settle();
        expect(syncs.length).toBe(1);
        // The synced file is the WAL.
        expect(fstatSync(syncs[0]!.fd).ino).toBe(statSync(`${path}-wal`).ino);
        expect(w1.done).toBe(false);
        // Writes committed while that sync is under way wait for the next one, together.
        const w2 = track(p.write(batch(2n)));
        const w3 = track(p.write(batch(3n)));
        await settle();
        expect(syncs.length).toBe(1);
        syncs[0]!.finish();
        await settle();
        expect(w1.done).toBe(true);
        expect([w2.done, w3.done]).toEqual([false, false]);
        expect(syncs.length).toBe(2);
        syncs[1]!.finish();
        await settle();
        expect([w2.done, w3.done]).toEqual([true, true]);
        expect(syncs.length).toBe(2);
        // Backfills, garbage collection and index drops are synced too.
        const backfill = track(
          p.writeBackfill([{ indexNumber: 5, key: b(1), ts: 1n, docId: b(1) }]),
        );
        await settle();
        expect(backfill.done).toBe(false);
        syncs[2]!.finish();
        await settle();
        expect(backfill.done).toBe(true);
      } finally {
        for (const s of syncs) s.finish();
        await p.close();
        dir.remove();
      }
    });

    it("fails the writes waiting on a sync that fails, and closes only after syncs end", async () => {
      const dir = tempDir();
      const { syncs, syncFile, syncDirectory } = gatedSync();
      const p = new SqlitePersistence({
        path: join(dir.path, "db.sqlite"),
        syncFile,
        syncDirectory,
      });
      try {
        const w1 = track(p.write(batch(1n)));
        const w2 = track(p.write(batch(2n)));
        await settle();
        syncs[0]!.finish(new Error("EIO"));
        await settle();
        expect(w1.error).toBeInstanceOf(Error);
        // w2 committed after the failed sync began: it waits for one of its own.
        expect(syncs.length).toBe(2);
        const closed = track(p.close());
        await settle();
        expect(closed.done).toBe(false);
        syncs[1]!.finish(new Error("EIO"));
        await settle();
        expect((w2.error as Error).message).toBe("EIO");
        expect(closed.done).toBe(true);
      } finally {
        for (const s of syncs) s.finish();
        await p.close();
        dir.remove();
      }
    });
  });
});
