/**
 * The host side of `1.0/queryStreamNext`: each answer carries the answers of
 * the calls after it (1, 2, 4, … up to 64 more), ending with the end of the
 * stream when it is reached; a limit is never read past. The isolate side
 * (each call gets its own next answer in any order of calls) is tested
 * through the official library in test/functions/runner.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AnswerWithAhead, JsonText } from "../../src/runtime/execution.js";
import { udfSyscalls } from "../../src/runtime/syscalls.js";
import { openTestDb, type TestDb } from "../helpers.js";

type Handler = ReturnType<typeof udfSyscalls>;

let t: TestDb;
beforeAll(async () => {
  t = await openTestDb();
  await t.db.run(async (tx) => {
    for (let i = 0; i < 10; i++) await tx.insert("notes", { n: i });
  });
});
afterAll(() => t?.close());

function handler(db = t.db) {
  const tx = db.begin({ readOnly: true });
  const h = udfSyscalls({
    tx,
    kind: "query",
    identity: null,
    functionName: "notes:list",
    visibility: "public",
    deployment: { name: "test", region: null, class: "s16" },
  });
  return { tx, h };
}

const start = (h: Handler, operators: unknown[] = [], tableName = "notes") =>
  (
    h.sync("1.0/queryStream", {
      query: { source: { type: "FullTableScan", tableName, order: null }, operators },
      version: "1.48.0",
    }) as { queryId: number }
  ).queryId;

/** The `n` of each answer of one call: its own, then those sent ahead ("done" at the end). */
async function call(h: Handler, queryId: number): Promise<unknown[]> {
  const r = await h.async("1.0/queryStreamNext", { queryId });
  const answers = (r instanceof AnswerWithAhead ? [r.value, ...r.ahead] : [r]).map((a) =>
    // A document's answer comes as JSON text.
    a instanceof JsonText ? JSON.parse(a.text) : a,
  ) as Array<{ value: { n: number } | null; done: boolean }>;
  return answers.map((a) => (a.done ? "done" : a.value!.n));
}

describe("queryStreamNext answers sent ahead", () => {
  it("sends 1, 2, 4, … more answers with each, up to the end of the stream", async () => {
    const { tx, h } = handler();
    const queryId = start(h);
    expect(await call(h, queryId)).toEqual([0, 1]);
    expect(await call(h, queryId)).toEqual([2, 3, 4]);
    expect(await call(h, queryId)).toEqual([5, 6, 7, 8, 9]);
    expect(await call(h, queryId)).toEqual(["done"]);
    // The stream is gone on the host once its end was sent.
    await expect(async () => h.async("1.0/queryStreamNext", { queryId })).rejects.toThrow(
      /already closed/,
    );
    tx.abort();
  });

  it("does not read past a limit, and sends the end with the last document", async () => {
    const { tx, h } = handler();
    const queryId = start(h, [{ limit: 1 }]);
    expect(await call(h, queryId)).toEqual([0, "done"]);
    expect(tx.counters.documentsRead).toBe(1);
    tx.abort();
  });

  it("leaves an error met while reading ahead to the call that reaches it", async () => {
    await t.db.run(async (tx) => {
      for (const n of [0, 1, 2, "three", 4]) await tx.insert("mixed", { n });
    });
    const { tx, h } = handler();
    // n + 0 >= -1: a float64 sum, which a string cannot take part in.
    const filter = {
      filter: {
        $gte: [{ $add: [{ $field: "n" }, { $literal: 0 }] }, { $literal: -1 }],
      },
    };
    const queryId = start(h, [filter], "mixed");
    expect(await call(h, queryId)).toEqual([0, 1]);
    // Reading ahead stopped at the document the filter fails on...
    expect(await call(h, queryId)).toEqual([2]);
    // ...whose error the next call gets.
    await expect(async () => h.async("1.0/queryStreamNext", { queryId })).rejects.toThrow(
      /needs two numbers/,
    );
    tx.abort();
  });

  it("stops reading ahead once half of a read limit is used", async () => {
    const limited = await openTestDb({ limits: { maxDocumentsRead: 8 } });
    try {
      await limited.db.run(async (tx) => {
        for (let i = 0; i < 8; i++) await tx.insert("notes", { n: i });
      });
      const { tx, h } = handler(limited.db);
      const queryId = start(h);
      expect(await call(h, queryId)).toEqual([0, 1]);
      expect(await call(h, queryId)).toEqual([2, 3, 4]);
      expect(await call(h, queryId)).toEqual([5]);
      expect(tx.counters.documentsRead).toBe(6);
      tx.abort();
    } finally {
      await limited.close();
    }
  });
});
