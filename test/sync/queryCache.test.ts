import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FunctionRunner } from "../../src/functions/runner.js";
import { applySchemaIndexes, evaluateSchema } from "../../src/functions/schema.js";
import { AppRuntime } from "../../src/runtime/appRuntime.js";
import { bundleConvexDir, bundleSchema } from "../../src/runtime/bundler.js";
import { linkModules } from "../../src/runtime/loader.js";
import { QueryCache, type QueryRequest } from "../../src/sync/queryCache.js";
import { type JsonValue, toJson } from "../../src/values/index.js";
import { openTestDb, type TestDb } from "../helpers.js";

const APP = join(import.meta.dirname, "..", "fixtures", "app", "convex");

let t: TestDb;
let runtime: AppRuntime;
let runner: FunctionRunner;

beforeAll(async () => {
  t = await openTestDb();
  const schema = await evaluateSchema((await bundleSchema(APP))!);
  await applySchemaIndexes(t.db, schema);
  runtime = await AppRuntime.create(await linkModules(await bundleConvexDir(APP)), { isolates: 1 });
  runner = new FunctionRunner({ db: t.db, runtime, schema });
}, 60_000);

afterAll(async () => {
  runtime?.dispose();
  await t?.close();
});

const request = (udfPath: string, args: JsonValue = {}): QueryRequest => ({
  udfPath,
  argsJson: args,
  identity: null,
  identityKey: "",
});

async function direct(q: QueryRequest, ts: bigint): Promise<string> {
  try {
    const r = await runner.query(q.udfPath, q.argsJson as never, { ts });
    return `ok ${JSON.stringify(toJson(r.value))}`;
  } catch (e) {
    return `error ${(e as Error).message}`;
  }
}

describe("QueryCache", () => {
  it("runs identical queries once and re-runs them only after a commit touches their reads", async () => {
    const cache = new QueryCache(t.db, runner);
    try {
      const q = request("items:inStock");
      const ts0 = t.db.latestTs();
      const [a, b] = await Promise.all([cache.get(q, ts0), cache.get(q, ts0)]);
      expect(a).toBe(b);
      expect(cache.executions).toBe(1);
      let invalidated = 0;
      let notified = () => {};
      const notice = new Promise<void>((resolve) => {
        notified = resolve;
      });
      cache.watch(a, () => {
        invalidated++;
        notified();
      });

      // A write elsewhere (notes) leaves the result valid at the new timestamp.
      await t.db.run(async (tx) => {
        await tx.insert("notes", { text: "unrelated" });
      });
      expect(await cache.get(q, t.db.latestTs())).toBe(a);
      expect(invalidated).toBe(0);

      await runner.mutation("items:add", { name: "cap", price: 2, remaining: 1 });
      expect(a.invalidatedAt).not.toBeNull();
      // Watchers hear of it once the new result is ready: no second execution for them.
      await notice;
      expect(invalidated).toBe(1);
      expect(cache.executions).toBe(2);
      const fresh = cache.peek(QueryCache.keyOf(q), t.db.latestTs())!;
      expect(fresh).toBeDefined();
      expect(await cache.get(q, t.db.latestTs())).toBe(fresh);
      expect(cache.executions).toBe(2);
      expect(fresh).not.toBe(a);
      expect(fresh.outcome.ok && JSON.parse(fresh.outcome.valueJson)).toContain("cap (2.00)");
      // The old snapshot is still answered as it was.
      const old = await cache.get(q, ts0);
      expect(old.outcome).toEqual(a.outcome);
    } finally {
      cache.close();
    }
  });

  it("never serves a result that differs from running the query at the same snapshot", async () => {
    const cache = new QueryCache(t.db, runner);
    const ids: string[] = [];
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.array(
            fc.oneof(
              fc.record({
                op: fc.constant("add" as const),
                remaining: fc.integer({ min: 0, max: 2 }),
              }),
              fc.record({
                op: fc.constant("query" as const),
                which: fc.integer({ min: 0, max: 3 }),
                back: fc.integer({ min: 0, max: 3 }),
              }),
            ),
            { maxLength: 12 },
          ),
          async (steps) => {
            const history: bigint[] = [t.db.latestTs()];
            for (const s of steps) {
              if (s.op === "add") {
                const r = await runner.mutation("items:add", {
                  name: `n${ids.length}`,
                  price: 1,
                  remaining: s.remaining,
                });
                ids.push(r.value as string);
                history.push(r.ts);
                continue;
              }
              const q =
                s.which === 0 || ids.length === 0
                  ? request("items:inStock")
                  : request("items:get", { id: ids[(s.which * 7) % ids.length]! });
              const ts = history[Math.max(0, history.length - 1 - s.back)]!;
              const entry = await cache.get(q, ts);
              const o = entry.outcome;
              expect(o.ok ? `ok ${o.valueJson}` : `error ${o.errorMessage}`).toBe(
                await direct(q, ts),
              );
            }
          },
        ),
        { numRuns: 15 },
      );
    } finally {
      cache.close();
    }
  }, 60_000);
});
