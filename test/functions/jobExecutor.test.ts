/**
 * The job executor in-process, on a real database: a burst larger than one
 * due batch runs each job exactly once, and jobs committed behind the scan
 * cursor (due earlier than where the last scan ended, or committed while a
 * scan was under way) are still found at once, not only by the periodic
 * full scan.
 */
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type Database, Database as DatabaseClass } from "../../src/database/index.js";
import {
  ensureSchedulerTable,
  JobExecutor,
  type JobTarget,
  SCHEDULED_TABLE,
  scheduleJob,
} from "../../src/functions/scheduler.js";
import { type Persistence, SqlitePersistence } from "../../src/persistence/index.js";
import { encodeKey } from "../../src/values/index.js";
import { tempDir } from "../helpers.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const PENDING = encodeKey(["pending"]);

let cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const f of cleanup.reverse()) await f();
  cleanup = [];
});

/** A database on a fresh SQLite file; `scanIndex` can be intercepted. */
async function open(
  onScan?: (indexNumber: number, start: Buffer) => Promise<void>,
): Promise<Database> {
  const dir = tempDir();
  const inner = new SqlitePersistence({ path: join(dir.path, "db.sqlite") });
  const persistence: Persistence = Object.assign(Object.create(inner), {
    scanIndex: async (...args: Parameters<Persistence["scanIndex"]>) => {
      const rows = await inner.scanIndex(...args);
      await onScan?.(args[0], args[1].start);
      return rows;
    },
  });
  const db = await DatabaseClass.open({ persistence, gcIntervalMs: 0 });
  cleanup.push(async () => {
    await db.close();
    dir.remove();
  });
  await ensureSchedulerTable(db);
  return db;
}

async function schedule(db: Database, jobs: Array<{ n: number; at: number }>): Promise<void> {
  for (let i = 0; i < jobs.length; i += 1000) {
    await db.run(async (tx) => {
      for (const j of jobs.slice(i, i + 1000))
        await scheduleJob(tx, "work:run", { n: j.n }, j.at / 1000);
    });
  }
}

/** Runs jobs as mutations that record their `n` in `runs`, with the job's bookkeeping in the same commit. */
function start(db: Database, concurrency: number): { executor: JobExecutor; errors: unknown[] } {
  const errors: unknown[] = [];
  const target: JobTarget = {
    kindOf: () => "mutation",
    mutation: async (_path, args, finish) =>
      (
        await db.run(async (tx) => {
          await tx.insert("runs", { n: (args as { n: number }).n });
          await finish(tx);
        })
      ).value,
    action: async () => null,
  };
  const executor = new JobExecutor(
    db,
    () => target,
    concurrency,
    (e) => errors.push(e),
  );
  cleanup.push(() => executor.close());
  return { executor, errors };
}

async function runs(db: Database): Promise<number[]> {
  const tx = db.begin({ readOnly: true });
  try {
    if (tx.table("runs") === undefined) return [];
    return (await tx.query("runs", "by_creation_time").collect()).map((d) => d.n as number);
  } finally {
    tx.abort();
  }
}

async function states(db: Database): Promise<Map<string, number>> {
  const tx = db.begin({ readOnly: true });
  try {
    const out = new Map<string, number>();
    for (const d of await tx.query(SCHEDULED_TABLE, "by_id").collect()) {
      const kind = (d.state as { kind: string }).kind;
      out.set(kind, (out.get(kind) ?? 0) + 1);
    }
    return out;
  } finally {
    tx.abort();
  }
}

async function waitForRuns(db: Database, n: number, timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const done = await runs(db);
    if (done.length >= n || Date.now() > deadline) return done;
    await sleep(25);
  }
}

const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);

describe("the job executor", () => {
  it("runs a burst bigger than a due batch exactly once, and finds jobs committed behind its cursor", async () => {
    const db = await open();
    const now = Date.now();
    const burst = range(0, 2600).map((n) => ({ n, at: now - 1000 }));
    await schedule(db, burst);
    const { executor, errors } = start(db, 16);
    await executor.start();
    // Mid-burst (past the first batch, so scans continue after a cursor):
    // jobs due before the burst, at the same moment (created later), and soon.
    expect((await waitForRuns(db, 1200, 30_000)).length).toBeGreaterThanOrEqual(1200);
    const late = [
      ...range(10_000, 50).map((n) => ({ n, at: now - 5000 })),
      ...range(20_000, 50).map((n) => ({ n, at: now - 1000 })),
      ...range(30_000, 50).map((n) => ({ n, at: Date.now() + 300 })),
    ];
    await schedule(db, late);
    const expected = [...burst, ...late].map((j) => j.n).sort((a, b) => a - b);
    const done = await waitForRuns(db, expected.length, 30_000);
    await sleep(200);
    expect((await runs(db)).sort((a, b) => a - b)).toEqual(expected);
    expect(done.length).toBe(expected.length);
    expect(Object.fromEntries(await states(db))).toEqual({ success: expected.length });
    expect(errors).toEqual([]);
  }, 60_000);

  it("finds a job committed while a due scan is under way that sorts before where the scan ended", async () => {
    let db: Database | null = null;
    let armed = true;
    const now = Date.now();
    db = await open(async (_index, start) => {
      // The first scan of the pending range: a job due earlier commits meanwhile.
      if (!armed || !start.subarray(0, PENDING.length).equals(PENDING)) return;
      armed = false;
      await schedule(db!, [{ n: 1, at: now - 2000 }]);
    });
    await schedule(
      db,
      range(100, 3).map((n) => ({ n, at: now - 1000 })),
    );
    const { executor, errors } = start(db, 4);
    await executor.start();
    const done = await waitForRuns(db, 4, 5000);
    expect(armed).toBe(false);
    expect(done.sort((a, b) => a - b)).toEqual([1, 100, 101, 102]);
    expect(errors).toEqual([]);
  });
});
