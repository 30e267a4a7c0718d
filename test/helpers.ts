/** Shared test helpers: temporary data directories and databases on real SQLite files. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Database, type DatabaseOptions } from "../src/database/index.js";
import { SqlitePersistence } from "../src/persistence/index.js";

export function tempDir(prefix = "tessera-test-"): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export interface TestDb {
  db: Database;
  /** The persistence under `db` (replaced on reopen). */
  persistence: SqlitePersistence;
  dir: string;
  reopen(options?: Partial<DatabaseOptions>): Promise<Database>;
  close(): Promise<void>;
}

/** Opens a database on a fresh SQLite file; `close` closes it and removes the directory. */
export async function openTestDb(options: Partial<DatabaseOptions> = {}): Promise<TestDb> {
  const dir = tempDir();
  const file = join(dir.path, "db.sqlite");
  let persistence = new SqlitePersistence({ path: file });
  const open = (o: Partial<DatabaseOptions>) =>
    Database.open({ gcIntervalMs: 0, ...options, ...o, persistence });
  const t: TestDb = {
    db: await open({}),
    get persistence() {
      return persistence;
    },
    dir: dir.path,
    async reopen(o = {}) {
      await t.db.close();
      persistence = new SqlitePersistence({ path: file });
      t.db = await open(o);
      return t.db;
    },
    async close() {
      await t.db.close();
      dir.remove();
    },
  };
  return t;
}

/** The error a promise rejects with (fails the test if it resolves). */
export async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected a rejection");
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Polls `check` (sync or async) every `everyMs` until it holds; fails naming
 * `what` after `timeoutMs`.
 */
export async function waitFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
  everyMs = 10,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** A promise the test resolves when it chooses (to hold a sync, a run, …). */
export function gate(): { held: Promise<void>; release: () => void } {
  let release!: () => void;
  const held = new Promise<void>((r) => {
    release = r;
  });
  return { held, release };
}

/** Follows a promise without awaiting it: whether it settled yet, and how. */
export function track<T>(p: Promise<T>) {
  const t = { done: false, value: undefined as T | undefined, error: null as unknown };
  p.then(
    (v) => {
      t.done = true;
      t.value = v;
    },
    (e) => {
      t.error = e;
    },
  );
  return t;
}

/**
 * Counts turns of the event loop (a `setImmediate` chain) from now until
 * `stop()`: work that never leaves the microtask queue lets none happen.
 */
export function countTurns(): { readonly turns: number; stop(): number } {
  let turns = 0;
  let counting = true;
  const tick = () => {
    if (!counting) return;
    turns++;
    setImmediate(tick);
  };
  setImmediate(tick);
  return {
    get turns() {
      return turns;
    },
    stop() {
      counting = false;
      return turns;
    },
  };
}

/** The user indexes of `table`, as `name(fields)`: those found by name, and the hidden ones. */
export function indexesOf(db: Database, table: string): { found: string[]; hidden: string[] } {
  const catalog = db.catalog;
  const number = catalog.table(table)!.number;
  const named = (i: { name: string; fields: readonly string[] }) =>
    `${i.name}(${i.fields.join(",")})`;
  const user = catalog.indexes(number).filter((i) => i.kind === "user");
  return {
    found: user
      .filter((i) => i.hidden !== true)
      .map(named)
      .sort(),
    hidden: user
      .filter((i) => i.hidden === true)
      .map(named)
      .sort(),
  };
}
