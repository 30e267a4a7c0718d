/**
 * The admin-only `_system/cli/*` queries the official CLI runs, and the
 * environment variable store behind `npx convex env`: result shapes, hiding
 * from non-admins, pagination, atomic validated env changes, and read sets
 * that make subscriptions re-run.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Database, ReadSet } from "../../src/database/index.js";
import {
  applyEnvironmentChanges,
  ENVIRONMENT_LIMITS,
  type EnvironmentChange,
  EnvironmentVariableError,
  getEnvironmentVariable,
  listEnvironmentVariables,
} from "../../src/functions/environment.js";
import { FunctionError, FunctionRunner } from "../../src/functions/runner.js";
import { applySchemaIndexes, evaluateSchema } from "../../src/functions/schema.js";
import { systemQueryPaths } from "../../src/functions/systemQueries.js";
import { AppRuntime } from "../../src/runtime/appRuntime.js";
import { bundleConvexDir, bundleSchema } from "../../src/runtime/bundler.js";
import { linkModules } from "../../src/runtime/loader.js";
import type { Document, Value } from "../../src/values/index.js";
import { openTestDb, type TestDb } from "../helpers.js";

const fixture = join(import.meta.dirname, "../fixtures/app/convex");
const URL = "http://127.0.0.1:3210";

let t: TestDb;
let db: Database;
let runtime: AppRuntime;
let runner: FunctionRunner;

beforeAll(async () => {
  const modules = await bundleConvexDir(fixture);
  runtime = await AppRuntime.create(await linkModules(modules), { isolates: 1 });
  const schema = await evaluateSchema((await bundleSchema(fixture))!);
  t = await openTestDb();
  db = t.db;
  await applySchemaIndexes(db, schema);
  runner = new FunctionRunner({ db, runtime, schema, deploymentUrl: URL });
});

afterAll(async () => {
  runtime?.dispose();
  await t?.close();
});

const admin = (path: string, args: Value = {}, ts?: bigint) =>
  runner.query(path, args, { allowInternal: true, ts });
const sys = (path: string, args: Value = {}) => admin(path, args).then((r) => r.value);
const failure = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (e: unknown) => e as FunctionError,
  );
const envFailure = (changes: EnvironmentChange[]) =>
  applyEnvironmentChanges(db, changes).then(
    () => {
      throw new Error("expected the changes to be refused");
    },
    (e: unknown) => e as EnvironmentVariableError,
  );
const env = () => sys("_system/cli/queryEnvironmentVariables");

/** Whether any commit after `ts` wrote a key inside `readSet`. */
function invalidatedSince(readSet: ReadSet, ts: bigint): boolean {
  return db
    .commitsSince(ts)
    .some((c) => c.keys.some((k) => readSet.overlaps(k.indexNumber, k.key)));
}

async function insertDocs(table: string, n: number): Promise<void> {
  for (let i = 0; i < n; i += 50) {
    await db.run(async (tx) => {
      for (let j = i; j < Math.min(n, i + 50); j++) await tx.insert(table, { i: j });
    });
  }
}

describe("visibility", () => {
  it("is not found for non-admins, for mutations, and for unknown system paths", async () => {
    for (const path of [...systemQueryPaths(), "_system/cli/tables"]) {
      for (const options of [{}, { allowInternal: false }]) {
        const e = await failure(
          runner.query(path, { paginationOpts: { cursor: null, numItems: 1 } }, options),
        );
        expect(e).toBeInstanceOf(FunctionError);
        expect(e.kind).toBe("notFound");
        expect(e.message).toBe(
          `Could not find public function for '${path}'. Did you forget to run \`npx convex dev\` or \`npx convex deploy\`?`,
        );
      }
      const m = await failure(runner.mutation(path, {}, { allowInternal: true }));
      expect(m.kind).toBe("notFound");
    }
    expect((await failure(admin("_system/cli/nope:default"))).kind).toBe("notFound");
    expect((await failure(admin("_system/cli/exports:getLatest"))).kind).toBe("notFound");
  });

  it("accepts the path with or without `:default` and `.js`", async () => {
    for (const path of [
      "_system/cli/tables",
      "_system/cli/tables:default",
      "_system/cli/tables.js:default",
      "_system/cli/tables.js",
    ]) {
      const r = (await sys(path, { paginationOpts: { cursor: null, numItems: 100 } })) as {
        page: unknown[];
      };
      expect(r.page.length).toBeGreaterThan(0);
    }
    expect(await sys("_system/cli/convexUrl.js:cloudUrl")).toBe(URL);
  });
});

