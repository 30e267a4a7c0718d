/**
 * Parts of the official server library's surface, run through Tessera with
 * exact expected results (fixture: test/fixtures/app/convex/surface.ts):
 * replace and delete, the explicit-table forms of get/patch/replace/delete,
 * `count`, filter operators and arithmetic, pagination to the end, `ctx.meta`,
 * the "not supported yet" errors, a mutation that runs out of attempts, a
 * stack trace mapped to an exact line, and the analysis of actions and HTTP
 * actions.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type Value as ConvexValue, getDocumentSize } from "convex/values";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_TRANSACTION_LIMITS } from "../../src/database/limits.js";
import { FunctionRunner, type MutationCounters } from "../../src/functions/runner.js";
import type { Schema } from "../../src/functions/schema.js";
import type { AppRuntime } from "../../src/runtime/appRuntime.js";
import type { Value } from "../../src/values/index.js";
import type { TestDb } from "../helpers.js";
import { type FixtureApp, failure, fixtureDir, openFixtureApp } from "./fixtureApp.js";

let app: FixtureApp;
let t: TestDb;
let runtime: AppRuntime;
let schema: Schema;
let runner: FunctionRunner;

beforeAll(async () => {
  app = await openFixtureApp({
    runtime: { isolates: 1 },
    runner: { deploymentName: "surface-test" },
  });
  ({ t, runtime, schema, runner } = app);
});

afterAll(() => app?.close());

const query = (path: string, args: Value = {}) => app.query(path, args);
const mutation = (path: string, args: Value = {}) => app.mutation(path, args);

type Doc = Record<string, Value>;

/** A new item with tags; its ID and creation time. */
async function addItem(name: string): Promise<{ id: string; created: number }> {
  const id = (await mutation("surface:addItem", {
    name,
    price: 5,
    remaining: 2,
    tags: ["red", "wool"],
  })) as string;
  const doc = (await query("surface:getItem", { id })) as Doc;
  expect(doc).toEqual({
    _id: id,
    _creationTime: doc._creationTime,
    name,
    price: 5,
    remaining: 2,
    tags: ["red", "wool"],
  });
  expect(typeof doc._creationTime).toBe("number");
  return { id, created: doc._creationTime as number };
}

describe("replace and delete", () => {
  it("replaces a whole document: a field the new value leaves out is gone", async () => {
    const { id, created } = await addItem("cap");
    const expected = { _id: id, _creationTime: created, name: "cap", price: 6, remaining: 1 };
    expect(
      await mutation("surface:replaceItem", {
        id,
        value: { name: "cap", price: 6, remaining: 1 },
      }),
    ).toEqual(expected);
    // Committed as read back in the mutation.
    const after = (await query("surface:getItem", { id })) as Doc;
    expect(after).toEqual(expected);
    expect(Object.keys(after).sort()).toEqual([
      "_creationTime",
      "_id",
      "name",
      "price",
      "remaining",
    ]);
  });

  it("deletes a document: get answers null in the same mutation and afterwards", async () => {
    const { id } = await addItem("scarf");
    expect(await mutation("surface:deleteItem", { id })).toEqual({ afterDelete: null });
    expect(await query("surface:getItem", { id })).toBeNull();
  });
});

