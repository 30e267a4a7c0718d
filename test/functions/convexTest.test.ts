/// <reference types="vite/client" />
/**
 * The same fixture functions run under `convex-test` (the official JS mock of
 * the backend, in-process) and under Tessera (bundled, isolated, on SQLite)
 * must give the same results wherever the mock models the behaviour. IDs and
 * creation times differ by construction, so both are replaced by their order
 * of appearance before comparing.
 */
import { join } from "node:path";
import { anyApi } from "convex/server";
import { convexTest } from "convex-test";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FunctionRunner } from "../../src/functions/runner.js";
import { applySchemaIndexes, evaluateSchema } from "../../src/functions/schema.js";
import { AppRuntime } from "../../src/runtime/appRuntime.js";
import { bundleConvexDir, bundleSchema } from "../../src/runtime/bundler.js";
import { linkModules } from "../../src/runtime/loader.js";
import { isDocumentId, type Value } from "../../src/values/index.js";
import schema from "../fixtures/app/convex/schema.js";
import { openTestDb, type TestDb } from "../helpers.js";

const fixture = join(import.meta.dirname, "../fixtures/app/convex");
const modules = import.meta.glob("../fixtures/app/convex/**/*.*s");

type Step = {
  kind: "query" | "mutation";
  path: string;
  args: (ids: string[], values: unknown[]) => Record<string, Value>;
};

/** The ID the latest step returning one returned. */
const lastId = (ids: string[]) => ids[ids.length - 1]!;
/** The `continueCursor` of the previous step's page. */
const lastCursor = (values: unknown[]) =>
  (values[values.length - 1] as { continueCursor: string }).continueCursor;

/**
 * A script of calls; `ids` are IDs returned by earlier steps, in order, and
 * `values` what each earlier step returned (undefined when it failed).
 */
