/**
 * Mutations that depend on a commit whose WAL sync is still under way: they
 * begin at it (a serialised lane does not wait for the sync either), and
 * neither their results nor their errors reach the caller before it is
 * durable.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Database } from "../../src/database/index.js";
import {
  applyEnvironmentChanges,
  EnvironmentCache,
  ensureEnvironmentTable,
} from "../../src/functions/environment.js";
import { FunctionRunner } from "../../src/functions/runner.js";
import { applySchemaIndexes, evaluateSchema } from "../../src/functions/schema.js";
import { SqlitePersistence } from "../../src/persistence/index.js";
import { AppRuntime } from "../../src/runtime/appRuntime.js";
import { bundleConvexDir, bundleSchema } from "../../src/runtime/bundler.js";
import { linkModules } from "../../src/runtime/loader.js";
import { tempDir, track, waitFor } from "../helpers.js";

const fixture = join(import.meta.dirname, "../fixtures/app/convex");

let runtime: AppRuntime;
let db: Database;
let runner: FunctionRunner;
let environment: EnvironmentCache;
let dir: ReturnType<typeof tempDir>;
const gate = { hold: false, held: [] as Array<() => void> };

beforeAll(async () => {
  runtime = await AppRuntime.create(await linkModules(await bundleConvexDir(fixture)), {
    isolates: 1,
  });
  dir = tempDir();
  db = await Database.open({
    gcIntervalMs: 0,
    persistence: new SqlitePersistence({
      path: join(dir.path, "db.sqlite"),
      syncFile: () =>
        gate.hold ? new Promise<void>((resolve) => gate.held.push(resolve)) : Promise.resolve(),
    }),
  });
  const schema = await evaluateSchema((await bundleSchema(fixture))!);
  await applySchemaIndexes(db, schema);
  await ensureEnvironmentTable(db);
  environment = new EnvironmentCache(db);
  runner = new FunctionRunner({ db, runtime, schema, environment });
});

afterAll(async () => {
  gate.hold = false;
  for (const r of gate.held.splice(0)) r();
  environment?.close();
  runtime?.dispose();
  await db?.close();
  dir?.remove();
});

describe("mutations behind a commit still syncing", () => {
  it("read it at once, and their results and errors wait for its sync", async () => {
    const item = (await runner.mutation("items:add", { name: "Hat", price: 25, remaining: 1 }))
      .value as string;
    gate.hold = true;
    const first = track(runner.mutation("cart:addCart", { itemId: item, userToken: "a" }));
    await waitFor("the first commit to sync", () => gate.held.length === 1);
    // The second buyer runs against the first's write while it syncs: no hat left.
    const second = track(runner.mutation("cart:addCart", { itemId: item, userToken: "b" }));
    await new Promise((r) => setTimeout(r, 200));
    expect([first.done, first.error, second.done, second.error]).toEqual([
      false,
      null,
      false,
      null,
    ]);
    // A query reads what is durable: the hat is still there.
    expect((await runner.query("items:get", { id: item })).value).toMatchObject({ remaining: 1 });
    gate.hold = false;
    gate.held.shift()!();
    await waitFor("both buyers to hear back", () => first.done && second.error !== null);
    expect(first.value?.value).toBe(0);
    expect((second.error as Error).message).toMatch(/Insufficient stock of Hat/);
  });

  it("see an environment change still syncing, as the rest of their snapshot", async () => {
    await applyEnvironmentChanges(db, [{ name: "TIER", value: "old" }]);
    const before = await runner.mutation("behaviour:envScribble", { name: "TIER" });
    expect(before.value).toMatchObject({ before: "old" });
    gate.hold = true;
    const change = track(applyEnvironmentChanges(db, [{ name: "TIER", value: "new" }]));
    await waitFor("the change to sync", () => gate.held.length === 1);
    const executions = runtime.reuse.executions;
    // Begins at the written change (its snapshot holds "new") while the
    // published values are still the old ones.
    const during = track(runner.mutation("behaviour:envScribble", { name: "TIER" }));
    // One that never reads process.env has nothing to run again for.
    const plain = track(runner.mutation("items:add", { name: "Mug", price: 3, remaining: 2 }));
    // Both run once against the snapshot still syncing, and wait for its sync.
    await waitFor("both mutations to run", () => runtime.reuse.executions - executions >= 2);
    await new Promise((r) => setTimeout(r, 100));
    expect([during.done, plain.done]).toEqual([false, false]);
    gate.hold = false;
    gate.held.shift()!();
    await waitFor("the change and the mutations", () => change.done && during.done && plain.done);
    expect([during.error, plain.error]).toEqual([null, null]);
    expect(during.value?.value).toMatchObject({ before: "new" });
    // The env reader ran twice (the old values, then the new), the other once.
    expect(runtime.reuse.executions - executions).toBe(3);
  });
});
