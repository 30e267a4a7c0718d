import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConflictError, DatabaseError, type Transaction } from "../../src/database/index.js";
import type { Persistence } from "../../src/persistence/index.js";
import { SqlitePersistence } from "../../src/persistence/index.js";
import { openTestDb, type TestDb } from "../helpers.js";

let t: TestDb;
beforeEach(async () => {
  t = await openTestDb();
});
afterEach(async () => {
  await t.close();
});

async function seed(n: number, fields: (i: number) => Record<string, unknown> = (i) => ({ k: i })) {
  await t.db.run(async (tx) => {
    await tx.createIndex("kv", "by_k", ["k"]);
  });
  const ids: string[] = [];
  for (let i = 0; i < n; i += 500) {
    const { value } = await t.db.run(async (tx) => {
      const out: string[] = [];
      for (let j = i; j < Math.min(n, i + 500); j++) out.push(await tx.insert("kv", fields(j)));
      return out;
    });
    ids.push(...value);
  }
  return ids;
}

const ks = (docs: Array<Record<string, unknown>>) => docs.map((d) => d.k);

describe("reads", () => {
  it("see the transaction's own writes, in gets and in scans", async () => {
    const [a, b] = await seed(3);
    const tx = t.db.begin();
    await tx.patch(a!, { k: 10 });
    await tx.delete(b!);
    const c = await tx.insert("kv", { k: 1.5 });
    expect((await tx.get(a!))?.k).toBe(10);
    expect(await tx.get(b!)).toBeNull();
    expect((await tx.get(c))?.k).toBe(1.5);
    expect(ks(await tx.query("kv", "by_k").collect())).toEqual([1.5, 2, 10]);
    expect(ks(await tx.query("kv", "by_k", [], "desc").collect())).toEqual([10, 2, 1.5]);
    expect(ks(await tx.query("kv", "by_creation_time").collect())).toEqual([10, 2, 1.5]);
    tx.abort();
    // Aborted: nothing of it is visible.
    const after = await t.db.run((tx2) => tx2.query("kv", "by_k").collect());
    expect(ks(after.value)).toEqual([0, 1, 2]);
  });

  it("read a fixed snapshot while others commit", async () => {
    const [a] = await seed(1);
    const reader = t.db.begin({ readOnly: true });
    await t.db.run((tx) => tx.patch(a!, { k: 99 }));
    await t.db.run((tx) => tx.insert("kv", { k: 5 }));
    expect((await reader.get(a!))?.k).toBe(0);
    expect(ks(await reader.query("kv", "by_k").collect())).toEqual([0]);
  });

  it("answer equality prefixes and bounds, nested paths and missing fields", async () => {
    await t.db.run(async (tx) => {
      await tx.createIndex("people", "by_team_age", ["team", "info.age"]);
      await tx.insert("people", { name: "a", team: "red", info: { age: 30 } });
      await tx.insert("people", { name: "b", team: "red", info: { age: 20 } });
      await tx.insert("people", { name: "c", team: "blue", info: { age: 25 } });
      await tx.insert("people", { name: "d", team: "red" });
      await tx.insert("people", { name: "e", info: { age: 1 } });
    });
    const names = async (
      range: Parameters<Transaction["query"]>[2],
      order: "asc" | "desc" = "asc",
    ) =>
      (await t.db.run((tx) => tx.query("people", "by_team_age", range, order).collect())).value.map(
        (d) => d.name,
      );
    expect(await names([])).toEqual(["e", "c", "d", "b", "a"]);
    expect(await names([{ type: "Eq", fieldPath: "team", value: "red" }])).toEqual(["d", "b", "a"]);
    expect(await names([{ type: "Eq", fieldPath: "team", value: undefined }])).toEqual(["e"]);
    expect(
      await names([
        { type: "Eq", fieldPath: "team", value: "red" },
        { type: "Gt", fieldPath: "info.age", value: 20 },
      ]),
    ).toEqual(["a"]);
    expect(
      await names(
        [
          { type: "Eq", fieldPath: "team", value: "red" },
          { type: "Gte", fieldPath: "info.age", value: 20 },
          { type: "Lte", fieldPath: "info.age", value: 30 },
        ],
        "desc",
      ),
    ).toEqual(["a", "b"]);
    expect(
      await names([
        { type: "Eq", fieldPath: "team", value: "red" },
        { type: "Lt", fieldPath: "info.age", value: 0 },
      ]),
    ).toEqual(["d"]);
    expect(
      await names([
        { type: "Eq", fieldPath: "team", value: "red" },
        { type: "Gt", fieldPath: "info.age", value: 50 },
        { type: "Lt", fieldPath: "info.age", value: 10 },
      ]),
    ).toEqual([]);
  });

  it("refuse range expressions an index cannot answer", async () => {
    await seed(1);
    const tx = t.db.begin();
    expect(() => tx.query("kv", "by_k", [{ type: "Eq", fieldPath: "other", value: 1 }])).toThrow(
      DatabaseError,
    );
    expect(() =>
      tx.query("kv", "by_k", [
        { type: "Gt", fieldPath: "k", value: 1 },
        { type: "Gt", fieldPath: "k", value: 2 },
      ]),
    ).toThrow(/two lower bounds/);
    expect(() => tx.query("kv", "nope")).toThrow(/Index kv.nope not found/);
    expect(() => tx.query("missing", "by_x")).toThrow(/does not exist/);
    expect(await tx.query("missing", "by_creation_time").collect()).toEqual([]);
  });

  it("stream: a scan that stops after 10 documents reads about 10 from storage", async () => {
    const file = `${t.dir}/db.sqlite`;
    await seed(2000);
    await t.db.close();
    let rowsRead = 0;
    const inner = new SqlitePersistence({ path: file });
    const counting: Persistence = Object.assign(Object.create(inner), {
      scanIndex: async (...args: Parameters<Persistence["scanIndex"]>) => {
        const rows = await inner.scanIndex(...args);
        rowsRead += rows.length;
        return rows;
      },
      scanDocuments: async (...args: Parameters<Persistence["scanDocuments"]>) => {
        const rows = await inner.scanDocuments(...args);
        rowsRead += rows.length;
        return rows;
      },
    });
    const { Database } = await import("../../src/database/index.js");
    t.db = await Database.open({ persistence: counting, gcIntervalMs: 0 });
    const tx = t.db.begin({ readOnly: true });
    const scan = tx.query("kv", "by_k", [{ type: "Gte", fieldPath: "k", value: 500 }]);
    expect(ks(await scan.next(10))).toEqual([500, 501, 502, 503, 504, 505, 506, 507, 508, 509]);
    expect(rowsRead).toBeLessThanOrEqual(20);
    expect(tx.counters.documentsRead).toBe(10);
    const byId = tx.query("kv", "by_id");
    expect(await byId.next(3)).toHaveLength(3);
    expect(rowsRead).toBeLessThanOrEqual(40);
  });
});

