/**
 * The fixture app (test/fixtures/app/convex) as the tests of this folder use
 * it: bundled like the official CLI does, linked, in a runtime, and served by
 * a function runner on a fresh SQLite test database with its schema's indexes.
 */
import { join } from "node:path";
import {
  type FunctionError,
  FunctionRunner,
  type RunnerOptions,
} from "../../src/functions/runner.js";
import { applySchemaIndexes, evaluateSchema, type Schema } from "../../src/functions/schema.js";
import { AppRuntime, type RuntimeOptions } from "../../src/runtime/appRuntime.js";
import { bundleConvexDir, bundleSchema } from "../../src/runtime/bundler.js";
import { linkModules } from "../../src/runtime/loader.js";
import type { Value } from "../../src/values/index.js";
import { openTestDb, type TestDb } from "../helpers.js";

export const fixtureDir = join(import.meta.dirname, "../fixtures/app/convex");

export interface FixtureApp {
  t: TestDb;
  runtime: AppRuntime;
  schema: Schema;
  runner: FunctionRunner;
  /** A query's value. */
  query(path: string, args?: Value): Promise<Value>;
  /** A mutation's value. */
  mutation(path: string, args?: Value): Promise<Value>;
  close(): Promise<void>;
}

export async function openFixtureApp(
  options: {
    runtime?: RuntimeOptions;
    runner?: Omit<Partial<RunnerOptions>, "db" | "runtime" | "schema">;
  } = {},
): Promise<FixtureApp> {
  const runtime = await AppRuntime.create(
    await linkModules(await bundleConvexDir(fixtureDir)),
    options.runtime,
  );
  const schema = await evaluateSchema((await bundleSchema(fixtureDir))!);
  const t = await openTestDb();
  await applySchemaIndexes(t.db, schema);
  const runner = new FunctionRunner({ ...options.runner, db: t.db, runtime, schema });
  return {
    t,
    runtime,
    schema,
    runner,
    query: (path, args = {}) => runner.query(path, args).then((r) => r.value),
    mutation: (path, args = {}) => runner.mutation(path, args).then((r) => r.value),
    close: async () => {
      runtime.dispose();
      await t.close();
    },
  };
}

/** The error a call failed with; throws if it succeeded. */
export function failure(p: Promise<unknown>): Promise<FunctionError> {
  return p.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (e: unknown) => e as FunctionError,
  );
}
