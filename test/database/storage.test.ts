import { describe, expect, it } from "vitest";
import { SnapshotTooOldError, TransactionLimitError } from "../../src/database/index.js";
import { openTestDb } from "../helpers.js";

const values = (docs: Array<Record<string, unknown>>, f = "n") => docs.map((d) => d[f]);

describe("snapshots", () => {
  it("reads at older timestamps see exactly the state then, catalog included", async () => {
    const t = await openTestDb();
    try {
      const states: Array<{ ts: bigint; ns: number[] }> = [];
      let id = "";
      for (let i = 0; i < 5; i++) {
        const r = await t.db.run(async (tx) => {
          if (i === 0) id = await tx.insert("counter", { n: 0 });
          else await tx.patch(id, { n: i });
          if (i === 3) await tx.insert("later", { n: 100 });
          return (await tx.query("counter", "by_creation_time").collect()).map(
            (d) => d.n as number,
          );
        });
        states.push({ ts: r.ts, ns: [i] });
      }
      for (const [i, s] of states.entries()) {
        const tx = await t.db.beginAt(s.ts);
        expect(values(await tx.query("counter", "by_creation_time").collect())).toEqual(s.ns);
        expect((await tx.get(id))?.n).toBe(i);
        // `later` was created at state 3.
        expect(tx.currentCatalog.table("later") === undefined).toBe(i < 3);
      }
      await expect(t.db.beginAt(t.db.latestTs() + 1000n)).rejects.toThrow(/in the future/);
    } finally {
      await t.close();
    }
  });
});

describe("timestamps", () => {
  it("strictly increase, also across a restart with the wall clock moved backwards", async () => {
    const t = await openTestDb();
    try {
      const seen: bigint[] = [];
      for (let i = 0; i < 20; i++) seen.push((await t.db.run((tx) => tx.insert("t", { i }))).ts);
      for (let i = 1; i < seen.length; i++) expect(seen[i]!).toBeGreaterThan(seen[i - 1]!);
      const before = t.db.latestTs();
      // Nanoseconds since the epoch, roughly now.
      expect(before).toBeGreaterThan(BigInt(Date.now() - 60_000) * 1_000_000n);
      const db = await t.reopen({ wallClockNs: () => 1_000_000n });
      expect(db.latestTs()).toBe(before);
      const a = (await db.run((tx) => tx.insert("t", { i: -1 }))).ts;
      const b = (await db.run((tx) => tx.insert("t", { i: -2 }))).ts;
      expect(a).toBeGreaterThan(before);
      expect(b).toBeGreaterThan(a);
    } finally {
      await t.close();
    }
  });
});