describe("arguments", () => {
  it("refuses bad arguments with an ArgumentValidationError, read set attached", async () => {
    const cases: [string, Value][] = [
      ["_system/cli/queryEnvironmentVariables:get", {}],
      ["_system/cli/queryEnvironmentVariables:get", { name: 5 }],
      ["_system/cli/queryEnvironmentVariables:default", { extra: 1 }],
      ["_system/cli/tables", {}],
      ["_system/cli/tables", { paginationOpts: { cursor: 3, numItems: 1 } }],
      ["_system/cli/tableData", { table: "notes", paginationOpts: { cursor: null, numItems: 1 } }],
      [
        "_system/cli/tableData",
        { table: "notes", order: "sideways", paginationOpts: { cursor: null, numItems: 1 } },
      ],
      ["_system/cli/tableSize", { table: "notes" }],
      ["_system/cli/modules:apiSpec", [1]],
    ];
    for (const [path, args] of cases) {
      const e = await failure(admin(path, args));
      expect(e.kind, `${path} ${JSON.stringify(args)}`).toBe("arguments");
      expect(e.message).toMatch(/^ArgumentValidationError: /);
      expect(e.readSet).toBeDefined();
    }
  });

  it("refuses a negative or fractional numItems and a cursor of another table or order", async () => {
    for (const numItems of [-1, 1.5, Number.NaN]) {
      const e = await failure(
        admin("_system/cli/tables", { paginationOpts: { cursor: null, numItems } }),
      );
      expect(e.kind).toBe("arguments");
      expect(e.message).toMatch(/numItems/);
    }
    await insertDocs("cursorsA", 3);
    const first = (await sys("_system/cli/tableData", {
      table: "cursorsA",
      order: "asc",
      paginationOpts: { cursor: null, numItems: 1 },
    })) as { continueCursor: string };
    for (const [table, order] of [
      ["cursorsA", "desc"],
      ["notes", "asc"],
    ] as const) {
      const e = await failure(
        admin("_system/cli/tableData", {
          table,
          order,
          paginationOpts: { cursor: first.continueCursor, numItems: 1 },
        }),
      );
      expect(e.kind).toBe("arguments");
      expect(e.message).toMatch(/InvalidCursor/);
    }
    const bad = await failure(
      admin("_system/cli/tableData", {
        table: "cursorsA",
        order: "asc",
        paginationOpts: { cursor: "garbage", numItems: 1 },
      }),
    );
    expect(bad.kind).toBe("arguments");
  });
});

