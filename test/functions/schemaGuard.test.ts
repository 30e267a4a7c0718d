import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FunctionError } from "../../src/functions/runner.js";
import { schemaFromJson, VALIDATION_PAGE } from "../../src/functions/schema.js";
import { holdSchema, SchemaGuard } from "../../src/functions/schemaGuard.js";
import { openTestDb, rejection, type TestDb } from "../helpers.js";

let t: TestDb;
beforeEach(async () => {
  t = await openTestDb();
});
afterEach(async () => {
  await t.close();
});

const schemaOf = (s: unknown) => schemaFromJson((s as { export(): string }).export());
const schema = schemaOf(defineSchema({ notes: defineTable({ text: v.string() }) }));

const insert = (table: string, doc: Record<string, unknown>) =>
  t.db.run((tx) => tx.insert(table, doc as never));

describe("a schema guard", () => {
  it("watching: lets a commit that breaks the schema through and keeps the first one", async () => {
    const guard = new SchemaGuard(t.db, schema, "watch");
    await insert("notes", { text: "fine" });
    expect(guard.violation).toBeNull();
    const { value: bad } = await insert("notes", { text: 1 });
    await insert("notes", { text: 2 });
    expect(guard.violation?.table).toBe("notes");
    expect(guard.violation?.error).toMatch(
      new RegExp(`^Document with ID "${bad}" in table "notes" does not match the schema: `),
    );
    // Tables the schema does not declare are not its business.
    await insert("other", { text: 3 });
    expect(guard.violation?.error).toContain(bad);
    guard.dispose();
  });

  it("enforcing: fails the commit that breaks the schema, and only that one", async () => {
    const guard = new SchemaGuard(t.db, schema, "enforce");
    // The table exists first: transactions that each create it would conflict.
    const { value: first } = await insert("notes", { text: "first" });
    await t.db.run((tx) => tx.delete(first));
    const txs = ["kept", 7, "also kept"].map((text) => {
      const tx = t.db.begin();
      void tx.insert("notes", { text } as never);
      return tx;
    });
    // Committed together: one batch, validated commit by commit.
    const outcomes = await Promise.allSettled(txs.map((tx) => t.db.commit(tx)));
    expect(outcomes.map((o) => o.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    const error = (outcomes[1] as PromiseRejectedResult).reason as Error;
    expect(error).toBeInstanceOf(FunctionError);
    expect(error.message).toMatch(
      /^Failed to insert or update a document in table "notes" because it does not match the schema: /,
    );
    const { value: texts } = await t.db.run(async (tx) =>
      (await tx.query("notes", "by_creation_time", [], "asc").next(10)).map((d) => d.text),
    );
    expect(texts).toEqual(["kept", "also kept"]);
    // A deletion leaves nothing to check; a patch is checked like an insert.
    const { value: id } = await insert("notes", { text: "x" });
    expect((await rejection(t.db.run((tx) => tx.patch(id, { text: null })))).message).toMatch(
      /does not match the schema/,
    );
    await t.db.run((tx) => tx.delete(id));
    guard.dispose();
    await insert("notes", { text: 8 });
  });

  it("trusts a transaction that checked its writes against this same schema as it made them", async () => {
    const guard = new SchemaGuard(t.db, schema, "enforce");
    const other = schemaOf(defineSchema({ notes: defineTable({ text: v.number() }) }));
    const committed = async (checkedAgainst: unknown) => {
      const tx = t.db.begin();
      tx.writesCheckedAgainst = checkedAgainst;
      await tx.insert("notes", { text: 1 } as never);
      return t.db.commit(tx).then(
        () => true,
        () => false,
      );
    };
    expect(await committed(schema.validators)).toBe(true);
    // The previous app's runner checked against its own schema, not this one.
    expect(await committed(other.validators)).toBe(false);
    expect(await committed(null)).toBe(false);
    guard.dispose();
  });

  it("checks nothing for a schema that turns validation off", async () => {
    const off = schemaOf(
      defineSchema({ notes: defineTable({ text: v.string() }) }, { schemaValidation: false }),
    );
    const guard = new SchemaGuard(t.db, off, "enforce");
    await insert("notes", { text: 1 });
    guard.dispose();
  });
});

describe("holding a schema over the stored data (a push's last check)", () => {
  /** `count` valid notes, 500 per commit. */
  async function addNotes(count: number): Promise<void> {
    for (let start = 0; start < count; start += 500)
      await t.db.run(async (tx) => {
        for (let i = start; i < Math.min(count, start + 500); i++)
          await tx.insert("notes", { text: `note ${i}` } as never);
      });
  }

  it("checks a commit accepted before it but not yet durable", async () => {
    // Begun the moment a batch holding a bad note is written, before its sync:
    // the guard comes too late for that commit, the snapshot must include it.
    let held: ReturnType<typeof holdSchema> | null = null;
    const off = t.db.onWrite(() => {
      held ??= holdSchema(t.db, schema);
    });
    const { value: bad } = await insert("notes", { text: 1 });
    off();
    const outcome = await held!;
    expect(outcome.violation?.error).toContain(`Document with ID "${bad}"`);
  });

  it("fails on a commit after its snapshot, while the data is read", async () => {
    await addNotes(VALIDATION_PAGE + 10);
    const db = t.db;
    const begin = db.beginAt.bind(db);
    let pages = 0;
    let bad: string | null = null;
    db.beginAt = async (ts: bigint) => {
      // Between the first page and the second: after the snapshot, so the check never sees it.
      if (++pages === 2) bad = (await insert("notes", { text: 2 })).value;
      return begin(ts);
    };
    const outcome = await holdSchema(db, schema);
    expect(pages).toBeGreaterThan(1);
    expect(outcome.violation?.error).toContain(`Document with ID "${bad}"`);
  });

  it("enforces from the step that finds nothing", async () => {
    await addNotes(10);
    const outcome = await holdSchema(t.db, schema);
    expect(outcome.violation).toBeNull();
    const error = await rejection(insert("notes", { text: 3 }));
    expect(error.message).toMatch(/in table "notes" because it does not match the schema/);
    if (outcome.violation === null) outcome.guard.dispose();
    await insert("notes", { text: 4 });
  });
});