describe("the explicit-table forms of get, patch, replace and delete", () => {
  it("read and write a document of the table named", async () => {
    const { id, created } = await addItem("glove");
    const base = { _id: id, _creationTime: created };
    expect(await query("surface:getIn", { table: "items", id })).toEqual({
      ...base,
      name: "glove",
      price: 5,
      remaining: 2,
      tags: ["red", "wool"],
    });
    // A patch keeps the fields it does not name...
    expect(await mutation("surface:patchIn", { table: "items", id, value: { price: 7 } })).toEqual({
      ...base,
      name: "glove",
      price: 7,
      remaining: 2,
      tags: ["red", "wool"],
    });
    // ...and removes those it sets to undefined.
    expect(
      await mutation("surface:patchIn", { table: "items", id, value: {}, unset: ["tags"] }),
    ).toEqual({ ...base, name: "glove", price: 7, remaining: 2 });
    expect(
      await mutation("surface:replaceIn", {
        table: "items",
        id,
        value: { name: "mitten", price: 8, remaining: 0 },
      }),
    ).toEqual({ ...base, name: "mitten", price: 8, remaining: 0 });
    expect(await query("surface:getIn", { table: "items", id })).toEqual({
      ...base,
      name: "mitten",
      price: 8,
      remaining: 0,
    });
    expect(await mutation("surface:deleteIn", { table: "items", id })).toEqual({
      afterDelete: null,
    });
    expect(await query("surface:getIn", { table: "items", id })).toBeNull();
  });

  it("refuse an ID of another table, naming both tables, and change nothing", async () => {
    const { id, created } = await addItem("boot");
    const calls: Array<[string, () => Promise<unknown>]> = [
      ["db.get", () => query("surface:getIn", { table: "notes", id })],
      ["db.patch", () => mutation("surface:patchIn", { table: "notes", id, value: { price: 1 } })],
      [
        "db.replace",
        () => mutation("surface:replaceIn", { table: "notes", id, value: { text: "a note" } }),
      ],
      ["db.delete", () => mutation("surface:deleteIn", { table: "notes", id })],
    ];
    for (const [op, call] of calls) {
      const e = await failure(call());
      expect(e.kind, op).toBe("user");
      // The message's first line; the stack follows.
      expect(e.message.split("\n")[0], op).toBe(
        `Uncaught Error: Invalid argument \`id\` for \`${op}\`: ID "${id}" belongs to table "items", not "notes"`,
      );
    }
    expect(await query("surface:getItem", { id })).toEqual({
      _id: id,
      _creationTime: created,
      name: "boot",
      price: 5,
      remaining: 2,
      tags: ["red", "wool"],
    });
  });
});

describe("count", () => {
  it("counts a table's documents, its own writes included", async () => {
    expect(await query("surface:count", { table: "marks" })).toBe(0);
    await mutation("surface:addMarks", { group: "counted", count: 4 });
    expect(await query("surface:count", { table: "marks" })).toBe(4);
    expect(await query("surface:count", { table: "noSuchTable" })).toBe(0);
    expect(await mutation("surface:countAroundWrites", { group: "counted" })).toEqual([4, 5, 4]);
    expect(await query("surface:count", { table: "marks" })).toBe(4);
  });
});

describe("filters", () => {
  it("keeps exactly the documents each comparison, connective and arithmetic selects", async () => {
    await mutation("surface:seedValues", { prefix: "f", values: [-5, 0, 2, 5, 7, 10] });
    expect(await query("surface:filters", { prefix: "f" })).toEqual({
      or: [0, 7, 10],
      not: [5, 7, 10],
      lt: [-5, 0],
      lte: [-5, 0, 2],
      gt: [7, 10],
      gte: [5, 7, 10],
      neq: [-5, 0, 2, 7, 10],
      add: [2],
      sub: [7],
      mul: [-5],
      div: [5],
      mod: [7, 10],
      // The remainder takes the sign of the dividend (-5 % 3 is -2, as in JavaScript).
      modOfNegative: [-5],
      neg: [-5],
    });
  });
});

type Page = { tags: string[]; isDone: boolean; continueCursor: string };

