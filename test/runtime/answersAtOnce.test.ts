/**
 * Async syscalls answered within the call: with SQLite (reads answered at
 * once) a query's or mutation's syscalls never wait for the isolate to
 * return; with a store whose reads answer with promises they are queued and
 * settled later. Either way the results are the same, in the order the
 * calls were made.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Database } from "../../src/database/index.js";
import { FunctionRunner } from "../../src/functions/runner.js";
import { applySchemaIndexes, evaluateSchema } from "../../src/functions/schema.js";
import { SqlitePersistence } from "../../src/persistence/index.js";
import { AppRuntime } from "../../src/runtime/appRuntime.js";
import { bundleConvexDir, bundleSchema } from "../../src/runtime/bundler.js";
import { linkModules } from "../../src/runtime/loader.js";
import { countTurns, tempDir } from "../helpers.js";

const fixture = join(import.meta.dirname, "../fixtures/app/convex");

/** SQLite whose reads answer a turn of the event loop later, as a networked store's would. */
class DeferredReads extends SqlitePersistence {
  override getDocument(...a: Parameters<SqlitePersistence["getDocument"]>) {
    return later(super.getDocument(...a));
  }
  override scanDocuments(...a: Parameters<SqlitePersistence["scanDocuments"]>) {
    return later(super.scanDocuments(...a));
  }
  override scanIndex(...a: Parameters<SqlitePersistence["scanIndex"]>) {
    return later(super.scanIndex(...a));
  }
}

/** SQLite whose scans fail a turn of the event loop later. */
class FailingScans extends SqlitePersistence {
  override scanIndex(): ReturnType<SqlitePersistence["scanIndex"]> {
    return new Promise((_, reject) =>
      setImmediate(() => reject(new Error("storage went away"))),
    ) as unknown as ReturnType<SqlitePersistence["scanIndex"]>;
  }
}

// The overrides widen the return type to a promise, as the Persistence contract allows.
function later<T>(value: T): T {
  return new Promise((resolve) => setImmediate(() => resolve(value))) as unknown as T;
}

let runtime: AppRuntime;
let linked: Awaited<ReturnType<typeof linkModules>>;
let schema: Awaited<ReturnType<typeof evaluateSchema>>;
const dir = tempDir();
const stores: Array<{ db: Database; runner: FunctionRunner }> = [];

beforeAll(async () => {
  linked = await linkModules(await bundleConvexDir(fixture));
  runtime = await AppRuntime.create(linked, { isolates: 1 });
  schema = await evaluateSchema((await bundleSchema(fixture))!);
  for (const [name, Store] of [
    ["at-once", SqlitePersistence],
    ["deferred", DeferredReads],
  ] as const) {
    const db = await Database.open({
      gcIntervalMs: 0,
      // A cache of a few documents: reads go to storage.
      documentCacheBytes: 1024,
      persistence: new Store({ path: join(dir.path, `${name}.sqlite`) }),
    });
    await applySchemaIndexes(db, schema);
    stores.push({ db, runner: new FunctionRunner({ db, runtime, schema }) });
  }
});

afterAll(async () => {
  runtime?.dispose();
  for (const s of stores) await s.db.close();
  dir.remove();
});

/** What `f` returns, and how the async syscalls it made were answered. */
async function counted<T>(f: () => Promise<T>) {
  const before = { ...runtime.asyncSyscalls };
  const value = await f();
  return {
    value,
    atOnce: runtime.asyncSyscalls.atOnce - before.atOnce,
    later: runtime.asyncSyscalls.later - before.later,
  };
}

async function workload(runner: FunctionRunner) {
  await runner.mutation("behaviour:addNotes", { prefix: "n", count: 150 });
  const stream = (await runner.query("behaviour:streamOrder", {})).value;
  const ids = (await runner.query("behaviour:page", { cursor: null, numItems: 2 })).value as {
    page: Array<{ _id: string }>;
  };
  const [a, b] = ids.page.map((d) => d._id);
  // Racing reads settle in the order they were made: `b` was asked first.
  const race = (await runner.query("behaviour:race", { a: a!, b: b! })).value;
  const counter = [];
  for (let i = 0; i < 3; i++) {
    counter.push((await runner.mutation("counters:increment", { name: "c" })).value);
  }
  return { stream, race, counter };
}

