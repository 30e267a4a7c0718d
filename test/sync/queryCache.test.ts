import { join } from "node:path";
import fc from "fast-check";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
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
import {
  type CachedQuery,
  NOTIFY_SLICE_MS,
  QueryCache,
  type QueryRequest,
} from "../../src/sync/queryCache.js";
import { type JsonValue, toJson, type Value } from "../../src/values/index.js";
import { countTurns, openTestDb, sleep, type TestDb, tempDir, track, waitFor } from "../helpers.js";

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

/** A property step: `items:add` with a random stock. */
const addStep = fc.record({
  op: fc.constant("add" as const),
  remaining: fc.integer({ min: 0, max: 2 }),
});

const direct = (q: QueryRequest, ts: bigint) => directWith(runner, q, ts);

/** What running `q` at `ts` gives, as text. */
async function directWith(r0: FunctionRunner, q: QueryRequest, ts: bigint): Promise<string> {
  try {
    const r = await r0.query(q.udfPath, q.argsJson as never, { ts });
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

  it("tells many watchers of a change in slices, the event loop turning between", async () => {
    const cache = new QueryCache(t.db, runner);
    try {
      const a = await cache.get(request("items:inStock"), t.db.latestTs());
      // Each watcher holds the loop 0.25 ms: over 6 slices' worth in all (the
      // clock is read every 64 watchers).
      const count = NOTIFY_SLICE_MS * 4 * 6;
      const loop = countTurns();
      const toldAt: number[] = [];
      const allTold = new Promise<void>((resolve) => {
        for (let i = 0; i < count; i++) {
          cache.watch(a, () => {
            const until = performance.now() + 0.25;
            while (performance.now() < until) {}
            toldAt.push(loop.turns);
            if (toldAt.length === count) resolve();
          });
        }
      });
      await runner.mutation("items:add", { name: "sliced", price: 1, remaining: 1 });
      await allTold;
      loop.stop();
      expect(toldAt).toHaveLength(count);
      // Told over at least three turns of the loop, in order.
      expect(new Set(toldAt).size).toBeGreaterThanOrEqual(3);
      expect(toldAt).toEqual([...toldAt].sort((x, y) => x - y));
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
              addStep,
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

/**
 * A database whose WAL syncs are held while `gate.hold` is set, until the
 * test releases them (or fails them): commits stay written, not published.
 */
async function openGated() {
  const dir = tempDir();
  const gate = {
    hold: false,
    held: [] as Array<{ resolve: () => void; reject: (e: Error) => void }>,
    release() {
      for (const h of gate.held.splice(0)) h.resolve();
    },
  };
  const db = await Database.open({
    gcIntervalMs: 0,
    persistence: new SqlitePersistence({
      path: join(dir.path, "db.sqlite"),
      syncFile: () =>
        gate.hold
          ? new Promise<void>((resolve, reject) => gate.held.push({ resolve, reject }))
          : Promise.resolve(),
    }),
  });
  const schema = await evaluateSchema((await bundleSchema(APP))!);
  await applySchemaIndexes(db, schema);
  await ensureEnvironmentTable(db);
  const environment = new EnvironmentCache(db);
  const gatedRunner = new FunctionRunner({ db, runtime, schema, environment });
  return {
    db,
    gate,
    runner: gatedRunner,
    async close() {
      environment.close();
      gate.hold = false;
      gate.release();
      await db.close().catch(() => {});
      dir.remove();
    },
  };
}

/** A runner standing for new code: its query results end with "new code". */
function markedRunner(base: FunctionRunner): FunctionRunner {
  return {
    query: (...args: Parameters<FunctionRunner["query"]>) =>
      base.query(...args).then((r) => ({ ...r, value: [...(r.value as Value[]), "new code"] })),
  } as unknown as FunctionRunner;
}

describe("QueryCache, while a commit syncs", () => {
  let g: Awaited<ReturnType<typeof openGated>>;
  beforeEach(async () => {
    g = await openGated();
  });
  afterEach(async () => {
    await g.close();
  });

  const shown = (e: CachedQuery) => (e.outcome.ok ? JSON.parse(e.outcome.valueJson) : null);

  /** Runs `f` with a cache over the gated database, closed after. */
  async function withCache(f: (cache: QueryCache) => Promise<void>, runner = g.runner) {
    const cache = new QueryCache(g.db, runner);
    try {
      await f(cache);
    } finally {
      cache.close();
    }
  }

  /** Runs `q` and watches its result (counting notices), then holds the syncs and starts `write`. */
  async function watchThenWrite<T>(cache: QueryCache, q: QueryRequest, write: () => Promise<T>) {
    const first = await cache.get(q, g.db.latestTs());
    const watcher = { notices: 0 };
    cache.watch(first, () => watcher.notices++);
    g.gate.hold = true;
    return { first, watcher, written: track(write()) };
  }

  it("re-runs a watched result during the sync and serves it only once the commit is published", async () => {
    await withCache(async (cache) => {
      const q = request("items:inStock");
      const key = QueryCache.keyOf(q);
      const before = g.db.latestTs();
      const {
        first: a,
        watcher,
        written: added,
      } = await watchThenWrite(cache, q, () =>
        g.runner.mutation("items:add", { name: "cap", price: 2, remaining: 1 }),
      );
      // The re-run happens while the sync is held: one more result, subscribed.
      await waitFor("the re-run during the sync", () => cache.executions === 2 && cache.size === 2);
      await sleep(20);
      expect(added.done).toBe(false);
      expect(g.db.latestTs()).toBe(before);
      expect(watcher.notices).toBe(0);
      // What is served is still the published snapshot's result.
      expect(cache.peek(key, g.db.latestTs())).toBe(a);
      expect(shown((await cache.get(q, g.db.latestTs()))!)).toEqual(shown(a));

      g.gate.release();
      await waitFor("the mutation", () => added.done);
      const ts = (added.value as { ts: bigint }).ts;
      expect(g.db.latestTs()).toBe(ts);
      await waitFor("the watcher's notice", () => watcher.notices === 1);
      // Ready when published: nothing ran after the sync.
      const fresh = cache.peek(key, ts)!;
      expect(cache.executions).toBe(2);
      expect(fresh.ts).toBe(ts);
      expect(shown(fresh)).toContain("cap (2.00)");
    });
  });

  it("runs ahead with the environment variables of the snapshot", async () => {
    await applyEnvironmentChanges(g.db, [{ name: "COLOR", value: "blue" }]);
    await withCache(async (cache) => {
      const q = request("behaviour:envVar", { name: "COLOR" });
      const key = QueryCache.keyOf(q);
      const {
        first: a,
        watcher,
        written: changed,
      } = await watchThenWrite(cache, q, () =>
        applyEnvironmentChanges(g.db, [{ name: "COLOR", value: "green" }]),
      );
      expect(shown(a)).toBe("blue");
      await waitFor("the re-run to start", () => cache.executions === 2);
      await sleep(20);
      // The values of the change wait for it: nothing is read from the old ones.
      expect(shown(cache.peek(key, g.db.latestTs())!)).toBe("blue");
      g.gate.release();
      await waitFor("the change", () => changed.done);
      await waitFor("the watcher's notice", () => watcher.notices === 1);
      expect(shown(cache.peek(key, g.db.latestTs())!)).toBe("green");
    });
  });

  it("never serves a re-run whose commit failed to sync", async () => {
    await withCache(async (cache) => {
      const q = request("items:inStock");
      const {
        first: a,
        watcher,
        written: added,
      } = await watchThenWrite(cache, q, () =>
        g.runner.mutation("items:add", { name: "lost", price: 1, remaining: 1 }),
      );
      await waitFor("the re-run during the sync", () => cache.size === 2);
      for (const h of g.gate.held.splice(0)) h.reject(new Error("disk gone"));
      await waitFor("the mutation's failure", () => added.error !== null);
      expect(added.error).toBeInstanceOf(Error);
      await sleep(20);
      expect(watcher.notices).toBe(0);
      expect(cache.peek(QueryCache.keyOf(q), g.db.latestTs())).toBe(a);
    });
  });

  it("drops a re-run made with replaced code", async () => {
    await withCache(async (cache) => {
      const q = request("items:inStock");
      const key = QueryCache.keyOf(q);
      let entry = await cache.get(q, g.db.latestTs());
      const follow = async () => {
        const at = g.db.latestTs();
        entry = cache.peek(key, at) ?? (await cache.get(q, at));
        cache.watch(entry, () => void follow());
      };
      cache.watch(entry, () => void follow());
      g.gate.hold = true;
      const added = track(g.runner.mutation("items:add", { name: "cap", price: 2, remaining: 1 }));
      await waitFor("the re-run during the sync", () => cache.size === 2);
      // New code (marked in its results) arrives while the commit syncs.
      cache.reset(markedRunner(g.runner));
      g.gate.release();
      await waitFor("the mutation", () => added.done);
      const ts = (added.value as { ts: bigint }).ts;
      await waitFor("the result at the commit", () => entry.ts === ts);
      expect(shown(entry)).toContain("cap (2.00)");
      expect(shown(entry)).toContain("new code");
    });
  });

  it("keeps no result of a run that began before the code was replaced", async () => {
    let letGo = () => {};
    const held = new Promise<void>((resolve) => {
      letGo = resolve;
    });
    const slow = {
      query: async (...args: Parameters<FunctionRunner["query"]>) => {
        await held;
        return g.runner.query(...args);
      },
    } as unknown as FunctionRunner;
    await withCache(async (cache) => {
      const q = request("items:inStock");
      const early = cache.get(q, g.db.latestTs());
      cache.reset(markedRunner(g.runner));
      letGo();
      // Whoever asked before gets what they asked for…
      expect(shown(await early)).not.toContain("new code");
      // …and everyone after gets the new code's result.
      expect(shown(await cache.get(q, g.db.latestTs()))).toContain("new code");
    }, slow);
  });

  it("serves watchers only what running the query at the snapshot gives, with commits in flight", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            addStep,
            fc.record({ op: fc.constant("hold" as const), on: fc.boolean() }),
            fc.record({ op: fc.constant("release" as const) }),
            fc.record({ op: fc.constant("watch" as const), which: fc.nat() }),
          ),
          { maxLength: 14 },
        ),
        async (steps) => {
          const cache = new QueryCache(g.db, g.runner);
          const inFlight: Promise<unknown>[] = [];
          const ids: string[] = [];
          const served: Array<{ entry: CachedQuery; at: bigint }> = [];
          const pending: Promise<void>[] = [];
          // As a session does: the result at the latest snapshot, then watch it.
          const follow = async (q: QueryRequest): Promise<void> => {
            const at = g.db.latestTs();
            const entry = cache.peek(QueryCache.keyOf(q), at) ?? (await cache.get(q, at));
            served.push({ entry, at });
            cache.watch(entry, () => pending.push(follow(q)));
          };
          try {
            for (const s of steps) {
              if (s.op === "hold") g.gate.hold = s.on;
              else if (s.op === "release") g.gate.release();
              else if (s.op === "add") {
                const p = g.runner.mutation("items:add", {
                  name: `p${inFlight.length}`,
                  price: 1,
                  remaining: s.remaining,
                });
                inFlight.push(p.then((r) => ids.push(r.value as string)));
                await sleep(1);
              } else {
                const q =
                  ids.length === 0 || s.which % 2 === 0
                    ? request("items:inStock")
                    : request("items:get", { id: ids[s.which % ids.length]! });
                await follow(q);
              }
            }
            g.gate.hold = false;
            g.gate.release();
            await Promise.all(inFlight);
            // Each follow may be invalidated and followed again, adding to `pending` while it
            // is awaited: wait until a round adds none.
            for (let seen = -1; seen !== pending.length; ) {
              seen = pending.length;
              await sleep(5);
              await Promise.all(pending);
            }
            for (const { entry, at } of served) {
              expect(entry.ts <= at).toBe(true);
              const o = entry.outcome;
              expect(o.ok ? `ok ${o.valueJson}` : `error ${o.errorMessage}`).toBe(
                await directWith(g.runner, entry.request, entry.ts),
              );
            }
          } finally {
            g.gate.hold = false;
            g.gate.release();
            await Promise.allSettled(inFlight);
            cache.close();
          }
        },
      ),
      { numRuns: 15 },
    );
  }, 60_000);
});