describe("paginate", () => {
  it("walks 7 documents 3 at a time to the end; the last cursor again gives an empty, done page", async () => {
    await mutation("surface:addMarks", { group: "walk", count: 7 });
    const pages: Page[] = [];
    let cursor: string | null = null;
    for (let i = 0; i < 3; i++) {
      const page = (await query("surface:pageOfMarks", {
        group: "walk",
        cursor,
        numItems: 3,
      })) as Page;
      pages.push(page);
      cursor = page.continueCursor;
    }
    expect(pages.map((p) => p.tags)).toEqual([
      ["walk-0", "walk-1", "walk-2"],
      ["walk-3", "walk-4", "walk-5"],
      ["walk-6"],
    ]);
    expect(pages.map((p) => p.isDone)).toEqual([false, false, true]);
    for (const p of pages) expect(typeof p.continueCursor).toBe("string");
    expect(
      await query("surface:pageOfMarks", { group: "walk", cursor, numItems: 3 }),
    ).toMatchObject({ tags: [], isDone: true });
  });

  it("refuses a cursor of another query: another range, another index", async () => {
    await mutation("surface:addMarks", { group: "mine", count: 4 });
    const first = (await query("surface:pageOfMarks", {
      group: "mine",
      cursor: null,
      numItems: 2,
    })) as Page;
    // The same query goes on from it.
    expect(
      await query("surface:pageOfMarks", {
        group: "mine",
        cursor: first.continueCursor,
        numItems: 2,
      }),
    ).toMatchObject({ tags: ["mine-2", "mine-3"] });
    const refused =
      "InvalidCursor: this cursor belongs to a different query, or to an index a deploy has replaced since. A paginated query must keep the same table, index, range and order across pages.";
    const refuses = async (other: Promise<Value>) => {
      const e = await failure(other);
      expect(e.kind).toBe("user");
      expect(e.message).toContain(refused);
    };
    await refuses(
      query("surface:pageOfMarks", { group: "other", cursor: first.continueCursor, numItems: 2 }),
    );
    await refuses(query("behaviour:page", { cursor: first.continueCursor, numItems: 2 }));
    // The same query on the index rebuilt under its name, as a deploy replacing it leaves it:
    // the cursor is a key of the old one.
    await t.db.run(async (tx) => {
      await tx.createIndex("marks", "by_group", ["group"], { hidden: true });
      await tx.dropIndex("marks", "by_group");
      await tx.showIndex("marks", "by_group", ["group"]);
    });
    await t.db.waitForBackgroundWork();
    await refuses(
      query("surface:pageOfMarks", { group: "mine", cursor: first.continueCursor, numItems: 2 }),
    );
    expect(
      await query("surface:pageOfMarks", { group: "mine", cursor: null, numItems: 4 }),
    ).toMatchObject({ tags: ["mine-0", "mine-1", "mine-2", "mine-3"] });
  });

  it("refuses a second paginated query in one execution, as Convex does", async () => {
    const e = await failure(query("surface:paginateTwice"));
    expect(e.kind).toBe("user");
    expect(e.message.split("\n")[0]).toBe(
      "Uncaught Error: A function execution may run only one paginated query (`.paginate()`), as in Convex; split the work into separate queries",
    );
  });
});