const script: Step[] = [
  { kind: "mutation", path: "items:add", args: () => ({ name: "hat", price: 19.5, remaining: 1 }) },
  { kind: "mutation", path: "items:add", args: () => ({ name: "shirt", price: 25, remaining: 0 }) },
  { kind: "mutation", path: "items:add", args: () => ({ name: "cheap", price: 1, remaining: 3 }) },
  { kind: "query", path: "items:get", args: (ids) => ({ id: ids[0]! }) },
  { kind: "query", path: "items:inStock", args: () => ({}) },
  {
    kind: "mutation",
    path: "cart:addCart",
    args: (ids) => ({ itemId: ids[0]!, userToken: "alice" }),
  },
  {
    kind: "mutation",
    path: "cart:addCart",
    args: (ids) => ({ itemId: ids[0]!, userToken: "bob" }),
  },
  {
    kind: "mutation",
    path: "cart:addCart",
    args: (ids) => ({ itemId: ids[2]!, userToken: "bob" }),
  },
  {
    kind: "mutation",
    path: "cart:addCart",
    args: (ids) => ({ itemId: ids[2]!, userToken: "bob" }),
  },
  { kind: "query", path: "items:inStock", args: () => ({}) },
  { kind: "query", path: "behaviour:filtered", args: () => ({ min: 15 }) },
  { kind: "query", path: "behaviour:counts", args: () => ({}) },
  { kind: "query", path: "behaviour:uniqueByName", args: () => ({ name: "cheap" }) },
  { kind: "mutation", path: "behaviour:addNote", args: () => ({ text: "one" }) },
  { kind: "mutation", path: "behaviour:addNote", args: () => ({ text: "two", author: "ann" }) },
  { kind: "mutation", path: "behaviour:addNote", args: () => ({ text: "three" }) },
  { kind: "query", path: "behaviour:page", args: () => ({ cursor: null, numItems: 2 }) },
  { kind: "query", path: "behaviour:normalize", args: (ids) => ({ id: ids[0]! }) },
  { kind: "query", path: "behaviour:failWithData", args: () => ({}) },
  { kind: "mutation", path: "behaviour:fail", args: () => ({ text: "ghost" }) },
  {
    kind: "mutation",
    path: "items:add",
    args: () => ({ name: "bad", price: "free", remaining: 1 }),
  },
  { kind: "query", path: "items:echo", args: () => ({ a: 1n, b: [1.5, "x", null, true] }) },
  // surface.ts: replace and delete, without and with the table name.
  {
    kind: "mutation",
    path: "surface:addItem",
    args: () => ({ name: "cap", price: 5, remaining: 2, tags: ["red", "wool"] }),
  },
  {
    kind: "mutation",
    path: "surface:replaceItem",
    args: (ids) => ({ id: lastId(ids), value: { name: "cap", price: 6, remaining: 1 } }),
  },
  { kind: "query", path: "surface:getItem", args: (ids) => ({ id: lastId(ids) }) },
  { kind: "query", path: "surface:getIn", args: (ids) => ({ table: "items", id: lastId(ids) }) },
  { kind: "query", path: "surface:getIn", args: (ids) => ({ table: "notes", id: lastId(ids) }) },
  {
    kind: "mutation",
    path: "surface:patchIn",
    args: (ids) => ({ table: "items", id: lastId(ids), value: { price: 7, tags: ["blue"] } }),
  },
  {
    kind: "mutation",
    path: "surface:patchIn",
    args: (ids) => ({ table: "items", id: lastId(ids), value: {}, unset: ["tags"] }),
  },
  {
    kind: "mutation",
    path: "surface:patchIn",
    args: (ids) => ({ table: "notes", id: lastId(ids), value: { price: 1 } }),
  },
  {
    kind: "mutation",
    path: "surface:replaceIn",
    args: (ids) => ({
      table: "items",
      id: lastId(ids),
      value: { name: "mitten", price: 8, remaining: 0 },
    }),
  },
  {
    kind: "mutation",
    path: "surface:replaceIn",
    args: (ids) => ({ table: "notes", id: lastId(ids), value: { text: "a note" } }),
  },
  {
    kind: "mutation",
    path: "surface:deleteIn",
    args: (ids) => ({ table: "notes", id: lastId(ids) }),
  },
  { kind: "query", path: "surface:getItem", args: (ids) => ({ id: lastId(ids) }) },
  {
    kind: "mutation",
    path: "surface:deleteIn",
    args: (ids) => ({ table: "items", id: lastId(ids) }),
  },
  { kind: "query", path: "surface:getIn", args: (ids) => ({ table: "items", id: lastId(ids) }) },
  {
    kind: "mutation",
    path: "surface:addItem",
    args: () => ({ name: "scarf", price: 3, remaining: 1 }),
  },
  { kind: "mutation", path: "surface:deleteItem", args: (ids) => ({ id: lastId(ids) }) },
  { kind: "query", path: "surface:getItem", args: (ids) => ({ id: lastId(ids) }) },
  // Filters.
  {
    kind: "mutation",
    path: "surface:seedValues",
    args: () => ({ prefix: "f", values: [-5, 0, 2, 5, 7, 10] }),
  },
  {
    kind: "query",
    path: "surface:filters",
    // All but `neg`: convex-test does not model q.neg ("not implemented").
    args: () => ({
      prefix: "f",
      only: ["or", "not", "lt", "lte", "gt", "gte", "neq", "add", "sub", "mul", "div", "mod"],
    }),
  },
  {
    kind: "query",
    path: "surface:filters",
    args: () => ({ prefix: "f", only: ["modOfNegative"] }),
  },
  // Count, then pagination to the end and the last cursor once more.
  { kind: "query", path: "surface:count", args: () => ({ table: "marks" }) },
  { kind: "mutation", path: "surface:addMarks", args: () => ({ group: "walk", count: 7 }) },
  { kind: "query", path: "surface:count", args: () => ({ table: "marks" }) },
  { kind: "query", path: "surface:count", args: () => ({ table: "noSuchTable" }) },
  { kind: "mutation", path: "surface:countAroundWrites", args: () => ({ group: "walk" }) },
  {
    kind: "query",
    path: "surface:pageOfMarks",
    args: () => ({ group: "walk", cursor: null, numItems: 3 }),
  },
  {
    kind: "query",
    path: "surface:pageOfMarks",
    args: (_ids, values) => ({ group: "walk", cursor: lastCursor(values), numItems: 3 }),
  },
  {
    kind: "query",
    path: "surface:pageOfMarks",
    args: (_ids, values) => ({ group: "walk", cursor: lastCursor(values), numItems: 3 }),
  },
  {
    kind: "query",
    path: "surface:pageOfMarks",
    args: (_ids, values) => ({ group: "walk", cursor: lastCursor(values), numItems: 3 }),
  },
];

