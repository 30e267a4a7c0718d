/**
 * Hidden indexes: a replacement for the index of a name, built beside it
 * while code reading that one serves, and switched in one commit; each side's
 * code reads the index on the fields it declared (`declaredIndexes`).
 */
import { describe, expect, it } from "vitest";
import { type Database, DatabaseError, type Transaction } from "../../src/database/index.js";
import { openTestDb, rejection } from "../helpers.js";

const OLD = new Map([["t", new Map([["by_key", ["a"]]])]]);
const NEW = new Map([["t", new Map([["by_key", ["b"]]])]]);

/** The `a` of the documents a query by `by_key` reads, in its order, as code declaring `declared` would. */
async function readByKey(db: Database, declared: typeof OLD | null): Promise<unknown[]> {
  const { value } = await db.run(async (tx: Transaction) => {
    tx.declaredIndexes = declared;
    return tx.query("t", "by_key").collect();
  });
  return value.map((d) => d.a);
}

/** Documents whose `a` and `b` sort in opposite orders: which index was read shows. */
async function fill(db: Database, n: number): Promise<void> {
  await db.run(async (tx) => {
    for (let i = 0; i < n; i++) await tx.insert("t", { a: i, b: n - i });
  });
}

/** `by_key` on `a` over `n` documents, and its replacement on `b` created hidden. */
async function replacementCreated(db: Database, n: number): Promise<void> {
  await db.run((tx) => tx.createIndex("t", "by_key", ["a"]));
  await fill(db, n);
  await db.run((tx) => tx.createIndex("t", "by_key", ["b"], { hidden: true }));
}

describe("hidden indexes", () => {
  it("are built and maintained beside the index of their name, read only by code declaring their fields, and switched in one commit", async () => {
    const t = await openTestDb();
    try {
      await replacementCreated(t.db, 3);
      const table = t.db.catalog.table("t")!.number;
      expect(t.db.catalog.hiddenIndex(table, "by_key", ["b"])!.state).toBe("backfilling");
      // A write racing the backfill is indexed by its own commit.
      await t.db.run((tx) => tx.insert("t", { a: 3, b: -1 }));
      await t.db.waitForBackgroundWork();
      expect(t.db.catalog.hiddenIndex(table, "by_key", ["b"])!.state).toBe("enabled");

      // Found by name: the visible one, for code declaring nothing or its fields.
      expect(await readByKey(t.db, null)).toEqual([0, 1, 2, 3]);
      expect(await readByKey(t.db, OLD)).toEqual([0, 1, 2, 3]);
      // Code declaring the new fields reads the hidden one, backfilled and maintained.
      expect(await readByKey(t.db, NEW)).toEqual([3, 2, 1, 0]);

      await t.db.run(async (tx) => {
        await tx.hideIndex("t", "by_key");
        await tx.showIndex("t", "by_key", ["b"]);
      });
      expect(await readByKey(t.db, null)).toEqual([3, 2, 1, 0]);
      expect(await readByKey(t.db, NEW)).toEqual([3, 2, 1, 0]);
      // The old code still reads the old index, now hidden and still maintained.
      await t.db.run((tx) => tx.insert("t", { a: 4, b: -2 }));
      expect(await readByKey(t.db, OLD)).toEqual([0, 1, 2, 3, 4]);

      await t.db.run((tx) => tx.dropHiddenIndex("t", "by_key", ["a"]));
      expect(t.db.catalog.hiddenIndexes()).toEqual([]);
      // With its index gone, the old code is refused rather than read the other fields' order.
      expect((await rejection(readByKey(t.db, OLD))).message).toBe(
        'Index t.by_key is on ["b"] but this code declared it on ["a"]: a deploy changed it',
      );
    } finally {
      await t.close();
    }
  });

  it("keep being hidden across a reopen", async () => {
    const t = await openTestDb();
    try {
      await replacementCreated(t.db, 2);
      await t.db.waitForBackgroundWork();
      const reopened = await t.reopen();
      const table = reopened.catalog.table("t")!.number;
      expect(reopened.catalog.index(table, "by_key")!.fields).toEqual(["a"]);
      expect(reopened.catalog.hiddenIndexes().map((i) => i.fields)).toEqual([["b"]]);
      expect(await readByKey(reopened, NEW)).toEqual([1, 0]);
    } finally {
      await t.close();
    }
  });

  it("are refused where they would be ambiguous, and do not count against the table's limit", async () => {
    const t = await openTestDb();
    try {
      await t.db.run(async (tx) => {
        for (let i = 0; i < 32; i++) await tx.createIndex("t", `i${i}`, ["a"]);
      });
      await t.db.run((tx) => tx.createIndex("t", "i0", ["b"], { hidden: true }));
      const refusals = await Promise.all(
        [
          (tx: Transaction) => tx.createIndex("t", "i0", ["b"], { hidden: true }),
          (tx: Transaction) => tx.createIndex("t", "extra", ["b"]),
          (tx: Transaction) => tx.showIndex("t", "i0", ["b"]),
          (tx: Transaction) => tx.showIndex("t", "i1", ["b"]),
          (tx: Transaction) => tx.dropHiddenIndex("t", "i0", ["a"]),
          async (tx: Transaction) => {
            await tx.hideIndex("t", "i0");
            // i0 on ["a"] is hidden now: hiding another i0 on ["a"] would make two.
            await tx.createIndex("t", "i0", ["a"]);
            await tx.hideIndex("t", "i0");
          },
        ].map((f) => rejection(t.db.run(f))),
      );
      for (const e of refusals) expect(e).toBeInstanceOf(DatabaseError);
      expect(refusals.map((e) => e.message)).toEqual([
        "Index t.i0 already has a hidden version on these fields",
        "Table t already has 32 indexes, the maximum",
        "Index t.i0 already exists",
        "Index t.i1 has no hidden version on these fields",
        "Index t.i0 has no hidden version on these fields",
        "Index t.i0 already has a hidden version on these fields",
      ]);
    } finally {
      await t.close();
    }
  });
});