describe("environment variables", () => {
  it("sets, lists sorted, gets, updates and removes", async () => {
    expect(await env()).toEqual([]);
    expect(await sys("_system/cli/queryEnvironmentVariables:get", { name: "B" })).toBeNull();
    await applyEnvironmentChanges(db, [
      { name: "B", value: "2" },
      { name: "A_KEY", value: "héllo" },
      { name: "c", value: "" },
    ]);
    expect(await env()).toEqual([
      { name: "A_KEY", value: "héllo" },
      { name: "B", value: "2" },
      { name: "c", value: "" },
    ]);
    expect(await sys("_system/cli/queryEnvironmentVariables:get", { name: "B" })).toEqual({
      name: "B",
      value: "2",
    });
    await applyEnvironmentChanges(db, [
      { name: "B", value: "two" },
      { name: "c", value: null },
      { name: "NEVER_SET", value: null },
    ]);
    expect(await env()).toEqual([
      { name: "A_KEY", value: "héllo" },
      { name: "B", value: "two" },
    ]);
    // The store's functions, on a transaction of one's own.
    await db.run(async (tx) => {
      expect(await getEnvironmentVariable(tx, "A_KEY")).toEqual({ name: "A_KEY", value: "héllo" });
      expect(await getEnvironmentVariable(tx, "c")).toBeNull();
      expect((await listEnvironmentVariables(tx)).map((v) => v.name)).toEqual(["A_KEY", "B"]);
    });
    // Unchanged values and no-op batches still commit cleanly.
    await applyEnvironmentChanges(db, [{ name: "B", value: "two" }]);
    await applyEnvironmentChanges(db, []);
    await applyEnvironmentChanges(db, [
      { name: "A_KEY", value: null },
      { name: "B", value: null },
    ]);
    expect(await env()).toEqual([]);
  });

  it("checks names, values and duplicates, and applies nothing of a refused batch", async () => {
    await applyEnvironmentChanges(db, [{ name: "KEEP", value: "1" }]);
    const before = await env();
    const long = "A".repeat(ENVIRONMENT_LIMITS.maxNameLength + 1);
    const cases: [EnvironmentChange[], string, RegExp][] = [
      [
        [{ name: "", value: "x" }],
        "InvalidEnvironmentVariableName",
        /Invalid environment variable name ""/,
      ],
      [[{ name: "1ABC", value: "x" }], "InvalidEnvironmentVariableName", /start with a letter/],
      [[{ name: "_ABC", value: "x" }], "InvalidEnvironmentVariableName", /_ABC/],
      [[{ name: "A-B", value: "x" }], "InvalidEnvironmentVariableName", /A-B/],
      [[{ name: long, value: "x" }], "InvalidEnvironmentVariableName", /1 to 256 characters/],
      [
        [
          { name: "OK", value: "x" },
          { name: "OK", value: "y" },
        ],
        "DuplicateEnvironmentVariable",
        /OK appears more than once/,
      ],
      [
        // 4097 two-byte characters: under 8192 UTF-16 units, over 8192 UTF-8 bytes.
        [
          { name: "NEW_ONE", value: "x" },
          { name: "BIG", value: "é".repeat(4097) },
        ],
        "EnvironmentVariableValueTooLarge",
        /BIG is 8194 bytes, more than the limit of 8192 bytes/,
      ],
      [
        [{ name: "NUM", value: 5 as unknown as string }],
        "InvalidEnvironmentVariableValue",
        /must be a string/,
      ],
      [
        [{ name: "HALF", value: "\ud800" }],
        "InvalidEnvironmentVariableValue",
        /unpaired surrogate/,
      ],
      [
        [
          { name: "KEEP", value: null },
          { name: "A B", value: "x" },
        ],
        "InvalidEnvironmentVariableName",
        /A B/,
      ],
    ];
    for (const [changes, code, message] of cases) {
      const e = await envFailure(changes);
      expect(e, JSON.stringify(changes).slice(0, 80)).toBeInstanceOf(EnvironmentVariableError);
      expect(e.code).toBe(code);
      expect(e.message).toMatch(message);
    }
    expect((await envFailure("nope" as unknown as EnvironmentChange[])).code).toBe(
      "InvalidEnvironmentVariableChanges",
    );
    // Exactly at the limits is fine.
    const max = "é".repeat(ENVIRONMENT_LIMITS.maxValueBytes / 2);
    const name = "N".repeat(ENVIRONMENT_LIMITS.maxNameLength);
    await applyEnvironmentChanges(db, [{ name, value: max }]);
    expect(await sys("_system/cli/queryEnvironmentVariables:get", { name })).toEqual({
      name,
      value: max,
    });
    await applyEnvironmentChanges(db, [{ name, value: null }]);
    expect(await env()).toEqual(before);
  });

  it("enforces the count and total-size limits over the whole deployment, atomically", async () => {
    const before = await env();
    const many = Array.from({ length: ENVIRONMENT_LIMITS.maxVariables }, (_, i) => ({
      name: `V${i}`,
      value: "x",
    }));
    // KEEP plus 512 new ones: one too many.
    const tooMany = await envFailure(many);
    expect(tooMany.code).toBe("TooManyEnvironmentVariables");
    expect(tooMany.message).toMatch(
      /at most 512 environment variables; these changes would leave 513/,
    );
    expect(await env()).toEqual(before);
    // Replacing KEEP in the same batch makes it fit.
    await applyEnvironmentChanges(db, [{ name: "KEEP", value: null }, ...many]);
    expect(((await env()) as unknown[]).length).toBe(ENVIRONMENT_LIMITS.maxVariables);
    await applyEnvironmentChanges(db, [
      ...many.map((c) => ({ name: c.name, value: null })),
      { name: "KEEP", value: "1" },
    ]);
    expect(await env()).toEqual(before);
    // 64 values of 8 KiB are 512 KiB before the names are counted.
    const big = Array.from({ length: 64 }, (_, i) => ({
      name: `BIG${i}`,
      value: "v".repeat(ENVIRONMENT_LIMITS.maxValueBytes),
    }));
    const tooLarge = await envFailure(big);
    expect(tooLarge.code).toBe("EnvironmentVariablesTooLarge");
    expect(await env()).toEqual(before);
  });

  it("read sets: a listing is invalidated by any change, a get only by its own name", async () => {
    await applyEnvironmentChanges(db, [{ name: "WATCHED", value: "old" }]);
    const list = await admin("_system/cli/queryEnvironmentVariables");
    const getOther = await admin("_system/cli/queryEnvironmentVariables:get", { name: "OTHER" });
    const getWatched = await admin("_system/cli/queryEnvironmentVariables:get", {
      name: "WATCHED",
    });
    expect(list.readSet!.isEmpty).toBe(false);
    expect(getWatched.value).toEqual({ name: "WATCHED", value: "old" });

    const ts = await applyEnvironmentChanges(db, [{ name: "WATCHED", value: "new" }]);
    expect(ts).toBeGreaterThan(list.ts);
    expect(invalidatedSince(list.readSet!, list.ts)).toBe(true);
    expect(invalidatedSince(getWatched.readSet!, getWatched.ts)).toBe(true);
    expect(invalidatedSince(getOther.readSet!, getOther.ts)).toBe(false);

    // Re-run at the new snapshot: the new value; at the old one: still the old.
    const again = await admin("_system/cli/queryEnvironmentVariables:get", { name: "WATCHED" }, ts);
    expect(again.value).toEqual({ name: "WATCHED", value: "new" });
    const old = await admin("_system/cli/queryEnvironmentVariables", {}, list.ts);
    expect(old.value).toEqual(list.value);
    expect((await env()) as unknown[]).toContainEqual({ name: "WATCHED", value: "new" });

    // Creating OTHER now invalidates the get that found nothing.
    const ts2 = await applyEnvironmentChanges(db, [{ name: "OTHER", value: "1" }]);
    expect(invalidatedSince(getOther.readSet!, getOther.ts)).toBe(true);
    expect(
      (await admin("_system/cli/queryEnvironmentVariables:get", { name: "OTHER" }, ts2)).value,
    ).toEqual({ name: "OTHER", value: "1" });
    await applyEnvironmentChanges(db, [
      { name: "WATCHED", value: null },
      { name: "OTHER", value: null },
    ]);
  });
});