describe("restart", () => {
  it("forgets what was read and written, keeps the snapshot, and commits only what came after", async () => {
    const [a, b] = await seed(3);
    await t.db.run(async (tx) => {
      await tx.createIndex("other", "by_k", ["k"]);
    });
    const tx = t.db.begin();
    const beginTs = tx.beginTs;
    await tx.query("kv", "by_k").collect();
    await tx.patch(a!, { k: 10 });
    await tx.insert("kv", { k: 99 });
    await tx.createIndex("kv", "by_name", ["name"]);
    expect(tx.counters.documentsRead).toBeGreaterThan(0);
    // Committed meanwhile: a conflict for what the first run read, not for the second.
    await t.db.run((other) => other.patch(b!, { k: 20 }));
    tx.restart();
    expect(tx.beginTs).toBe(beginTs);
    expect(tx.readSet.isEmpty).toBe(true);
    expect(tx.writes.size).toBe(0);
    expect(tx.catalogWrites).toBe(0);
    expect(tx.counters).toEqual({
      documentsRead: 0,
      bytesRead: 0,
      indexRanges: 0,
      documentsWritten: 0,
      bytesWritten: 0,
    });
    // The same snapshot, without the forgotten writes (b, changed since, is not read again:
    // the scan that read it before is forgotten too, so the commit below does not conflict).
    expect((await tx.get(a!))?.k).toBe(0);
    // The index the forgotten run created is gone from what it sees.
    const kv = tx.currentCatalog.table("kv")!;
    expect(tx.currentCatalog.index(kv.number, "by_name")).toBeUndefined();
    expect(tx.currentCatalog.index(kv.number, "by_k")).toBeDefined();
    await tx.insert("other", { k: 7 });
    await t.db.commit(tx);
    const after = await t.db.run(async (r) => ({
      kv: ks(await r.query("kv", "by_k").collect()),
      other: ks(await r.query("other", "by_k").collect()),
    }));
    expect(after.value).toEqual({ kv: [0, 2, 20], other: [7] });
  });
});

