/**
 * Queries and mutations that compute longer than the server's thread keeps
 * one execution (SYNC_SLICE_MS) run again from the start on their isolate's
 * own thread: the server keeps serving meanwhile, the function's result and
 * writes are those of one execution, and its limits still hold.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FunctionError, FunctionRunner } from "../../src/functions/runner.js";
import { applySchemaIndexes, evaluateSchema } from "../../src/functions/schema.js";
import { AppRuntime } from "../../src/runtime/appRuntime.js";
import { bundleConvexDir, bundleSchema } from "../../src/runtime/bundler.js";
import { linkModules } from "../../src/runtime/loader.js";
import type { Value } from "../../src/values/index.js";
import { openTestDb, type TestDb } from "../helpers.js";

const fixture = join(import.meta.dirname, "../fixtures/app/convex");
/** Loop turns of `writeComputeWrite` that take far longer than a slice (~0.3 s here) and far less than its budget. */
const LONG = 30_000_000;

let t: TestDb;
let runtime: AppRuntime;
let runner: FunctionRunner;

beforeAll(async () => {
  runtime = await AppRuntime.create(await linkModules(await bundleConvexDir(fixture)), {
    isolates: 2,
  });
  const schema = await evaluateSchema((await bundleSchema(fixture))!);
  t = await openTestDb();
  await applySchemaIndexes(t.db, schema);
  // A budget far above what the long computations here need, even on a slow machine.
  runner = new FunctionRunner({ db: t.db, runtime, schema, timeLimitMs: 10_000 });
});

afterAll(async () => {
  runtime?.dispose();
  await t?.close();
});

const query = (path: string, args: Value = {}) => runner.query(path, args).then((r) => r.value);
const mutation = (path: string, args: Value = {}) =>
  runner.mutation(path, args).then((r) => r.value);

/** How the runtime names a function (`module.js:export`) given its path. */
const fnKey = (path: string) => path.replace(":", ".js:");

/** What `writeComputeWrite` returns for `rounds`. */
function expected(rounds: number): number {
  let x = 0;
  for (let i = 0; i < rounds; i++) x = (x * 31 + i) % 1_000_003;
  return x;
}

describe("a query or mutation longer than the slice", () => {
  it("lets other calls be served while a runaway loop runs, then stops it with its error", async () => {
    // A budget of 3 s: the others need a second isolate, started meanwhile, even on a slow machine.
    const short = new FunctionRunner({
      db: t.db,
      runtime,
      schema: await evaluateSchema((await bundleSchema(fixture))!),
      timeLimitMs: 3000,
    });
    for (const path of ["behaviour:spin", "behaviour:spinAfterRead"]) {
      const { moved } = runtime.background.countsOf(fnKey(path));
      const order: string[] = [];
      const runaway = short.query(path, {}).then(
        () => {
          throw new Error("expected the runaway to fail");
        },
        (e: unknown) => {
          order.push("runaway");
          return e as FunctionError;
        },
      );
      // Issued once the runaway has started: a timer cannot fire while it holds the thread.
      const others = new Promise<void>((resolve, reject) => {
        setTimeout(() => {
          Promise.all([
            short.query("behaviour:moduleState", {}),
            short.mutation("behaviour:addNote", { text: `meanwhile ${path}` }),
          ]).then(() => {
            order.push("others");
            resolve();
          }, reject);
        }, 0);
      });
      const error = await runaway;
      await others;
      expect(order).toEqual(["others", "runaway"]);
      expect(error.kind).toBe("timeout");
      expect(error.message).toMatch(/timed out/);
      expect(runtime.background.countsOf(fnKey(path)).moved).toBe(moved + 1);
    }
  });

  it("ends a long mutation's entries at its syscalls every few ms, keeping it on the server's thread", async () => {
    const { yielded } = runtime.asyncSyscalls;
    const { moved } = runtime.background.countsOf(fnKey("behaviour:addNotes"));
    await mutation("behaviour:addNotes", { prefix: "bulk", count: 3000 });
    expect(
      ((await query("behaviour:notesStartingWith", { prefix: "bulk" })) as string[]).length,
    ).toBe(3000);
    // Each insert is a syscall: an entry that has run a few ms ends at the next one.
    expect(runtime.asyncSyscalls.yielded).toBeGreaterThan(yielded);
    expect(runtime.background.countsOf(fnKey("behaviour:addNotes")).moved).toBe(moved);
  });

  it("commits a mutation's writes once, with the result of one execution, and starts it in the background after", async () => {
    const path = "behaviour:writeComputeWrite";
    const { moved, ran } = runtime.background.countsOf(fnKey(path));
    expect(await mutation(path, { text: "once", rounds: LONG })).toBe(expected(LONG));
    expect(runtime.background.countsOf(fnKey(path))).toEqual({ moved: moved + 1, ran: ran + 1 });
    expect(
      ((await query("behaviour:notesStartingWith", { prefix: "once" })) as string[]).sort(),
    ).toEqual(["once after", "once before"]);
    // Long again: started in the background, without a slice spent on the server's thread first.
    expect(await mutation(path, { text: "twice", rounds: LONG })).toBe(expected(LONG));
    expect(runtime.background.countsOf(fnKey(path))).toEqual({ moved: moved + 1, ran: ran + 2 });
    expect(
      ((await query("behaviour:notesStartingWith", { prefix: "twice" })) as string[]).sort(),
    ).toEqual(["twice after", "twice before"]);
  });
});
