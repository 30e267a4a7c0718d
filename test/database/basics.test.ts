import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConflictError, Database } from "../../src/database/index.js";
import { SqlitePersistence } from "../../src/persistence/index.js";
import { openTestDb, type TestDb, tempDir } from "../helpers.js";

let t: TestDb;
beforeEach(async () => {
  t = await openTestDb();
});
afterEach(async () => {
  await t.close();
});

describe("documents", () => {
  it("inserts, reads back, patches, replaces and deletes", async () => {
    const { value: id } = await t.db.run((tx) => tx.insert("items", { name: "hat", remaining: 1 }));
    const read = await t.db.run((tx) => tx.get(id));
    expect(read.value).toMatchObject({ _id: id, name: "hat", remaining: 1 });
    expect(typeof read.value?._creationTime).toBe("number");
    await t.db.run((tx) => tx.patch(id, { remaining: 0, color: "red" }));
    expect((await t.db.run((tx) => tx.get(id))).value).toMatchObject({
      remaining: 0,
      color: "red",
    });
    await t.db.run((tx) => tx.patch(id, { color: undefined }));
    expect((await t.db.run((tx) => tx.get(id))).value).not.toHaveProperty("color");
    await t.db.run((tx) => tx.replace(id, { name: "cap" }));
    const replaced = (await t.db.run((tx) => tx.get(id))).value;
    expect(replaced).toEqual({ _id: id, _creationTime: read.value?._creationTime, name: "cap" });
    await t.db.run((tx) => tx.delete(id));
    expect((await t.db.run((tx) => tx.get(id))).value).toBeNull();
  });
});

describe("last hat race", () => {
  it("lets exactly one of two concurrent decrements commit", async () => {
    const { value: hat } = await t.db.run((tx) =>
      tx.insert("items", { name: "hat", remaining: 1 }),
    );
    const alice = t.db.begin();
    const bob = t.db.begin();
    for (const tx of [alice, bob]) {
      const item = await tx.get(hat);
      expect(item?.remaining).toBe(1);
      await tx.patch(hat, { remaining: (item!.remaining as number) - 1 });
      await tx.insert("carts", { item: hat });
    }
    const results = await Promise.allSettled([t.db.commit(alice), t.db.commit(bob)]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const failed = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect(failed.reason).toBeInstanceOf(ConflictError);
    expect(failed.reason.message).toMatch(/"items" table changed/);
    // Re-run, the loser sees the new stock.
    const retry = t.db.begin();
    expect((await retry.get(hat))?.remaining).toBe(0);
    retry.abort();
  });
});

describe("opening", () => {
  it("lets go of the persistence (and its file's lock) when opening fails", async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "db.sqlite");
      const broken = new SqlitePersistence({ path });
      broken.load = () => Promise.reject(new Error("unreadable metadata"));
      await expect(Database.open({ persistence: broken, gcIntervalMs: 0 })).rejects.toThrow(
        "unreadable metadata",
      );
      // Still open, the first would hold the lock and this would be refused.
      const db = await Database.open({
        persistence: new SqlitePersistence({ path, busyTimeoutMs: 100 }),
        gcIntervalMs: 0,
      });
      await db.close();
    } finally {
      dir.remove();
    }
  });
});
