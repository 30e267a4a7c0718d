/** `ctx.meta.getTransactionMetrics()` counts what the mutation scheduled against the limits. */
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { FunctionRunner } from "../../src/functions/runner.js";
import { ensureSchedulerTable, SCHEDULER_LIMITS } from "../../src/functions/scheduler.js";
import { applySchemaIndexes, evaluateSchema } from "../../src/functions/schema.js";
import { AppRuntime } from "../../src/runtime/appRuntime.js";
import { bundleConvexDir, bundleSchema } from "../../src/runtime/bundler.js";
import { linkModules } from "../../src/runtime/loader.js";
import { openTestDb, type TestDb } from "../helpers.js";

const fixture = join(import.meta.dirname, "../fixtures/app/convex");
let t: TestDb;
let runtime: AppRuntime;
let runner: FunctionRunner;

beforeAll(async () => {
  runtime = await AppRuntime.create(await linkModules(await bundleConvexDir(fixture)));
  const schema = await evaluateSchema((await bundleSchema(fixture))!);
  t = await openTestDb();
  await applySchemaIndexes(t.db, schema);
  await ensureSchedulerTable(t.db);
  runner = new FunctionRunner({ db: t.db, runtime, schema });
});

afterAll(async () => {
  runtime?.dispose();
  await t?.close();
});

it("counts the functions a mutation scheduled and their arguments' bytes against the limits", async () => {
  // Each job's arguments, as the JSON of their Convex value.
  const argsBytes = 2 * JSON.stringify({ name: "later" }).length;
  expect((await runner.mutation("jobs:scheduleTwoAndMeasure", {})).value).toEqual({
    functionsScheduled: { used: 2, remaining: SCHEDULER_LIMITS.maxJobsPerCall - 2 },
    scheduledFunctionArgsBytes: {
      used: argsBytes,
      remaining: SCHEDULER_LIMITS.maxArgsBytesPerCall - argsBytes,
    },
  });
});
