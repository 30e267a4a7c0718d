/**
 * Every syscall is an entry point for bad input: user code can call the
 * `Convex` global with any arguments, not only the ones the official library
 * builds. Whatever it sends, the call answers with a result or an error that
 * says what is wrong (never the generic internal error, which also fails the
 * execution), and the function goes on.
 */
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FunctionRunner } from "../../src/functions/runner.js";
import { AppRuntime } from "../../src/runtime/appRuntime.js";
import { bundleConvexDir } from "../../src/runtime/bundler.js";
import { linkModules } from "../../src/runtime/loader.js";
import { openTestDb, type TestDb } from "../helpers.js";

const fixture = join(import.meta.dirname, "../fixtures/syscalls/convex");

let t: TestDb;
let runtime: AppRuntime;
let runner: FunctionRunner;
let ids: string[];

beforeAll(async () => {
  t = await openTestDb();
  runtime = await AppRuntime.create(await linkModules(await bundleConvexDir(fixture)), {
    isolates: 1,
  });
  runner = new FunctionRunner({ db: t.db, runtime });
  ids = (await runner.mutation("direct:seed", {})).value as string[];
}, 60_000);

afterAll(async () => {
  runtime?.dispose();
  await t?.close();
});

/** A valid query of the seeded table, for the fuzzer to damage. */
const QUERY = {
  source: { type: "FullTableScan", tableName: "things", order: "asc" },
  operators: [{ filter: { $eq: [{ $field: "n" }, { $literal: 1 }] } }, { limit: 2 }],
};

/** Per op, arguments it takes as the official library sends them (ids filled in later). */
function templates(): Array<{ op: string; sync: boolean; args: Record<string, unknown> }> {
  const [a, b, c] = ids;
  return [
    { op: "1.0/queryStream", sync: true, args: { query: QUERY, version: "1.48.0" } },
    { op: "1.0/queryCleanup", sync: true, args: { queryId: 0 } },
    { op: "1.0/db/normalizeId", sync: true, args: { table: "things", idString: a } },
    { op: "1.0/getSnapshotTs", sync: true, args: {} },
    { op: "1.0/get", sync: false, args: { id: a, table: "things", isSystem: false } },
    { op: "1.0/insert", sync: false, args: { table: "things", value: { n: 9, s: "new" } } },
    { op: "1.0/shallowMerge", sync: false, args: { id: b, value: { s: "patched" } } },
    { op: "1.0/replace", sync: false, args: { id: b, value: { n: 1, s: "replaced" } } },
    { op: "1.0/remove", sync: false, args: { id: c } },
    { op: "1.0/queryStreamNext", sync: false, args: { queryId: 0 } },
    { op: "1.0/queryPage", sync: false, args: { query: QUERY, cursor: null, pageSize: 2 } },
    { op: "1.0/count", sync: false, args: { table: "things" } },
    { op: "1.0/schedule", sync: false, args: { name: "direct:seed", ts: 1e12, args: {} } },
    { op: "1.0/cancel_job", sync: false, args: { id: a } },
    { op: "1.0/getUserIdentity", sync: false, args: {} },
    { op: "1.0/getTransactionMetrics", sync: false, args: {} },
    { op: "1.0/getFunctionMetadata", sync: false, args: {} },
    { op: "1.0/getDeploymentMetadata", sync: false, args: {} },
    { op: "1.0/storageGetUrl", sync: false, args: { storageId: "x" } },
    { op: "1.0/runUdf", sync: false, args: { udfType: "query", name: "direct:inQuery" } },
    { op: "1.0/nope", sync: false, args: {} },
  ];
}