describe("ctx.meta", () => {
  const metrics = (used: {
    bytesRead: number;
    bytesWritten: number;
    databaseQueries: number;
    documentsRead: number;
    documentsWritten: number;
  }) => {
    const l = DEFAULT_TRANSACTION_LIMITS;
    const m = (n: number, limit: number) => ({ used: n, remaining: limit - n });
    return {
      bytesRead: m(used.bytesRead, l.maxBytesRead),
      bytesWritten: m(used.bytesWritten, l.maxBytesWritten),
      databaseQueries: m(used.databaseQueries, l.maxIndexRanges),
      documentsRead: m(used.documentsRead, l.maxDocumentsRead),
      documentsWritten: m(used.documentsWritten, l.maxDocumentsWritten),
    };
  };
  const size = (docs: Doc[]) =>
    docs.reduce((n, d) => n + getDocumentSize(d as Record<string, ConvexValue>), 0);

  it("gives a query its function and deployment metadata, snapshot and read metrics", async () => {
    const ids = (await mutation("surface:addMarks", { group: "meta", count: 3 })) as string[];
    const r = await runner.query("surface:meta", { group: "meta", id: ids[1]! });
    const v = r.value as {
      fn: unknown;
      deployment: unknown;
      snapshotTs: bigint;
      before: Record<string, unknown>;
      after: Record<string, unknown>;
      read: Doc[];
    };
    expect(v.fn).toEqual({
      name: "surface:meta",
      componentPath: "",
      type: "query",
      visibility: "public",
    });
    expect(v.deployment).toEqual({ name: "surface-test", region: null, class: "s16" });
    expect(v.snapshotTs).toBe(r.ts);
    // Three marks by an index range, then one of them again by get.
    expect(v.read.map((d) => [d._id, d.tag])).toEqual([
      [ids[0], "meta-0"],
      [ids[1], "meta-1"],
      [ids[2], "meta-2"],
      [ids[1], "meta-1"],
    ]);
    const zero = {
      bytesRead: 0,
      bytesWritten: 0,
      databaseQueries: 0,
      documentsRead: 0,
      documentsWritten: 0,
    };
    expect(v.before).toMatchObject(metrics(zero));
    expect(v.after).toMatchObject(
      metrics({ ...zero, bytesRead: size(v.read), databaseQueries: 2, documentsRead: 4 }),
    );
    expect(Object.keys(v.after).sort()).toEqual([
      "bytesRead",
      "bytesWritten",
      "databaseQueries",
      "documentsRead",
      "documentsWritten",
      "fileReadBytes",
      "fileWriteBytes",
      "filesRead",
      "filesWritten",
      "functionsScheduled",
      "scheduledFunctionArgsBytes",
    ]);
  });

  it("tells internal functions and mutations apart, and counts a mutation's writes", async () => {
    expect((await runner.query("surface:internalMeta", {}, { allowInternal: true })).value).toEqual(
      { name: "surface:internalMeta", componentPath: "", type: "query", visibility: "internal" },
    );
    const v = (await mutation("surface:writeMeta", { text: "metered" })) as {
      fn: unknown;
      written: Doc;
      metrics: Record<string, unknown>;
    };
    expect(v.fn).toEqual({
      name: "surface:writeMeta",
      componentPath: "",
      type: "mutation",
      visibility: "public",
    });
    expect(v.written.text).toBe("metered");
    const bytes = size([v.written]);
    // One insert, then the get of what it wrote.
    expect(v.metrics).toMatchObject(
      metrics({
        bytesRead: bytes,
        bytesWritten: bytes,
        databaseQueries: 1,
        documentsRead: 1,
        documentsWritten: 1,
      }),
    );
  });
});

/** Where the server's own modules are: their paths must never reach a caller. */
const SERVER_SOURCES = join(import.meta.dirname, "../../src");

describe("not supported yet", () => {
  it.each([
    [
      "ctx.runQuery in a query",
      () => query("surface:runQueryInQuery"),
      "ctx.runQuery / ctx.runMutation inside queries and mutations (1.0/runUdf)",
    ],
    [
      "ctx.meta.getRequestMetadata in a mutation",
      () => mutation("surface:requestMetadataInMutation"),
      "request metadata (1.0/getRequestMetadata)",
    ],
    [
      "a search index query",
      () => query("surface:searchNotes"),
      "search indexes (withSearchIndex)",
    ],
  ])("%s", async (_name, call, what) => {
    const e = await failure(call());
    expect(e.kind).toBe("user");
    expect(e.message.split("\n")[0]).toBe(`Uncaught Error: not supported yet: ${what}`);
    // The server's own files never show in what the caller gets.
    for (const text of [e.message, e.userStack ?? ""]) {
      expect(text).not.toContain(SERVER_SOURCES);
      expect(text).not.toContain("node:internal");
    }
  });
});

