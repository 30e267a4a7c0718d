import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  applySchemaIndexes,
  findSchemaViolation,
  schemaFromJson,
  VALIDATION_PAGE,
} from "../../src/functions/schema.js";
import { countTurns, indexesOf, openTestDb, type TestDb } from "../helpers.js";

let t: TestDb;
beforeEach(async () => {
  t = await openTestDb();
});
afterEach(async () => {
  await t.close();
});

const schema = schemaFromJson(
  (
    defineSchema({ notes: defineTable({ text: v.string() }) }) as unknown as { export(): string }
  ).export(),
);

/** Inserts `count` notes; `bad` (an index among them) gets a number for text. */
async function addNotes(count: number, bad: number | null): Promise<string | null> {
  let badId: string | null = null;
  for (let start = 0; start < count; start += 500) {
    const { value } = await t.db.run(async (tx) => {
      let id: string | null = null;
      for (let i = start; i < Math.min(count, start + 500); i++) {
        const inserted = await tx.insert("notes", { text: i === bad ? i : `note ${i}` });
        if (i === bad) id = inserted;
      }
      return id;
    });
    badId ??= value;
  }
  return badId;
}

describe("validating existing data against a pushed schema", () => {
  it("finds a document that does not match, pages after the first", async () => {
    const badId = await addNotes(VALIDATION_PAGE * 2 + 10, VALIDATION_PAGE * 2 + 5);
    const found = await findSchemaViolation(t.db, schema);
    expect(found?.table).toBe("notes");
    expect(found?.error).toContain(
      `Document with ID "${badId}" in table "notes" does not match the schema`,
    );
  });

  it("lets the event loop turn between pages", async () => {
    const pages = 3;
    await addNotes(VALIDATION_PAGE * pages, null);
    // Reads answered at once would otherwise check every page in one stretch,
    // holding every client of the server until the last.
    const loop = countTurns();
    expect(await findSchemaViolation(t.db, schema)).toBeNull();
    expect(loop.stop()).toBeGreaterThanOrEqual(pages - 1);
  });

  it("starts again at the newest snapshot when its own leaves the retention window meanwhile", async () => {
    // An idle deployment: its latest commit is older than the retention window.
    const clock = { now: BigInt(Date.now()) * 1_000_000n };
    await t.reopen({ retentionMs: 1000, wallClockNs: () => clock.now });
    const badId = await addNotes(VALIDATION_PAGE + 10, VALIDATION_PAGE + 5);
    clock.now += 10_000_000_000n;
    const db = t.db;
    const begin = db.beginAt.bind(db);
    const snapshots: bigint[] = [];
    db.beginAt = async (ts: bigint) => {
      snapshots.push(ts);
      // Between the first page and the second: a commit, then garbage collection.
      if (snapshots.length === 2) {
        await db.run((tx) => tx.insert("notes", { text: "meanwhile" }));
        await db.collectGarbage();
      }
      return begin(ts);
    };
    const found = await findSchemaViolation(db, schema);
    expect(found?.error).toContain(`Document with ID "${badId}"`);
    expect(snapshots.length).toBeGreaterThan(2);
    expect(snapshots.at(-1)).toBeGreaterThan(snapshots[0]!);
  });
});

describe("the indexes of the app a deployment starts with", () => {
  const declaring = (indexes: Record<string, string[]>) => {
    let table = defineTable({ a: v.number(), b: v.number(), c: v.number() });
    for (const [name, fields] of Object.entries(indexes))
      table = table.index(name, fields as ["a"]);
    return schemaFromJson((defineSchema({ t: table }) as unknown as { export(): string }).export());
  };
  const indexes = () => indexesOf(t.db, "t");

  it("are the schema's: a hidden one on its fields shown, others rebuilt, leftover hidden ones dropped", async () => {
    await t.db.run(async (tx) => {
      await tx.createIndex("t", "kept", ["a"]);
      await tx.createIndex("t", "switched", ["a"]);
      await tx.createIndex("t", "rebuilt", ["a"]);
      for (let i = 0; i < 3; i++) await tx.insert("t", { a: i, b: -i, c: i });
    });
    // What a push stopped between its steps leaves: a replacement built hidden, and another
    // index's hidden version the schema does not declare.
    await t.db.run(async (tx) => {
      await tx.createIndex("t", "switched", ["b"], { hidden: true });
      await tx.createIndex("t", "kept", ["c"], { hidden: true });
    });
    await t.db.waitForBackgroundWork();
    const replacement = t.db.catalog.hiddenIndex(t.db.catalog.table("t")!.number, "switched", [
      "b",
    ])!.number;

    await applySchemaIndexes(t.db, declaring({ kept: ["a"], switched: ["b"], rebuilt: ["c"] }));
    expect(indexes()).toEqual({
      found: ["kept(a)", "rebuilt(c)", "switched(b)"],
      hidden: [],
    });
    const catalog = t.db.catalog;
    const table = catalog.table("t")!.number;
    // Shown as it was built, not built again.
    expect(catalog.index(table, "switched")!.number).toBe(replacement);
    const { value } = await t.db.run((tx) => tx.query("t", "rebuilt").collect());
    expect(value.map((d) => d.c)).toEqual([0, 1, 2]);
  });

  it("lose their hidden leftovers also when the app has no schema", async () => {
    await t.db.run(async (tx) => {
      await tx.createIndex("t", "by_a", ["a"]);
      await tx.createIndex("t", "by_a", ["b"], { hidden: true });
    });
    await applySchemaIndexes(t.db, null);
    expect(indexes()).toEqual({ found: ["by_a(a)"], hidden: [] });
  });

  it("have their tables, documents or not", async () => {
    expect(t.db.catalog.table("t")).toBeUndefined();
    await applySchemaIndexes(t.db, declaring({}));
    expect(t.db.catalog.table("t")).toBeDefined();
  });
});