describe("async syscalls of queries and mutations", () => {
  it("are answered without leaving the isolate when storage answers at once, with the same results as when it does not", async () => {
    const [atOnce, deferred] = stores;
    const fast = await counted(() => workload(atOnce!.runner));
    const slow = await counted(() => workload(deferred!.runner));
    expect(fast.later).toBe(0);
    expect(fast.atOnce).toBeGreaterThan(150);
    expect(slow.later).toBeGreaterThan(0);
    expect(fast.value).toEqual(slow.value);
    expect(fast.value.counter).toEqual([1, 2, 3]);
    expect((fast.value.stream as { all: string[] }).all).toHaveLength(150);
  });

  it("leave no unhandled rejection when one still waiting fails after its execution stopped", async () => {
    const db = await Database.open({
      gcIntervalMs: 0,
      persistence: new FailingScans({ path: join(dir.path, "failing.sqlite") }),
    });
    const unhandled: unknown[] = [];
    const note = (e: unknown) => unhandled.push(e);
    process.on("unhandledRejection", note);
    try {
      await applySchemaIndexes(db, schema);
      const runner = new FunctionRunner({ db, runtime, schema });
      // A table exists once written to; a query of one that does not is answered without storage.
      await runner.mutation("behaviour:addNotes", { prefix: "n", count: 1 });
      const before = runtime.asyncSyscalls.later + runtime.asyncSyscalls.yielded;
      await expect(runner.query("behaviour:spinWhileReading", {})).rejects.toThrow(/time/i);
      // Its read was queued, and has failed by now: once per attempt (the
      // slice stopped the first, and it ran again in the background).
      // (Left for later as yielded if the entry had already run past YIELD_AFTER_MS.)
      expect(runtime.asyncSyscalls.later + runtime.asyncSyscalls.yielded).toBe(before + 2);
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
      expect(unhandled).toEqual([]);
    } finally {
      process.off("unhandledRejection", note);
      await db.close();
    }
  });
});

describe("an execution the slice stopped", () => {
  it("runs again only once what its first attempt asked of storage is done", async () => {
    // Storage answers a turn later, and the note is not cached: the delete's read is under way
    // when the computation after it meets the slice.
    const { db } = stores[1]!;
    const runner = new FunctionRunner({ db, runtime, schema, timeLimitMs: 10_000 });
    await runner.mutation("behaviour:addNotes", { prefix: "gone", count: 50 });
    const ids = async () =>
      (
        (await runner.query("behaviour:page", { cursor: null, numItems: 1000 })).value as {
          page: Array<{ _id: string }>;
        }
      ).page.map((n) => n._id);
    const before = await ids();
    // One from the middle: the few the small document cache holds are the last ones read.
    const target = before[before.length >> 1]!;
    const moved = runtime.background.counts.moved;
    await runner.mutation("behaviour:deleteWhileComputing", { id: target, rounds: 30_000_000 });
    expect(runtime.background.counts.moved).toBe(moved + 1);
    expect(await ids()).toEqual(before.filter((id) => id !== target));
  });
});

/**
 * 1,000 `items:echo` queries at once, each checked to get its own answer. They
 * make no syscalls: an execution never yields by itself, only the hand-offs can.
 */
async function echoBurst(runner: FunctionRunner): Promise<void> {
  const results = await Promise.all(
    Array.from({ length: 1000 }, (_, n) => runner.query("items:echo", { n })),
  );
  expect(results.map((r) => (r.value as { n: number }).n)).toEqual(
    Array.from({ length: 1000 }, (_, n) => n),
  );
}

