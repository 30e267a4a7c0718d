/**
 * Index edge cases found in review: field names that exist on
 * Object.prototype, string and bytes bounds extended by NULs, and dropping
 * indexes while older snapshots or a backfill still need them.
 */
import { describe, expect, it } from "vitest";
import { SnapshotTooOldError } from "../../src/database/index.js";
import { openTestDb } from "../helpers.js";

describe("index keys", () => {
  it("treat a field named like an Object.prototype member as missing when the document lacks it", async () => {
    const t = await openTestDb();
    try {
      await t.db.run(async (tx) => {
        await tx.createIndex("p", "by_ctor", ["constructor"]);
        await tx.createIndex("p", "by_nested", ["a.toString"]);
      });
      await t.db.run(async (tx) => {
        await tx.insert("p", { other: 1, a: {} });
        await tx.insert("p", { constructor: "x", a: { toString: 2 } });
      });
      const { value } = await t.db.run(async (tx) => ({
        missing: await tx
          .query("p", "by_ctor", [{ type: "Eq", fieldPath: "constructor", value: undefined }])
          .collect(),
        present: await tx
          .query("p", "by_nested", [{ type: "Eq", fieldPath: "a.toString", value: 2 }])
          .collect(),
      }));
      expect(value.missing.map((d) => d.other)).toEqual([1]);
      expect(value.present.map((d) => d.constructor)).toEqual(["x"]);
    } finally {
      await t.close();
    }
  });

  it("bound strings and bytes by value, not by shared bytes, when a value extends another with NULs", async () => {
    const t = await openTestDb();
    try {
      const bytes = (...b: number[]) => new Uint8Array(b).buffer;
      await t.db.run(async (tx) => {
        await tx.createIndex("s", "by_s", ["s"]);
        for (const s of ["a", "a\0b", "b"]) await tx.insert("s", { s });
        await tx.createIndex("b", "by_b", ["b"]);
        await tx.insert("b", { b: bytes(1) });
        await tx.insert("b", { b: bytes(1, 0, 2) });
      });
      const { value } = await t.db.run(async (tx) => ({
        eq: await tx.query("s", "by_s", [{ type: "Eq", fieldPath: "s", value: "a" }]).collect(),
        gt: await tx.query("s", "by_s", [{ type: "Gt", fieldPath: "s", value: "a" }]).collect(),
        lte: await tx.query("s", "by_s", [{ type: "Lte", fieldPath: "s", value: "a" }]).collect(),
        bytes: await tx
          .query("b", "by_b", [{ type: "Eq", fieldPath: "b", value: bytes(1) }])
          .collect(),
      }));
      expect(value.eq.map((d) => d.s)).toEqual(["a"]);
      expect(value.gt.map((d) => d.s)).toEqual(["a\0b", "b"]);
      expect(value.lte.map((d) => d.s)).toEqual(["a"]);
      expect(value.bytes).toHaveLength(1);
    } finally {
      await t.close();
    }
  });
});

describe("dropping indexes", () => {
  it("keeps a dropped index readable for snapshots before the drop until the retention horizon passes it", async () => {
    let now = BigInt(Date.now()) * 1_000_000n;
    const t = await openTestDb({ retentionMs: 1000, wallClockNs: () => now });
    try {
      await t.db.run(async (tx) => {
        await tx.createIndex("d", "by_v", ["v"]);
        for (let i = 0; i < 20; i++) await tx.insert("d", { v: i });
      });
      const number = t.db.catalog.index(t.db.catalog.table("d")!.number, "by_v")!.number;
      const before = t.db.latestTs();
      const running = t.db.begin({ readOnly: true });
      await t.db.run((tx) => tx.dropIndex("d", "by_v"));
      await t.db.waitForBackgroundWork();
      expect(await running.query("d", "by_v").collect()).toHaveLength(20);
      expect(await (await t.db.beginAt(before)).query("d", "by_v").collect()).toHaveLength(20);

      now += 10_000_000_000n;
      await t.db.run((tx) => tx.insert("d", { v: 99 }));
      await t.db.collectGarbage();
      await t.db.waitForBackgroundWork();
      expect(t.persistence.countRows("index_entries", number)).toBe(0);
      // The old snapshot is refused now, instead of showing an emptied index.
      await expect(running.query("d", "by_v").collect()).rejects.toBeInstanceOf(
        SnapshotTooOldError,
      );
    } finally {
      await t.close();
    }
  });

  it("stops a backfill when its index is dropped and leaves no entries behind", async () => {
    let now = BigInt(Date.now()) * 1_000_000n;
    const t = await openTestDb({ retentionMs: 1000, wallClockNs: () => now });
    try {
      for (let i = 0; i < 3; i++) {
        await t.db.run(async (tx) => {
          for (let j = 0; j < 1000; j++) await tx.insert("r", { n: j });
        });
      }
      await t.db.run((tx) => tx.createIndex("r", "by_n", ["n"]));
      const table = t.db.catalog.table("r")!.number;
      const number = t.db.catalog.index(table, "by_n")!.number;
      expect(t.db.catalog.index(table, "by_n")!.state).toBe("backfilling");
      await t.db.run((tx) => tx.dropIndex("r", "by_n"));
      await t.db.waitForBackgroundWork();
      now += 10_000_000_000n;
      await t.db.run((tx) => tx.insert("r", { n: -1 }));
      await t.db.collectGarbage();
      await t.db.waitForBackgroundWork();
      expect(t.persistence.countRows("index_entries", number)).toBe(0);
    } finally {
      await t.close();
    }
  });
});