describe("tables, tableSize, tableData", () => {
  it("lists user tables sorted, without system tables, in pages", async () => {
    await applyEnvironmentChanges(db, [{ name: "MAKES_SYSTEM_TABLE", value: "1" }]);
    const all = (await sys("_system/cli/tables", {
      paginationOpts: { cursor: null, numItems: 10_000 },
    })) as { page: { name: string }[]; isDone: boolean; continueCursor: string };
    const names = all.page.map((p) => p.name);
    expect(all.isDone).toBe(true);
    expect(typeof all.continueCursor).toBe("string");
    expect(names).toEqual([...names].sort());
    expect(names).toEqual(expect.arrayContaining(["carts", "counters", "items", "marks"]));
    expect(names.some((n) => n.startsWith("_"))).toBe(false);
    for (const numItems of [1, 2, 3]) {
      const walked: string[] = [];
      let cursor: string | null = null;
      for (;;) {
        const r = (await sys("_system/cli/tables", { paginationOpts: { cursor, numItems } })) as {
          page: { name: string }[];
          isDone: boolean;
          continueCursor: string;
        };
        expect(r.page.length).toBeLessThanOrEqual(numItems);
        walked.push(...r.page.map((p) => p.name));
        if (r.isDone) break;
        cursor = r.continueCursor;
      }
      expect(walked).toEqual(names);
    }
    // A new table invalidates the listing.
    const r = await admin("_system/cli/tables", {
      paginationOpts: { cursor: null, numItems: 100 },
    });
    await db.run((tx) => tx.insert("zzNewTable", { a: 1 }));
    expect(invalidatedSince(r.readSet!, r.ts)).toBe(true);
    await applyEnvironmentChanges(db, [{ name: "MAKES_SYSTEM_TABLE", value: null }]);
  });

  it("counts documents", async () => {
    await insertDocs("sized", 7);
    const r = await admin("_system/cli/tableSize", { tableName: "sized" });
    expect(r.value).toBe(7);
    expect(await sys("_system/cli/tableSize:default", { tableName: "missing" })).toBe(0);
    expect(await sys("_system/cli/tableSize:default", { tableName: "_tables" })).toBe(0);
    await insertDocs("sized", 1);
    expect(invalidatedSince(r.readSet!, r.ts)).toBe(true);
  });

  it("gives an empty, finished page for a missing table", async () => {
    for (const table of ["missing", "_tables", "_index", "not a name"]) {
      const r = (await sys("_system/cli/tableData", {
        table,
        order: "desc",
        paginationOpts: { cursor: null, numItems: 10 },
      })) as { page: unknown[]; isDone: boolean; continueCursor: string };
      expect(r.page).toEqual([]);
      expect(r.isDone).toBe(true);
      expect(typeof r.continueCursor).toBe("string");
    }
  });

  it("walks every document in both orders, in any page size, with no gap or repeat", async () => {
    for (const n of [0, 1, 5, 23]) {
      const table = `paged${n}`;
      await insertDocs(table, n);
      const asc = await db.run((tx) => tx.query(table, "by_creation_time").collect());
      const expected = {
        asc: asc.value.map((d) => d._id),
        desc: asc.value.map((d) => d._id).reverse(),
      };
      for (const order of ["asc", "desc"] as const) {
        for (const numItems of [0, 1, 2, 3, 7, 100]) {
          const ids: string[] = [];
          let cursor: string | null = null;
          let calls = 0;
          for (;;) {
            const r = (await sys("_system/cli/tableData", {
              table,
              order,
              paginationOpts: { cursor, numItems },
            })) as { page: Document[]; isDone: boolean; continueCursor: string };
            expect(r.page.length).toBeLessThanOrEqual(numItems);
            ids.push(...r.page.map((d) => d._id));
            cursor = r.continueCursor;
            if (r.isDone) break;
            // numItems 0 never advances: stop after a couple of calls.
            if (numItems === 0 && ++calls === 3) break;
          }
          if (numItems === 0) {
            expect(ids).toEqual([]);
            continue;
          }
          expect(ids, `${table} ${order} ${numItems}`).toEqual(expected[order]);
          // A finished cursor stays finished.
          const after = (await sys("_system/cli/tableData", {
            table,
            order,
            paginationOpts: { cursor, numItems },
          })) as { page: Document[]; isDone: boolean };
          expect(after).toMatchObject({ page: [], isDone: true });
        }
      }
    }
  });

  it("ends a page early when its documents get large, instead of breaking the read limit", async () => {
    // 30 documents of ~700 KB: 21 MB, more than a transaction may read (16 MiB).
    const blob = "x".repeat(700_000);
    for (let i = 0; i < 30; i += 5) {
      await db.run(async (tx) => {
        for (let j = i; j < i + 5; j++) await tx.insert("large", { i: j, blob });
      });
    }
    const seen: number[] = [];
    let cursor: string | null = null;
    let pages = 0;
    for (;;) {
      const r = (await sys("_system/cli/tableData", {
        table: "large",
        order: "asc",
        paginationOpts: { cursor, numItems: 10_000 },
      })) as { page: Document[]; isDone: boolean; continueCursor: string };
      pages++;
      expect(r.page.length).toBeLessThan(30);
      seen.push(...r.page.map((d) => d.i as number));
      if (r.isDone) break;
      cursor = r.continueCursor;
    }
    expect(seen).toEqual(Array.from({ length: 30 }, (_, i) => i));
    expect(pages).toBeGreaterThanOrEqual(3);
  });

  it("returns whole documents and keeps going when documents are added between pages", async () => {
    await insertDocs("growing", 4);
    const first = (await sys("_system/cli/tableData", {
      table: "growing",
      order: "asc",
      paginationOpts: { cursor: null, numItems: 2 },
    })) as { page: Document[]; isDone: boolean; continueCursor: string };
    expect(first.page.map((d) => d.i)).toEqual([0, 1]);
    expect(Object.keys(first.page[0]!).sort()).toEqual(["_creationTime", "_id", "i"]);
    const tsBefore = db.latestTs();
    await insertDocs("growing", 2);
    const rest: number[] = [];
    let cursor: string | null = first.continueCursor;
    for (;;) {
      const r = (await sys("_system/cli/tableData", {
        table: "growing",
        order: "asc",
        paginationOpts: { cursor, numItems: 3 },
      })) as { page: Document[]; isDone: boolean; continueCursor: string };
      rest.push(...r.page.map((d) => d.i as number));
      if (r.isDone) break;
      cursor = r.continueCursor;
    }
    expect(rest).toEqual([2, 3, 0, 1]);
    // At an older snapshot, a page sees only what existed then.
    const old = await admin(
      "_system/cli/tableData",
      { table: "growing", order: "desc", paginationOpts: { cursor: null, numItems: 10 } },
      tsBefore,
    );
    expect(old.ts).toBe(tsBefore);
    expect((old.value as { page: Document[] }).page.map((d) => d.i)).toEqual([3, 2, 1, 0]);
    expect(old.readSet!.isEmpty).toBe(false);
  });
});