/** Per action op, arguments as the official library (or Tessera's bootstrap) sends them. */
function actionTemplates(): Array<{ op: string; sync: boolean; args: Record<string, unknown> }> {
  const none = { calls: [] };
  return [
    { op: "tessera/env", sync: true, args: {} },
    { op: "1.0/actions/query", sync: false, args: { name: "direct:inQuery", args: none } },
    { op: "1.0/actions/mutation", sync: false, args: { name: "direct:inMutation", args: none } },
    { op: "1.0/actions/action", sync: false, args: { name: "direct:inAction", args: none } },
    { op: "1.0/actions/schedule", sync: false, args: { name: "direct:seed", ts: 1e12, args: {} } },
    { op: "1.0/actions/cancel_job", sync: false, args: { id: ids[0] } },
    { op: "1.0/getUserIdentity", sync: false, args: {} },
    { op: "tessera/sleep", sync: false, args: { ms: 1 } },
    // Nothing listens there: the fetch fails, as it should, without leaving the machine.
    {
      op: "tessera/fetch",
      sync: false,
      args: { url: "http://127.0.0.1:1/", method: "GET", headers: [["a", "b"]] },
    },
    { op: "1.0/storageGetUrl", sync: false, args: { storageId: "x" } },
    { op: "1.0/nope", sync: false, args: {} },
  ];
}

/** A `queryPage` call of the seeded table with `args` changed. */
function page(args: Record<string, unknown>) {
  return {
    op: "1.0/queryPage",
    sync: false,
    args: { query: QUERY, cursor: null, pageSize: 2, ...args } as unknown,
  };
}

/** Replaces, drops or adds the field of `target` that `pick` chooses (`undefined`: drops it). */
function damage(target: Record<string, unknown>, pick: number, v: unknown): void {
  const keys = [...Object.keys(target), "extra"];
  const key = keys[pick % keys.length]!;
  if (v === undefined) delete target[key];
  // A copy: the values drawn from are shared between runs, and later damage must not change them.
  else target[key] = structuredClone(v);
}

/** Calls of `all`'s ops with their arguments damaged (see the property below). */
function damagedCalls(all: Array<{ op: string; sync: boolean; args: Record<string, unknown> }>) {
  const value = fc.oneof(
    { weight: 3, arbitrary: fc.jsonValue() },
    {
      weight: 2,
      arbitrary: fc.constantFrom<unknown>(
        ...ids,
        ids[0]!.slice(0, -1),
        "things",
        "_tables",
        "_scheduled_functions",
        QUERY,
        { toString: 1 },
        { $integer: "AAAAAAAAAAA=" },
        { $bytes: 1 },
        [],
        0,
        -1,
        2 ** 40,
        1.5,
        null,
      ),
    },
  );
  /**
   * One of the templates, then at most two fields damaged: of its
   * arguments, or inside its query, its value or the arguments it passes on.
   */
  const call = fc
    .tuple(
      fc.nat(all.length - 1),
      fc.array(fc.tuple(fc.nat(), fc.option(value, { nil: undefined })), { maxLength: 2 }),
      fc.nat(9),
      fc.oneof({ weight: 8, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: value }),
    )
    .map(([t, damages, flip, whole]) => {
      const { op, sync, args } = structuredClone(all[t]!);
      for (const [pick, v] of damages) {
        const source = (args.query as { source?: unknown } | undefined)?.source;
        const inner = [args.query, args.value, source, args.args, undefined];
        const nested = inner[pick % inner.length] as Record<string, unknown> | undefined;
        damage(typeof nested === "object" && nested !== null ? nested : args, pick >> 3, v);
      }
      // Sometimes not an object at all, or through the wrong entry (sync vs async).
      return { op, sync: flip === 0 ? !sync : sync, args: whole === undefined ? args : whole };
    });
  return call;
}

/** The fixture's request for `calls`: each with its arguments as JSON text. */
function requestOf(calls: Array<{ op: string; args: unknown; sync: boolean }>) {
  return {
    calls: calls.map((c) => ({
      op: c.op,
      argsJson: JSON.stringify(c.args) ?? "null",
      sync: c.sync,
    })),
  };
}

/** Every call answered: a result, or an error that says something other than "internal". */
function expectAnswered(answers: Array<{ ok: boolean; text: string }>, calls: number): void {
  expect(answers).toHaveLength(calls);
  for (const a of answers) {
    if (a.ok) continue;
    expect(a.text).not.toMatch(/^Internal error/);
    expect(a.text.length).toBeGreaterThan(0);
  }
}