describe("catalog", () => {
  it("survives a reopen with the same table and index numbers, rebuilt from the system tables", async () => {
    const t = await openTestDb();
    try {
      await t.db.run(async (tx) => {
        await tx.createIndex("a", "by_x", ["x"]);
        await tx.insert("a", { x: 2 });
        await tx.insert("a", { x: 1 });
        await tx.insert("b", { y: 1 });
      });
      const before = t.db.catalog;
      const db = await t.reopen();
      for (const name of ["a", "b"])
        expect(db.catalog.table(name)?.number).toBe(before.table(name)?.number);
      const ta = before.table("a")!.number;
      expect(db.catalog.index(ta, "by_x")?.number).toBe(before.index(ta, "by_x")?.number);
      const { value } = await db.run((tx) => tx.query("a", "by_x").collect());
      expect(values(value, "x")).toEqual([1, 2]);
      await db.run((tx) => tx.insert("c", { z: 1 }));
      expect(db.catalog.table("c")!.number).toBeGreaterThan(db.catalog.table("b")!.number);
    } finally {
      await t.close();
    }
  });

  it("backfills an index created on a table that has documents, then enables it", async () => {
    const t = await openTestDb();
    try {
      const ids: string[] = [];
      for (let i = 0; i < 3000; i += 1000) {
        const { value } = await t.db.run(async (tx) => {
          const out: string[] = [];
          for (let j = i; j < i + 1000; j++) out.push(await tx.insert("big", { n: j % 97, j }));
          return out;
        });
        ids.push(...value);
      }
      // The creating transaction also writes to the table: its own commit indexes those writes.
      await t.db.run(async (tx) => {
        await tx.createIndex("big", "by_n", ["n"]);
        await tx.insert("big", { n: 7, j: -2 });
        await tx.patch(ids[2]!, { n: 7 });
      });
      const tableNumber = t.db.catalog.table("big")!.number;
      expect(t.db.catalog.index(tableNumber, "by_n")?.state).toBe("backfilling");
      const probe = t.db.begin();
      expect(() => probe.query("big", "by_n")).toThrow(/being backfilled/);
      // Writes racing the backfill are indexed by their own commits.
      await t.db.run(async (tx) => {
        await tx.patch(ids[0]!, { n: 1000 });
        await tx.delete(ids[1]!);
        await tx.insert("big", { n: -1, j: -1 });
      });
      await t.db.waitForBackgroundWork();
      expect(t.db.catalog.index(tableNumber, "by_n")?.state).toBe("enabled");
      const { value } = await t.db.run(async (tx) => ({
        viaIndex: await tx.query("big", "by_n").collect(),
        all: await tx.query("big", "by_creation_time").collect(),
        sevens: await tx.query("big", "by_n", [{ type: "Eq", fieldPath: "n", value: 7 }]).collect(),
      }));
      expect(value.viaIndex).toHaveLength(3001);
      const expected = [...value.all].sort(
        (a, b) => (a.n as number) - (b.n as number) || a._creationTime - b._creationTime,
      );
      expect(value.viaIndex.map((d) => d._id)).toEqual(expected.map((d) => d._id));
      expect(value.sevens.every((d) => d.n === 7)).toBe(true);
      expect(value.sevens).toHaveLength(value.all.filter((d) => d.n === 7).length);
    } finally {
      await t.close();
    }
  });

  it("finishes a backfill interrupted by a restart", async () => {
    const t = await openTestDb();
    try {
      for (let i = 0; i < 3; i++) {
        await t.db.run(async (tx) => {
          for (let j = 0; j < 1000; j++) await tx.insert("r", { n: (i * 1000 + j) % 13 });
        });
      }
      await t.db.run((tx) => tx.createIndex("r", "by_n", ["n"]));
      // Closing stops the backfill after at most one chunk.
      const db = await t.reopen();
      await db.waitForBackgroundWork();
      const tableNumber = db.catalog.table("r")!.number;
      expect(db.catalog.index(tableNumber, "by_n")?.state).toBe("enabled");
      const { value } = await db.run((tx) => tx.query("r", "by_n").collect());
      expect(value).toHaveLength(3000);
      for (let i = 1; i < value.length; i++)
        expect(value[i]!.n as number).toBeGreaterThanOrEqual(value[i - 1]!.n as number);
    } finally {
      await t.close();
    }
  });

  it("drops an index: it is gone at once, its number is never reused", async () => {
    const t = await openTestDb();
    try {
      await t.db.run(async (tx) => {
        await tx.createIndex("d", "by_v", ["v"]);
        for (let i = 0; i < 50; i++) await tx.insert("d", { v: i });
      });
      const tableNumber = t.db.catalog.table("d")!.number;
      const dropped = t.db.catalog.index(tableNumber, "by_v")!.number;
      await t.db.run((tx) => tx.dropIndex("d", "by_v"));
      expect(() => t.db.begin().query("d", "by_v")).toThrow(/not found/);
      const db = await t.reopen();
      expect(db.catalog.index(tableNumber, "by_v")).toBeUndefined();
      await db.run((tx) => tx.createIndex("d", "by_v", ["v"]));
      await db.waitForBackgroundWork();
      expect(db.catalog.index(tableNumber, "by_v")!.number).toBeGreaterThan(dropped);
      expect((await db.run((tx) => tx.query("d", "by_v").collect())).value).toHaveLength(50);
    } finally {
      await t.close();
    }
  });
});

/**
 * A database keeping versions for 1 s of a clock the test moves (`clock.now`,
 * in nanoseconds), with one document `id` in table `g`, indexed by `n`.
 */
async function openWithClock() {
  const clock = { now: BigInt(Date.now()) * 1_000_000n };
  const t = await openTestDb({ retentionMs: 1000, wallClockNs: () => clock.now });
  const { value: id } = await t.db.run(async (tx) => {
    await tx.createIndex("g", "by_n", ["n"]);
    return tx.insert("g", { n: 0 });
  });
  return { t, clock, id };
}

describe("retention", () => {
  it("collects superseded versions, keeps the latest state and refuses reads below the window", async () => {
    const { t, clock, id } = await openWithClock();
    try {
      const { value: gone } = await t.db.run((tx) => tx.insert("g", { n: -5 }));
      const old = t.db.latestTs();
      for (let i = 1; i <= 200; i++) {
        clock.now += 1_000_000n;
        await t.db.run((tx) => tx.patch(id, { n: i }));
      }
      await t.db.run((tx) => tx.delete(gone));
      const count = () =>
        t.persistence.countRows("documents") + t.persistence.countRows("index_entries");
      const rowsBefore = count();
      clock.now += 10_000_000_000n;
      await t.db.collectGarbage();
      expect(count()).toBeLessThan(rowsBefore / 4);
      const { value } = await t.db.run(async (tx) => ({
        doc: await tx.get(id),
        gone: await tx.get(gone),
        scan: await tx.query("g", "by_n").collect(),
        all: await tx.query("g", "by_creation_time").collect(),
      }));
      expect(value.doc?.n).toBe(200);
      expect(value.gone).toBeNull();
      expect(values(value.scan)).toEqual([200]);
      expect(values(value.all)).toEqual([200]);
      await expect(t.db.beginAt(old)).rejects.toBeInstanceOf(SnapshotTooOldError);
      const db = await t.reopen({ retentionMs: 1000, wallClockNs: () => clock.now });
      expect(db.retainedFromTs).toBeGreaterThan(old);
      expect((await db.run((tx) => tx.query("g", "by_n").collect())).value.map((d) => d.n)).toEqual(
        [200],
      );
    } finally {
      await t.close();
    }
  });
});