type Outcome = { ok: true; value: unknown } | { ok: false; data?: unknown; message: string };

/** Replaces IDs by `#n` in order of first appearance, creation times by `t`, and cursors by `cursor`. */
function normalize(v: unknown, seen: Map<string, string>): unknown {
  if (typeof v === "string") {
    if (isDocumentId(v) || /^[a-z0-9]{31,37}$/.test(v)) {
      if (!seen.has(v)) seen.set(v, `#${seen.size}`);
      return seen.get(v);
    }
    return v;
  }
  if (Array.isArray(v)) return v.map((x) => normalize(x, seen));
  if (v !== null && typeof v === "object" && !(v instanceof ArrayBuffer)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      if (k === "_creationTime") out[k] = "t";
      else if (k === "continueCursor" || k === "splitCursor" || k === "pageStatus")
        out[k] = "cursor";
      else out[k] = normalize(x, seen);
    }
    return out;
  }
  return v;
}

async function runScript(
  call: (kind: "query" | "mutation", path: string, args: Record<string, Value>) => Promise<unknown>,
) {
  const ids: string[] = [];
  const values: unknown[] = [];
  const outcomes: Outcome[] = [];
  for (const step of script) {
    try {
      const value = await call(step.kind, step.path, step.args(ids, values));
      if (typeof value === "string" && /^[a-z0-9]{20,}$/.test(value)) ids.push(value);
      values.push(value);
      outcomes.push({ ok: true, value });
    } catch (e) {
      const err = e as { data?: unknown; message: string };
      values.push(undefined);
      outcomes.push({ ok: false, data: err.data, message: err.message });
    }
  }
  return outcomes;
}

let t: TestDb;
let runtime: AppRuntime;

beforeAll(async () => {
  runtime = await AppRuntime.create(await linkModules(await bundleConvexDir(fixture)), {
    isolates: 2,
  });
  t = await openTestDb();
});

afterAll(async () => {
  runtime?.dispose();
  await t?.close();
});

describe("Tessera and convex-test agree", () => {
  it("on the results of a script of queries and mutations", async () => {
    const tesseraSchema = await evaluateSchema((await bundleSchema(fixture))!);
    await applySchemaIndexes(t.db, tesseraSchema);
    const runner = new FunctionRunner({ db: t.db, runtime, schema: tesseraSchema });
    const ours = await runScript((kind, path, args) =>
      (kind === "query" ? runner.query(path, args) : runner.mutation(path, args)).then(
        (r) => r.value,
      ),
    );

    // convex-test types references by the app's generated API; the fixture is untyped.
    // biome-ignore lint/suspicious/noExplicitAny: see above
    const mock = convexTest(schema, modules) as any;
    const ref = (path: string) => {
      const [file, fn] = path.split(":");
      // biome-ignore lint/suspicious/noExplicitAny: see above
      return (anyApi as any)[file!][fn!];
    };
    const theirs = await runScript((kind, path, args) =>
      kind === "query" ? mock.query(ref(path), args) : mock.mutation(ref(path), args),
    );

    expect(ours).toHaveLength(script.length);
    for (let i = 0; i < script.length; i++) {
      const step = `${script[i]!.kind} ${script[i]!.path}`;
      const a = ours[i]!;
      const b = theirs[i]!;
      expect(a.ok, `${step}: ok (ours: ${a.ok ? "ok" : (a as { message: string }).message})`).toBe(
        b.ok,
      );
      if (a.ok && b.ok) {
        expect(normalize(a.value, new Map()), step).toEqual(normalize(b.value, new Map()));
      } else if (!a.ok && !b.ok) {
        expect(a.data, `${step}: ConvexError data`).toEqual(b.data);
      }
    }
  });
});