describe("a mutation that keeps conflicting", () => {
  /** A runner of at most 2 attempts, and a counter the mutation reads. */
  async function setup(name: string) {
    const counters: MutationCounters = { committed: 0, conflicts: 0 };
    const limited = new FunctionRunner({ db: t.db, runtime, schema, maxAttempts: 2, counters });
    const { value: id } = await t.db.run((tx) => tx.insert("counters", { name, value: 0 }));
    const notesBefore = (await query("surface:count", { table: "notes" })) as number;
    return { limited, counters, id, notesBefore };
  }
  /** Changes the counter in a commit of its own (between the mutation's read and its commit). */
  const bump = (id: string, value: number) =>
    t.db.run((tx) => tx.patch(id, { value })).then(() => undefined);

  it("fails with a conflict once its attempts run out, having written nothing", async () => {
    const { limited, counters, id, notesBefore } = await setup("always");
    let hooks = 0;
    const e = await failure(
      limited.mutation("surface:readThenWrite", { id }, { beforeCommit: () => bump(id, ++hooks) }),
    );
    expect(e.kind).toBe("conflict");
    expect(e.message).toMatch(/conflicted 2 times in a row/);
    expect(e.message).toMatch(/the "counters" table changed while this transaction was running/);
    expect(hooks).toBe(2);
    expect(counters).toEqual({ committed: 0, conflicts: 2 });
    expect(await query("surface:count", { table: "notes" })).toBe(notesBefore);
  });

  it("commits on its last attempt when only the first one conflicts", async () => {
    const { limited, counters, id, notesBefore } = await setup("once");
    let hooks = 0;
    const r = await limited.mutation(
      "surface:readThenWrite",
      { id },
      { beforeCommit: async () => (++hooks === 1 ? bump(id, 41) : undefined) },
    );
    // The second attempt read the value the first one's conflict wrote.
    expect(r.value).toBe(41);
    expect(hooks).toBe(2);
    expect(counters).toEqual({ committed: 1, conflicts: 1 });
    expect(await query("surface:count", { table: "notes" })).toBe(notesBefore + 1);
  });
});

describe("stack traces", () => {
  it("maps a throw to its exact line and column in the user's TypeScript", async () => {
    const lines = readFileSync(join(fixtureDir, "surface.ts"), "utf8").split("\n");
    const index = lines.findIndex((l) => l.includes("// surface-throw-marker"));
    expect(index).toBeGreaterThan(0);
    const line = index + 1;
    const column = lines[index]!.indexOf("new Error") + 1;
    const e = await failure(query("surface:throwAtKnownLine"));
    expect(e.message).toMatch(/^Uncaught Error: thrown at a known line/);
    const first = e.userStack!.split("\n").find((l) => l.includes("surface.ts"));
    expect(first).toBe(`    at handler (../test/fixtures/app/convex/surface.ts:${line}:${column})`);
  });
});

describe("module analysis of actions and HTTP actions", () => {
  const specs = (path: string) => runtime.modules.find((m) => m.path === path)?.functions;
  const number = { fieldType: { type: "number" }, optional: false };

  it("reports actions with their kind, visibility and validators", () => {
    const actions = Object.fromEntries(specs("actions.js")!.map((f) => [f.name, f]));
    expect(Object.keys(actions)).toEqual([
      "callInternal",
      "callThrough",
      "compute",
      "double",
      "failing",
      "fetchText",
      "hang",
      "leaveLoop",
      "wait",
      "whoCalls",
    ]);
    expect(actions.double).toEqual({
      name: "double",
      kind: "action",
      visibility: "internal",
      args: JSON.stringify({ type: "object", value: { x: number } }),
      returns: "null",
    });
    expect(actions.callThrough).toMatchObject({ kind: "action", visibility: "public" });
    expect(JSON.parse(actions.fetchText!.args!)).toEqual({
      type: "object",
      value: {
        url: { fieldType: { type: "string" }, optional: false },
        method: { fieldType: { type: "string" }, optional: true },
        body: { fieldType: { type: "string" }, optional: true },
      },
    });
    expect(actions.hang!.args).toBe('{"type":"object","value":{}}');
  });

  it("reports an exported HTTP action as one, and an HTTP router as no function", () => {
    expect(specs("surface.js")!.find((f) => f.name === "ping")).toEqual({
      name: "ping",
      kind: "httpAction",
      visibility: "public",
      args: null,
      returns: null,
    });
    expect(specs("http.js")).toEqual([]);
  });
});