describe("modules and URL", () => {
  it("describes every function with its type, visibility and validators", async () => {
    const spec = (await sys("_system/cli/modules:apiSpec")) as {
      identifier: string;
      functionType: string;
      visibility: { kind: string };
      args: Value;
      returns: Value;
    }[];
    const byId = Object.fromEntries(spec.map((f) => [f.identifier, f]));
    const expectedIds = runtime.modules.flatMap((m) =>
      m.functions.map((f) => `${m.path}:${f.name}`),
    );
    expect(spec.map((f) => f.identifier)).toEqual([...expectedIds].sort());
    expect(byId["items.js:add"]).toMatchObject({
      functionType: "Mutation",
      visibility: { kind: "public" },
      returns: { type: "id", tableName: "items" },
    });
    expect(byId["items.js:get"]).toMatchObject({
      functionType: "Query",
      args: {
        type: "object",
        value: { id: { fieldType: { type: "id", tableName: "items" }, optional: false } },
      },
    });
    expect(byId["items.js:secret"]!.visibility).toEqual({ kind: "internal" });
    expect(byId["items.js:echo"]!.args).toEqual({ type: "any" });
    for (const f of spec) {
      expect(["Query", "Mutation", "Action", "HttpAction"]).toContain(f.functionType);
      expect(f.returns).not.toBeUndefined();
    }
    // Depends on the code only: nothing read.
    expect((await admin("_system/cli/modules:apiSpec")).readSet!.isEmpty).toBe(true);
  });

  it("answers the deployment URL, or an empty string when the runner was not told", async () => {
    expect(await sys("_system/cli/convexUrl:cloudUrl")).toBe(URL);
    const bare = new FunctionRunner({ db, runtime });
    const r = await bare.query("_system/cli/convexUrl:cloudUrl", {}, { allowInternal: true });
    expect(r.value).toBe("");
  });
});
