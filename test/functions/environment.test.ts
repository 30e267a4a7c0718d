/**
 * `process.env` in functions: the deployment's environment variables, read
 * through a cache that a change to the table clears, recorded in the read
 * set (so cached results re-run), with writes that never outlive their
 * execution, even in a reused context.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Database } from "../../src/database/index.js";
import {
  applyEnvironmentChanges,
  EnvironmentCache,
  ensureEnvironmentTable,
} from "../../src/functions/environment.js";
import { FunctionRunner } from "../../src/functions/runner.js";
import { applySchemaIndexes, evaluateSchema } from "../../src/functions/schema.js";
import { AppRuntime } from "../../src/runtime/appRuntime.js";
import { bundleConvexDir, bundleSchema } from "../../src/runtime/bundler.js";
import { linkModules } from "../../src/runtime/loader.js";
import { openTestDb, type TestDb } from "../helpers.js";

const fixture = join(import.meta.dirname, "../fixtures/app/convex");

let t: TestDb;
let db: Database;
let runtime: AppRuntime;
let runner: FunctionRunner;
let environment: EnvironmentCache;

beforeAll(async () => {
  runtime = await AppRuntime.create(await linkModules(await bundleConvexDir(fixture)), {
    isolates: 1,
  });
  const schema = await evaluateSchema((await bundleSchema(fixture))!);
  t = await openTestDb();
  db = t.db;
  await applySchemaIndexes(db, schema);
  await ensureEnvironmentTable(db);
  environment = new EnvironmentCache(db);
  runner = new FunctionRunner({ db, runtime, schema, environment });
});

afterAll(async () => {
  environment?.close();
  runtime?.dispose();
  await t?.close();
});

describe("process.env", () => {
  it("reads the deployment's variables, the newest after every change", async () => {
    expect((await runner.query("behaviour:envVar", { name: "API_KEY" })).value).toBeNull();
    await applyEnvironmentChanges(db, [{ name: "API_KEY", value: "one" }]);
    expect((await runner.query("behaviour:envVar", { name: "API_KEY" })).value).toBe("one");
    await applyEnvironmentChanges(db, [{ name: "API_KEY", value: "two" }]);
    expect((await runner.query("behaviour:envVar", { name: "API_KEY" })).value).toBe("two");
    await applyEnvironmentChanges(db, [{ name: "API_KEY", value: null }]);
    expect((await runner.query("behaviour:envVar", { name: "API_KEY" })).value).toBeNull();
  });

  it("records the read, so that a change to any variable invalidates the result", async () => {
    const r = await runner.query("behaviour:envVar", { name: "OTHER" });
    const ts = await applyEnvironmentChanges(db, [{ name: "UNRELATED", value: "x" }]);
    const [commit] = db.commitsSince(r.ts).filter((c) => c.ts === ts);
    expect(commit).toBeDefined();
    expect(commit!.keys.some((k) => r.readSet!.overlaps(k.indexNumber, k.key))).toBe(true);
    // A function that never touches process.env records nothing of the table.
    const plain = await runner.query("items:inStock", {});
    const ts2 = await applyEnvironmentChanges(db, [{ name: "UNRELATED", value: "y" }]);
    const [commit2] = db.commitsSince(plain.ts).filter((c) => c.ts === ts2);
    expect(commit2!.keys.some((k) => plain.readSet!.overlaps(k.indexNumber, k.key))).toBe(false);
  });

  it("keeps writes to process.env inside the execution, in reused contexts too", async () => {
    await applyEnvironmentChanges(db, [{ name: "MODE", value: "prod" }]);
    for (let i = 0; i < 3; i++) {
      const r = await runner.mutation("behaviour:envScribble", { name: "MODE" });
      expect(r.value).toMatchObject({ before: "prod", after: "scribbled" });
    }
    expect((await runner.query("behaviour:envVar", { name: "MODE" })).value).toBe("prod");
  });
});