describe("syscalls called directly by user code", () => {
  it("refuse arguments that are not JSON, or nest deeper than the host takes, with an error saying so", async () => {
    const deep = `${"[".repeat(100_000)}${"]".repeat(100_000)}`;
    const calls = [
      { op: "1.0/get", argsJson: "{not json", sync: false },
      { op: "1.0/queryStream", argsJson: "{not json", sync: true },
      { op: "1.0/insert", argsJson: `{"table":"things","value":{"n":${deep}}}`, sync: false },
      { op: "1.0/queryStream", argsJson: `{"query":${deep}}`, sync: true },
      // The function goes on: a good call after them is answered.
      { op: "1.0/count", argsJson: '{"table":"things"}', sync: false },
    ];
    for (const fn of ["direct:inQuery", "direct:inMutation"]) {
      const run =
        fn === "direct:inQuery" ? runner.query.bind(runner) : runner.mutation.bind(runner);
      const answers = (await run(fn, { calls })).value as Array<{ ok: boolean; text: string }>;
      expect(answers.map((a) => a.text.replace(/ for 1\.0\/\w+/, ""))).toEqual([
        "Invalid arguments: not JSON",
        "Invalid arguments: not JSON",
        "Invalid arguments: arrays and objects nested more than 1000 levels deep",
        "Invalid arguments: arrays and objects nested more than 1000 levels deep",
        expect.stringMatching(/^\d+$/),
      ]);
    }
  });

  it("answer any arguments with a result or an error that says what is wrong", async () => {
    const call = damagedCalls(templates());
    await fc.assert(
      fc.asyncProperty(
        fc.array(call, { minLength: 1, maxLength: 3 }),
        fc.boolean(),
        async (calls, inMutation) => {
          const request = requestOf(calls);
          const outcome = inMutation
            ? await runner.mutation("direct:inMutation", request)
            : await runner.query("direct:inQuery", request);
          const answers = outcome.value as Array<{ ok: boolean; text: string }>;
          expectAnswered(answers, calls.length);
        },
      ),
      {
        numRuns: 1000,
        // Found by this property (rarely drawn): numbers of a page the code
        // printed with String(), which throws on an object from JSON.
        examples: [
          [[page({ pageSize: { toString: 1 } })], false],
          [[page({ maximumRowsRead: { toString: 1 } })], false],
          [[page({ maximumRowsRead: "all" })], false],
        ],
      },
    );
  });
  it("in actions, sleep as long as asked, past what Node's timers take at once", async () => {
    const actions = new FunctionRunner({ db: t.db, runtime, actionTimeLimitMs: 300 });
    const sleepFor = (ms: number) =>
      actions.action("direct:inAction", {
        calls: [{ op: "tessera/sleep", argsJson: JSON.stringify({ ms }), sync: false }],
      });
    expect((await sleepFor(1)).value).toEqual([{ ok: true, text: "null" }]);
    // 2^31 ms and more: a timer fires after 1 ms instead unless the delay is capped.
    for (const ms of [2 ** 31, 3e9, 1e15]) {
      await expect(sleepFor(ms)).rejects.toThrow(/timed out|time limit/i);
    }
  });

  it("in actions, answer any arguments with a result or an error that says what is wrong", async () => {
    // A sleep drawn long is cut off by the action's time limit, kept short here.
    const actions = new FunctionRunner({ db: t.db, runtime, actionTimeLimitMs: 200 });
    await fc.assert(
      fc.asyncProperty(
        fc.array(damagedCalls(actionTemplates()), { minLength: 1, maxLength: 3 }),
        async (calls) => {
          const request = requestOf(calls);
          let answers: Array<{ ok: boolean; text: string }>;
          try {
            answers = (await actions.action("direct:inAction", request)).value as typeof answers;
          } catch (e) {
            // Only the time limit may stop it, and it says so.
            expect((e as Error).message).toMatch(/timed out|time limit/i);
            return;
          }
          expectAnswered(answers, calls.length);
        },
      ),
      {
        numRuns: 150,
        // Found by this property: arguments of a nested call that are no Convex value, and
        // a malformed ID to cancel, failed the action as internal errors.
        examples: [
          [
            [
              {
                op: "1.0/actions/query",
                sync: false,
                args: { name: "direct:inQuery", args: { $: "" } },
              },
            ],
          ],
          [[{ op: "1.0/actions/cancel_job", sync: false, args: { id: ids[0]!.slice(0, -1) } }]],
        ],
      },
    );
  });
});