describe("conflicts", () => {
  it("phantoms: an empty range that was scanned conflicts with an insert into it", async () => {
    await seed(10, (i) => ({ k: i * 10 }));
    const scanner = t.db.begin();
    const found = await scanner
      .query("kv", "by_k", [
        { type: "Gt", fieldPath: "k", value: 40 },
        { type: "Lt", fieldPath: "k", value: 50 },
      ])
      .collect();
    expect(found).toEqual([]);
    await scanner.insert("log", { saw: found.length });
    await t.db.run((tx) => tx.insert("kv", { k: 45 }));
    await expect(t.db.commit(scanner)).rejects.toBeInstanceOf(ConflictError);
  });

  it("phantoms: a scan of a different range does not conflict", async () => {
    await seed(10, (i) => ({ k: i * 10 }));
    const scanner = t.db.begin();
    await scanner
      .query("kv", "by_k", [
        { type: "Gt", fieldPath: "k", value: 40 },
        { type: "Lt", fieldPath: "k", value: 50 },
      ])
      .collect();
    await scanner.insert("log", { ok: true });
    await t.db.run((tx) => tx.insert("kv", { k: 55 }));
    await t.db.run((tx) => tx.insert("kv", { k: 40 }));
    await expect(t.db.commit(scanner)).resolves.toBeTypeOf("bigint");
  });

  it("first() records the empty tail it saw; take(n) only what it returned", async () => {
    await seed(10, (i) => ({ k: i * 10 }));
    const first = t.db.begin();
    expect(
      await first.query("kv", "by_k", [{ type: "Gt", fieldPath: "k", value: 1000 }]).next(1),
    ).toEqual([]);
    await first.insert("log", {});
    const take = t.db.begin();
    expect(ks(await take.query("kv", "by_k").next(3))).toEqual([0, 10, 20]);
    await take.insert("log", {});
    await t.db.run((tx) => tx.insert("kv", { k: 2000 }));
    await expect(t.db.commit(first)).rejects.toBeInstanceOf(ConflictError);
    // 2000 lies after the three keys `take` observed.
    await expect(t.db.commit(take)).resolves.toBeTypeOf("bigint");
  });

  it("a changed document conflicts with readers of an index whose key did not change", async () => {
    const [a] = await seed(3);
    const reader = t.db.begin();
    await reader.query("kv", "by_k", [{ type: "Eq", fieldPath: "k", value: 0 }]).collect();
    await reader.insert("log", {});
    await t.db.run((tx) => tx.patch(a!, { extra: 1 }));
    await expect(t.db.commit(reader)).rejects.toBeInstanceOf(ConflictError);
  });

  it("concurrent creation of the same table conflicts; of different tables, too, but retries succeed", async () => {
    const a = t.db.begin();
    const b = t.db.begin();
    await a.insert("fresh", { from: "a" });
    await b.insert("fresh", { from: "b" });
    const results = await Promise.allSettled([t.db.commit(a), t.db.commit(b)]);
    expect(results.filter((r) => r.status === "rejected")).toHaveLength(1);
    const runs = await Promise.all(
      ["x", "y", "z"].map((name) => t.db.run((tx) => tx.insert(name, { name }))),
    );
    const numbers = ["fresh", "x", "y", "z"].map((n) => t.db.catalog.table(n)!.number);
    expect(new Set(numbers).size).toBe(4);
    expect(runs.every((r) => r.attempts >= 1)).toBe(true);
  });

  it("commits read-only transactions at their begin timestamp without validation", async () => {
    const [a] = await seed(1);
    const reader = t.db.begin();
    await reader.get(a!);
    await t.db.run((tx) => tx.patch(a!, { k: 1 }));
    await expect(t.db.commit(reader)).resolves.toBe(reader.beginTs);
  });
});

describe("misuse", () => {
  it("reports missing documents, bad IDs, bad tables and finished transactions clearly", async () => {
    const [a] = await seed(1);
    const tx = t.db.begin();
    await expect(async () => tx.get("not-an-id")).rejects.toThrow(/Invalid ID "not-an-id"/);
    await expect(async () => tx.get(a!, "other")).rejects.toThrow(/ID of another table/);
    await expect(async () => tx.insert("_secret", {})).rejects.toThrow(
      /reserved for system tables/,
    );
    await expect(async () => tx.insert("bad name", {})).rejects.toThrow(/Invalid table name/);
    await expect(async () => tx.insert("kv", { _id: "x" })).rejects.toThrow(
      /System field _id cannot be set/,
    );
    await expect(async () => tx.patch(a!, { _creationTime: 5 })).rejects.toThrow(
      /cannot be changed/,
    );
    await tx.delete(a!);
    await expect(async () => tx.patch(a!, { k: 1 })).rejects.toThrow(/does not exist/);
    await t.db.commit(tx);
    await expect(async () => tx.get(a!)).rejects.toThrow(/already committed/);
    const ro = t.db.begin({ readOnly: true });
    await expect(async () => ro.insert("kv", {})).rejects.toThrow(/read-only/);
  });
});