describe("garbage collection's steps", () => {
  it("delete at most 128 versions each and let the event loop turn between them", async () => {
    const { t, clock, id } = await openWithClock();
    try {
      for (let i = 1; i <= 400; i++) {
        clock.now += 1_000_000n;
        await t.db.run((tx) => tx.patch(id, { n: i }));
      }
      clock.now += 10_000_000_000n;
      // Each step is one uninterrupted stretch on the event loop (GC_CHUNK_ROWS in
      // database.ts): 2,000 rows held it 60–90 ms under a sustained write load.
      const steps: Array<{ rows: number; turns: number }> = [];
      let turns = 0;
      const collect = t.persistence.collectGarbage.bind(t.persistence);
      t.persistence.collectGarbage = (work) => {
        steps.push({ rows: work.documents.length, turns });
        return collect(work);
      };
      let others = true;
      const other = () => {
        turns++;
        if (others) setImmediate(other);
      };
      setImmediate(other);
      await t.db.collectGarbage();
      others = false;
      // The 401 versions of the document, and the catalog's rows from creating the index.
      expect(steps.reduce((n, s) => n + s.rows, 0)).toBeGreaterThanOrEqual(401);
      expect(steps.length).toBeGreaterThanOrEqual(4);
      for (const s of steps) expect(s.rows).toBeLessThanOrEqual(128);
      for (let i = 1; i < steps.length; i++)
        expect(steps[i]!.turns).toBeGreaterThan(steps[i - 1]!.turns);
      const { value } = await t.db.run((tx) => tx.query("g", "by_n").collect());
      expect(values(value)).toEqual([400]);
    } finally {
      await t.close();
    }
  });
});

describe("limits", () => {
  it("fails a transaction that breaks a per-transaction limit with a clear error", async () => {
    const t = await openTestDb({
      limits: {
        maxDocumentsRead: 20,
        maxIndexRanges: 30,
        maxDocumentsWritten: 25,
        maxBytesWritten: 50_000,
      },
    });
    try {
      const { value: ids } = await t.db.run(async (tx) => {
        const out: string[] = [];
        for (let i = 0; i < 25; i++) out.push(await tx.insert("l", { i }));
        return out;
      });
      await expect(t.db.run((tx) => tx.query("l", "by_creation_time").collect())).rejects.toThrow(
        /Too many documents read.*limit: 20/,
      );
      await expect(
        t.db.run(async (tx) => {
          await tx.get(ids[0]!);
          for (let i = 0; i < 30; i++) await tx.query("l", "by_creation_time").next(0);
        }),
      ).rejects.toThrow(/Too many reads.*limit: 30/);
      await expect(
        t.db.run(async (tx) => {
          for (let i = 0; i < 26; i++) await tx.insert("l", { i });
        }),
      ).rejects.toThrow(/Too many documents written.*limit: 25/);
      const err = await t.db
        .run(async (tx) => {
          for (let i = 0; i < 10; i++) await tx.insert("l", { big: "x".repeat(10_000) });
        })
        .catch((e) => e);
      expect(err).toBeInstanceOf(TransactionLimitError);
      expect(err.limit).toBe("bytesWritten");
    } finally {
      await t.close();
    }
  });

  it("counts the 1024 fields of a document the same way on insert and patch", async () => {
    const t = await openTestDb();
    try {
      const fields: Record<string, number> = {};
      for (let i = 0; i < 1024; i++) fields[`f${i}`] = i;
      const { value: id } = await t.db.run((tx) => tx.insert("wide", fields));
      await expect(t.db.run((tx) => tx.patch(id, { f0: 42 }))).resolves.toBeDefined();
      await expect(t.db.run((tx) => tx.patch(id, { f1024: 1 }))).rejects.toThrow(
        /more than 1024 fields/,
      );
      await expect(t.db.run((tx) => tx.insert("wide", { ...fields, f1024: 1 }))).rejects.toThrow(
        /more than 1024 fields/,
      );
    } finally {
      await t.close();
    }
  });

  it("enforces the 1 MiB document size on insert and patch", async () => {
    const t = await openTestDb();
    try {
      const tx = t.db.begin();
      await expect(async () => tx.insert("s", { s: "x".repeat(1 << 20) })).rejects.toThrow(
        /Document is too large/,
      );
      const id = await tx.insert("s", { a: "x".repeat(600_000) });
      await expect(async () => tx.patch(id, { b: "y".repeat(600_000) })).rejects.toThrow(
        /Document is too large/,
      );
      await expect(async () =>
        tx.insert("s", { a: { b: [1, { c: undefined }] }, d: [undefined] }),
      ).rejects.toThrow(/\.d\[0\]/);
    } finally {
      await t.close();
    }
  });
});