describe("the isolate pool", () => {
  it("serves overlapping executions that answer at once from one isolate, and spreads executions that wait", async () => {
    // The pool alone: entries that yield for a turn (yieldAfterMs), or that a loaded machine
    // slows past the slice and moves to the background (syncSliceMs), would let waiters start
    // isolates (seen: 4 in about 1 of 16 runs beside another test run).
    const pooled = await AppRuntime.create(linked, {
      isolates: 4,
      yieldAfterMs: Infinity,
      syncSliceMs: 10_000,
    });
    try {
      const [atOnce, deferred] = stores.map(
        ({ db }) => new FunctionRunner({ db, runtime: pooled, schema }),
      );
      const eight = (runner: FunctionRunner) =>
        Promise.all(
          Array.from({ length: 8 }, (_, i) =>
            i % 2 === 0
              ? runner.query("behaviour:streamOrder", {})
              : runner.mutation("counters:increment", { name: "pool" }),
          ),
        );
      await atOnce!.query("behaviour:streamOrder", {});
      for (let round = 0; round < 5; round++) await eight(atOnce!);
      expect(pooled.isolateCount).toBe(1);
      // Waiting callers are served in turn: eight loops of queries that never
      // leave the microtask queue share the calls instead of one taking them all.
      const calls = [0, 0, 0, 0, 0, 0, 0, 0];
      let total = 0;
      await Promise.all(
        calls.map(async (_, loop) => {
          while (total < 400) {
            total++;
            await atOnce!.query("counters:get", { name: "pool" });
            calls[loop]!++;
          }
        }),
      );
      expect(Math.min(...calls)).toBeGreaterThan(20);
      expect(pooled.isolateCount).toBe(1);
      // Reads answered a turn later keep an isolate busy across turns: the others start.
      await eight(deferred!);
      expect(pooled.isolateCount).toBeGreaterThan(1);
    } finally {
      pooled.dispose();
    }
  });

  it("gives a caller the error of an isolate that could not be started for it", async () => {
    const pair = await AppRuntime.create(linked, { isolates: 2 });
    try {
      const runner = new FunctionRunner({ db: stores[1]!.db, runtime: pair, schema });
      // biome-ignore lint/suspicious/noExplicitAny: the test replaces a private method
      (pair as any).newIsolate = () => {
        throw new Error("no more isolates");
      };
      // The first holds the only isolate across turns; the second, still in line a turn later, needs another.
      const first = runner.query("behaviour:streamOrder", {});
      await expect(runner.query("behaviour:streamOrder", {})).rejects.toThrow("no more isolates");
      expect((await first).value).toBeDefined();
    } finally {
      pair.dispose();
    }
  });

  it("lets the event loop turn during a burst of executions that answer at once", async () => {
    // A query set of thousands, or a commit changing thousands of results:
    // each caller in line resumes in a microtask when the isolate is handed
    // on, so without a turn now and then the whole burst is one stretch.
    const pooled = await AppRuntime.create(linked, { isolates: 4, yieldAfterMs: 2 });
    try {
      const runner = new FunctionRunner({ db: stores[0]!.db, runtime: pooled, schema });
      await runner.query("items:echo", { n: -1 });
      const loop = countTurns();
      await echoBurst(runner);
      const turns = loop.stop();
      expect(turns).toBeGreaterThanOrEqual(2);
      // The line moved at every turn: no caller in it started another isolate.
      expect(pooled.isolateCount).toBe(1);
    } finally {
      pooled.dispose();
    }
  });

  it("replaces an isolate killed while it waits for a turn to be handed on", async () => {
    const single = await AppRuntime.create(linked, { isolates: 1, yieldAfterMs: 2 });
    try {
      const runner = new FunctionRunner({ db: stores[0]!.db, runtime: single, schema });
      await runner.query("items:echo", { n: -1 });
      // Runs at the first turn the burst lets happen, while a hand-off waits for it.
      const pool = (single as unknown as { pool: Array<{ isolate: { dispose(): void } }> }).pool;
      setImmediate(() => pool[0]!.isolate.dispose());
      await echoBurst(runner);
    } finally {
      single.dispose();
    }
  });

  it("refuses the callers in line when the runtime is disposed", async () => {
    const single = await AppRuntime.create(linked, { isolates: 1 });
    const runner = new FunctionRunner({ db: stores[1]!.db, runtime: single, schema });
    // The first holds the only isolate across turns (its reads answer later); the second waits in line.
    const first = runner.query("behaviour:streamOrder", {});
    const second = runner.query("behaviour:streamOrder", {});
    first.catch(() => {});
    await new Promise((r) => setImmediate(r));
    single.dispose();
    await expect(second).rejects.toThrow(/disposed/);
  });
});
