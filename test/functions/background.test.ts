/**
 * Queries and mutations that compute longer than the server's thread keeps
 * one execution (SYNC_SLICE_MS) run again from the start on their isolate's
 * own thread: the server keeps serving meanwhile, the function's result and
 * writes are those of one execution, and its limits still hold.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FunctionError, FunctionRunner } from "../../src/functions/runner.js";
import { type FixtureApp, openFixtureApp } from "./fixtureApp.js";

/** Loop turns of `writeComputeWrite` that take far longer than a slice (~0.3 s here) and far less than its budget. */
const LONG = 30_000_000;

let app: FixtureApp;

beforeAll(async () => {
  // A budget far above what the long computations here need, even on a slow machine.
  app = await openFixtureApp({ runtime: { isolates: 2 }, runner: { timeLimitMs: 10_000 } });
});

afterAll(() => app?.close());

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
    const { t, runtime, schema } = app;
    const short = new FunctionRunner({ db: t.db, runtime, schema, timeLimitMs: 3000 });
    for (const path of ["behaviour:spin", "behaviour:spinAfterRead"]) {
      const { moved } = app.runtime.background.countsOf(fnKey(path));
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
      expect(app.runtime.background.countsOf(fnKey(path)).moved).toBe(moved + 1);
    }
  });

  it("ends a long mutation's entries at its syscalls every few ms", async () => {
    const { yielded } = app.runtime.asyncSyscalls;
    await app.mutation("behaviour:addNotes", { prefix: "bulk", count: 3000 });
    expect(
      ((await app.query("behaviour:notesStartingWith", { prefix: "bulk" })) as string[]).length,
    ).toBe(3000);
    // Each insert is a syscall: an entry that has run a few ms ends at the next one.
    expect(app.runtime.asyncSyscalls.yielded).toBeGreaterThan(yielded);
  });

  it("commits a mutation's writes once, with the result of one execution, and starts it in the background after", async () => {
    const path = "behaviour:writeComputeWrite";
    const { moved, ran } = app.runtime.background.countsOf(fnKey(path));
    expect(await app.mutation(path, { text: "once", rounds: LONG })).toBe(expected(LONG));
    expect(app.runtime.background.countsOf(fnKey(path))).toEqual({
      moved: moved + 1,
      ran: ran + 1,
    });
    expect(
      ((await app.query("behaviour:notesStartingWith", { prefix: "once" })) as string[]).sort(),
    ).toEqual(["once after", "once before"]);
    // Long again: started in the background, without a slice spent on the server's thread first.
    expect(await app.mutation(path, { text: "twice", rounds: LONG })).toBe(expected(LONG));
    expect(app.runtime.background.countsOf(fnKey(path))).toEqual({
      moved: moved + 1,
      ran: ran + 2,
    });
    expect(
      ((await app.query("behaviour:notesStartingWith", { prefix: "twice" })) as string[]).sort(),
    ).toEqual(["twice after", "twice before"]);
  });
});
