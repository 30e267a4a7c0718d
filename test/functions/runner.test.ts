/**
 * The fixture app (test/fixtures/app/convex) run end to end: bundled like the
 * official CLI does, linked, imported into a V8 snapshot, and executed in
 * isolates against a real SQLite database through the official
 * `convex/server` library's syscalls.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FunctionRunner, MutationCounters } from "../../src/functions/runner.js";
import type { AppRuntime } from "../../src/runtime/appRuntime.js";
import type { Value } from "../../src/values/index.js";
import { type FixtureApp, failure, openFixtureApp } from "./fixtureApp.js";

const IMPORT_TIME = 1_700_000_000_000;

let app: FixtureApp;
let runtime: AppRuntime;
let runner: FunctionRunner;
const counters: MutationCounters = { committed: 0, conflicts: 0 };

beforeAll(async () => {
  app = await openFixtureApp({
    runtime: { importTimeMs: IMPORT_TIME, isolates: 2 },
    runner: { counters },
  });
  ({ runtime, runner } = app);
});

afterAll(() => app?.close());

const query = (path: string, args: Value = {}) => app.query(path, args);
const mutation = (path: string, args: Value = {}) => app.mutation(path, args);

describe("module analysis", () => {
  it("lists every function with its kind, visibility and validators", () => {
    const items = runtime.modules.find((m) => m.path === "items.js")!;
    const byName = Object.fromEntries(items.functions.map((f) => [f.name, f]));
    expect(Object.keys(byName).sort()).toEqual(["add", "echo", "get", "inStock", "secret"]);
    expect(byName.add).toMatchObject({ kind: "mutation", visibility: "public" });
    expect(byName.secret).toMatchObject({ kind: "query", visibility: "internal" });
    expect(JSON.parse(byName.get!.args!)).toEqual({
      type: "object",
      value: { id: { fieldType: { type: "id", tableName: "items" }, optional: false } },
    });
    expect(JSON.parse(byName.add!.returns!)).toEqual({ type: "id", tableName: "items" });
    expect(byName.echo!.args).toBe('{"type":"any"}');
    expect(runtime.modules.find((m) => m.path === "lib/format.js")?.functions).toEqual([]);
  });
});

describe("queries and mutations", () => {
  it("insert, get and index range queries", async () => {
    const hat = await mutation("items:add", { name: "hat", price: 19.5, remaining: 1 });
    await mutation("items:add", { name: "shirt", price: 25, remaining: 0 });
    expect(await query("items:get", { id: hat })).toMatchObject({
      _id: hat,
      name: "hat",
      price: 19.5,
    });
    expect(await query("items:inStock")).toEqual(["hat (19.50)"]);
    expect(await query("items:echo", { a: 1n, b: [new ArrayBuffer(2)] })).toEqual({
      a: 1n,
      b: [new ArrayBuffer(2)],
    });
  });

  it("serializes the last-hat race: exactly one cart gets it", async () => {
    const hat = await mutation("items:add", { name: "last hat", price: 10, remaining: 1 });
    const results = await Promise.allSettled([
      mutation("cart:addCart", { itemId: hat, userToken: "alice" }),
      mutation("cart:addCart", { itemId: hat, userToken: "bob" }),
    ]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const rejected = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect(rejected.reason.message).toMatch(/Uncaught Error: Insufficient stock of last hat/);
    expect(await query("items:get", { id: hat })).toMatchObject({ remaining: 0 });
  });

  it("leaves no writes behind when a mutation throws", async () => {
    const e = await failure(mutation("behaviour:fail", { text: "ghost" }));
    expect(e.kind).toBe("user");
    const page = (await query("behaviour:page", { cursor: null, numItems: 100 })) as {
      page: Array<{ text: string }>;
    };
    expect(page.page.map((n) => n.text)).not.toContain("ghost");
  });

  it("filters, orders, takes, iterates and finds unique documents", async () => {
    await mutation("items:add", { name: "skip", price: 100, remaining: 3 });
    await mutation("items:add", { name: "cheap", price: 1, remaining: 3 });
    // Items so far: hat 19.5, shirt 25, last hat 10, skip 100, cheap 1.
    expect(((await query("behaviour:filtered", { min: 15 })) as string[]).sort()).toEqual([
      "hat",
      "shirt",
    ]);
    const counts = (await query("behaviour:counts")) as {
      first: string;
      taken: number;
      iterated: number;
    };
    expect(counts).toEqual({ first: "cheap", taken: 2, iterated: 5 });
    expect(await query("behaviour:uniqueByName", { name: "cheap" })).toMatch(/^[0-9a-z]{32}$/);
  });

  it("paginates with cursors until done", async () => {
    for (let i = 0; i < 5; i++) await mutation("behaviour:addNote", { text: `note ${i}` });
    const seen: string[] = [];
    let cursor: string | null = null;
    for (let pages = 0; pages < 10; pages++) {
      const r = (await query("behaviour:page", { cursor, numItems: 2 })) as {
        page: Array<{ text: string }>;
        isDone: boolean;
        continueCursor: string;
      };
      seen.push(...r.page.map((n) => n.text));
      if (r.isDone) break;
      cursor = r.continueCursor;
    }
    expect(seen.slice(0, 5)).toEqual(["note 4", "note 3", "note 2", "note 1", "note 0"]);
  });

  it("gives every query stream call its own next document, whatever the order of the calls", async () => {
    // Enough documents for several rounds of answers sent ahead (1, 2, 4, … 64 at a time).
    await mutation("behaviour:addNotes", { prefix: "p", count: 150 });
    const r = (await query("behaviour:streamOrder")) as {
      all: string[];
      interleaved: string[];
      burst: string[];
      early: number;
      afterBreak: string[];
      race: string;
    };
    const { all } = r;
    expect(all.length).toBeGreaterThanOrEqual(150);
    expect(all.filter((t) => t.startsWith("p")).slice(0, 150)).toEqual(
      Array.from({ length: 150 }, (_, i) => `p${i}`),
    );
    const reversed = [...all].reverse();
    expect(r.interleaved).toEqual(all.slice(0, 70).flatMap((t, i) => [t, reversed[i]]));
    expect(r.burst).toEqual(all.slice(0, 4));
    expect(r.early).toBe(3);
    expect(r.afterBreak).toEqual(all.slice(0, 5));
    expect(r.race).toBe(`stream ${all[1]}`);
  });

  it("normalizes IDs by table", async () => {
    const note = (await mutation("behaviour:addNote", { text: "n" })) as string;
    expect(await query("behaviour:normalize", { id: note })).toEqual({
      asItem: null,
      asNote: note,
    });
    expect(await query("behaviour:normalize", { id: "garbage" })).toEqual({
      asItem: null,
      asNote: null,
    });
  });
});

describe("contention", () => {
  it("lets every caller of a hot document through: no call runs out of retries", async () => {
    // 16 callers incrementing one counter: under plain OCC with group commit
    // the same callers lose round after round and some exhaust their retries.
    const callers = 16;
    const perCaller = 15;
    await mutation("counters:increment", { name: "hot" });
    const before = { ...counters };
    const results = await Promise.allSettled(
      Array.from({ length: callers }, async () => {
        for (let i = 0; i < perCaller; i++) await mutation("counters:increment", { name: "hot" });
      }),
    );
    expect(results.filter((r) => r.status === "rejected")).toEqual([]);
    expect(await query("counters:get", { name: "hot" })).toBe(1 + callers * perCaller);
    // Counted: every commit once, and the re-runs the conflicts cost (two isolates run
    // callers side by side until the function's calls are serialised, so some conflict).
    expect(counters.committed - before.committed).toBe(callers * perCaller);
    expect(counters.conflicts - before.conflicts).toBeGreaterThan(0);
  });
});

describe("validation", () => {
  it("checks arguments, return values and schema on writes", async () => {
    const args = await failure(mutation("items:add", { name: "x", price: "free", remaining: 1 }));
    expect(args.kind).toBe("arguments");
    expect(args.message).toMatch(/ArgumentValidationError/);
    expect(args.message).toMatch(/\.price/);
    const returns = await failure(query("behaviour:badReturn"));
    expect(returns.kind).toBe("returns");
    expect(returns.message).toMatch(/ReturnsValidationError/);
    const schemaError = await failure(
      mutation("behaviour:addLoose", { table: "items", doc: { name: 5 } }),
    );
    expect(schemaError.message).toMatch(/does not match the schema/);
    // Tables the schema does not list are not validated.
    await mutation("behaviour:addLoose", { table: "free", doc: { anything: [1, "two"] } });
    const idOfOtherTable = await failure(
      query("items:get", { id: (await mutation("behaviour:addNote", { text: "n" })) as string }),
    );
    expect(idOfOtherTable.kind).toBe("arguments");
  });

  it("keeps internal functions private", async () => {
    expect((await failure(query("items:secret"))).kind).toBe("notFound");
    expect((await runner.query("items:secret", {}, { allowInternal: true })).value).toBe(
      "internal only",
    );
    expect((await failure(query("items:nope"))).kind).toBe("notFound");
    expect((await failure(runner.mutation("items:get", {}))).message).toMatch(/defined as Query/);
  });
});

describe("errors and logs", () => {
  it("passes ConvexError data to the caller", async () => {
    const e = await failure(query("behaviour:failWithData"));
    expect(e.data).toEqual({ code: "NOPE", detail: [1, 2n] });
  });

  it("maps stack traces to the user's TypeScript", async () => {
    const e = await failure(mutation("behaviour:fail", { text: "trace" }));
    expect(e.message).toMatch(/^Uncaught Error: refusing trace/);
    expect(e.userStack).toMatch(/convex\/behaviour\.ts:\d+:\d+/);
  });

  it("captures console lines with the result", async () => {
    const r = await runner.query("behaviour:logs", {});
    expect(r.logs.map((l) => [l.level, l.message])).toEqual([
      ["LOG", "hello { a: 1 } [ 2, 3 ]"],
      ["WARN", "careful"],
      ["ERROR", "shown"],
    ]);
  });

  it("refuses writes in queries and side effects in queries and mutations", async () => {
    expect((await failure(query("behaviour:writeInQuery"))).message).toMatch(
      /only mutations can write|insert is not a function/,
    );
    expect((await failure(query("behaviour:tryFetch"))).message).toMatch(
      /Can't use fetch in queries and mutations/,
    );
    expect((await failure(mutation("behaviour:tryTimer"))).message).toMatch(
      /Can't use setTimeout in queries and mutations/,
    );
  });
});

describe("isolation and limits", () => {
  it("gives every execution fresh module state, import-time values frozen at deploy", async () => {
    const a = (await query("behaviour:moduleState")) as {
      counter: number;
      importedAt: number;
      importRandom: number;
    };
    const b = (await query("behaviour:moduleState")) as typeof a;
    expect(a.counter).toBe(1);
    expect(b.counter).toBe(1);
    expect(a.importedAt).toBe(IMPORT_TIME);
    expect(b.importRandom).toBe(a.importRandom);
  });

  it("freezes time within an execution and seeds randomness per execution", async () => {
    const a = (await query("behaviour:clock")) as {
      a: number;
      b: number;
      date: number;
      random: number[];
    };
    const b = (await query("behaviour:clock")) as typeof a;
    expect(a.a).toBe(a.b);
    expect(a.date).toBe(a.a);
    expect(Math.abs(a.a - Date.now())).toBeLessThan(60_000);
    expect(a.random[0]).not.toBe(a.random[1]);
    expect(a.random[0]).not.toBe(b.random[0]);
  });

  it("reads each index on the fields the app's schema declares, hidden or not", async () => {
    await mutation("items:add", { name: "sold out", price: 1, remaining: 0 });
    const expected = await query("items:inStock");
    expect(expected).not.toContain("sold out (1.00)");
    const db = app.t.db;
    // As after a push switched to a schema declaring by_remaining on other fields: the app
    // still running reads the one it declared, now hidden (without: the query fails, its range being on a field the shown index lacks).
    await db.run(async (tx) => {
      await tx.createIndex("items", "by_remaining", ["price"], { hidden: true });
      await tx.hideIndex("items", "by_remaining");
      await tx.showIndex("items", "by_remaining", ["price"]);
    });
    await db.waitForBackgroundWork();
    try {
      expect(await query("items:inStock")).toEqual(expected);
    } finally {
      await db.run(async (tx) => {
        await tx.dropIndex("items", "by_remaining");
        await tx.showIndex("items", "by_remaining", ["remaining"]);
      });
    }
  });

  it("settles racing database reads in the order they were made", async () => {
    const x = (await mutation("behaviour:addNote", { text: "first" })) as string;
    const y = (await mutation("behaviour:addNote", { text: "second" })) as string;
    for (let i = 0; i < 5; i++)
      expect(await query("behaviour:race", { a: x, b: y })).toBe("second");
  });

  it("stops runaway loops and memory bombs with a clear error and keeps serving", async () => {
    const loop = await failure(query("behaviour:spin"));
    expect(loop.kind).toBe("timeout");
    expect(loop.message).toMatch(/timed out/);
    const late = await failure(query("behaviour:spinAfterRead"));
    expect(late.kind).toBe("timeout");
    const bomb = await failure(query("behaviour:allocate"));
    expect(bomb.kind).toBe("memory");
    expect(await query("behaviour:moduleState")).toMatchObject({ counter: 1 });
  });
});
