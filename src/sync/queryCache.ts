/**
 * Query results shared by every session and HTTP call: one execution per
 * (function, arguments, identity) and snapshot, kept for as long as no commit
 * touches what it read. Each result is valid from the snapshot it ran at
 * until the first later commit that wrote into its read set (found by the
 * subscription index when the commit is published), so a result is served
 * at timestamp `t` only if it ran at or before `t` and nothing up to `t`
 * changed its reads — snapshot semantics, never a stale read.
 */
import type { CommitRecord, Database, ReadSet, Transaction } from "../database/index.js";
import { FunctionError, type FunctionRunner } from "../functions/runner.js";
import type { UserIdentity } from "../runtime/syscalls.js";
import { fromJson, type JsonValue, toJson, type Value } from "../values/index.js";
import { inSlices } from "./slices.js";
import { SubscriptionIndex } from "./subscriptions.js";

/** A query's outcome in wire form, serialised once for every session that shows it. */
export type QueryOutcome =
  | { ok: true; valueJson: string; logLines: string[] }
  | { ok: false; errorMessage: string; errorDataJson: string | null; logLines: string[] };

export interface CachedQuery {
  readonly key: string;
  /** What it ran (to run it again when a commit invalidates it while watched). */
  readonly request: QueryRequest;
  /** The snapshot it ran at. */
  readonly ts: bigint;
  /** The first commit after `ts` that changed what it read, or null while none has. */
  invalidatedAt: bigint | null;
  readonly outcome: QueryOutcome;
  /** Called once when a commit invalidates the result. */
  watchers: Set<(entry: CachedQuery) => void>;
  /** What it read (null: nothing that can change). */
  readonly readSet: ReadSet | null;
  /** In the subscription index. */
  subscribed: boolean;
}

export interface QueryRequest {
  udfPath: string;
  /** The arguments object in Convex JSON form. */
  argsJson: JsonValue;
  identity: UserIdentity | null;
  /** Distinguishes identities in cache keys (`""` for none). */
  identityKey: string;
  /** An admin's query: internal functions may run (kept apart from everyone else's results). */
  allowInternal?: boolean;
}

/** How long telling watchers of a changed result may hold the event loop before it turns. */
export const NOTIFY_SLICE_MS = 20;

export interface QueryCacheOptions {
  /** Results kept without a watcher, for repeated one-shot calls (default 10,000). */
  maxIdleEntries?: number;
}

/** Formats a console line the way the official client parses it (`[LEVEL] message`). */
export function logLine(l: { level: string; message: string }): string {
  return `[${l.level}] ${l.message}`;
}

/** A `FunctionError` or any failure as the wire form of a failed call. */
export function failureOf(e: unknown): {
  errorMessage: string;
  errorDataJson: string | null;
  logLines: string[];
} {
  if (e instanceof FunctionError) {
    return {
      errorMessage: e.message,
      errorDataJson: e.data === undefined ? null : JSON.stringify(toJson(e.data)),
      logLines: e.logs.map(logLine),
    };
  }
  return {
    errorMessage: "Server Error: internal error while running the function",
    errorDataJson: null,
    logLines: [],
  };
}

/** Failures that say nothing about the data (and may not happen again). */
function isTransient(e: unknown): boolean {
  return (
    !(e instanceof FunctionError) ||
    e.kind === "timeout" ||
    e.kind === "memory" ||
    e.kind === "internal" ||
    e.kind === "conflict"
  );
}

export class QueryCache {
  /** The newest result of each key that may still be served. */
  private readonly current = new Map<string, CachedQuery>();
  /** Entries without watchers, least recently used first. */
  private readonly idle = new Map<CachedQuery, true>();
  private readonly running = new Map<string, Promise<CachedQuery>>();
  /**
   * Results run ahead at the snapshot of a batch still syncing (see
   * `readAhead`), by key: subscribed at once, served once it is published.
   */
  private readonly ahead = new Map<string, CachedQuery>();
  /** Counts `reset`s: a run begun before one is never served after it. */
  private generation = 0;
  private readonly subscriptions = new SubscriptionIndex<CachedQuery>();
  /** Subscribed entries that read nothing a commit can change (invalidated only by `reset`). */
  private readonly unchanging = new Set<CachedQuery>();
  private readonly maxIdle: number;
  private readonly unsubscribe: () => void;
  /** Executions run (cache misses), for tests and the benchmark. */
  executions = 0;

  constructor(
    private readonly db: Database,
    private runner: FunctionRunner,
    options: QueryCacheOptions = {},
  ) {
    this.maxIdle = options.maxIdleEntries ?? 10_000;
    const published = db.onPublish((commits) => this.afterPublish(commits));
    const written = db.onWrite((commits) => this.readAhead(commits));
    this.unsubscribe = () => {
      published();
      written();
    };
  }

  static keyOf(q: QueryRequest): string {
    const admin = q.allowInternal === true ? "admin\u0000" : "";
    return `${admin}${q.identityKey}\u0000${q.udfPath}\u0000${JSON.stringify(q.argsJson)}`;
  }

  /** Results held (watched or idle). */
  get size(): number {
    return this.subscriptions.size + this.unchanging.size;
  }

  /** The result of `key` valid at `ts` if one is held (no execution). */
  peek(key: string, ts: bigint): CachedQuery | undefined {
    const cached = this.current.get(key);
    if (cached === undefined || !validAt(cached, ts)) return undefined;
    this.touch(cached);
    return cached;
  }

  /** A result of `q` valid at `ts` (which must not be newer than the database's latest). */
  get(q: QueryRequest, ts: bigint, key = QueryCache.keyOf(q)): Promise<CachedQuery> {
    const cached = this.peek(key, ts);
    if (cached !== undefined) return Promise.resolve(cached);
    return this.running.get(runKeyOf(ts, key)) ?? this.start(q, ts, key);
  }

  private start(q: QueryRequest, ts: bigint, key: string, snapshot?: Transaction) {
    const runKey = runKeyOf(ts, key);
    const run: Promise<CachedQuery> = this.compute(q, ts, key, snapshot).finally(() => {
      if (this.running.get(runKey) === run) this.running.delete(runKey);
    });
    this.running.set(runKey, run);
    return run;
  }

  private afterPublish(commits: readonly CommitRecord[]): void {
    if (this.ahead.size > 0) {
      const latest = this.db.latestTs();
      for (const [key, entry] of this.ahead) {
        if (entry.ts > latest) continue;
        this.ahead.delete(key);
        this.install(entry);
      }
    }
    this.subscriptions.match(commits, (entry, ts) => {
      // A result run ahead at this batch's snapshot holds its commits already.
      if (entry.ts < ts) this.invalidate(entry, ts);
    });
  }

  /**
   * A batch was written and is syncing: the watched results it changes run
   * again now, at its snapshot, so that they are ready when it is published
   * (the sync and the re-run overlap instead of following each other).
   * Nothing is served before that: results wait in `ahead` or `running`.
   */
  private readAhead(commits: readonly CommitRecord[]): void {
    const ts = commits[commits.length - 1]!.ts;
    const due: CachedQuery[] = [];
    this.subscriptions.match(commits, (entry) => {
      if (entry.watchers.size > 0 && entry.ts < ts) due.push(entry);
    });
    for (const entry of due) {
      if (this.running.has(runKeyOf(ts, entry.key))) continue;
      let snapshot: Transaction;
      try {
        snapshot = this.db.beginWritten();
      } catch {
        return;
      }
      if (snapshot.beginTs !== ts) return;
      // Whoever asks for this result later gets its failure, if any; no one else must.
      this.start(entry.request, ts, entry.key, snapshot).catch(() => {});
    }
  }

  /** Watches `entry` until it is invalidated or `unwatch` is called; returns `unwatch`. */
  watch(entry: CachedQuery, onInvalidate: (entry: CachedQuery) => void): () => void {
    if (entry.invalidatedAt !== null) {
      queueMicrotask(() => onInvalidate(entry));
      return () => {};
    }
    entry.watchers.add(onInvalidate);
    this.idle.delete(entry);
    this.subscribe(entry);
    return () => {
      if (!entry.watchers.delete(onInvalidate) || entry.watchers.size > 0) return;
      if (entry.invalidatedAt === null && this.current.get(entry.key) === entry) this.touch(entry);
      else this.forget(entry);
    };
  }

  /** Serves new executions with another code version: every result is dropped. */
  reset(runner: FunctionRunner): void {
    this.runner = runner;
    this.generation++;
    this.running.clear();
    const ts = this.db.latestTs();
    for (const entry of [...this.current.values()]) this.invalidate(entry, ts);
    for (const entry of [...this.unchanging]) this.invalidate(entry, ts);
    this.subscriptions.forEach((entry) => {
      this.invalidate(entry, ts);
    });
  }

  close(): void {
    this.unsubscribe();
  }

  private async compute(
    q: QueryRequest,
    ts: bigint,
    key: string,
    snapshot?: Transaction,
  ): Promise<CachedQuery> {
    this.executions++;
    const generation = this.generation;
    let outcome: QueryOutcome;
    let readSet: ReadSet | undefined;
    let transient = false;
    try {
      const args = fromJson(q.argsJson) as Value;
      const r = await this.runner.query(q.udfPath, args, {
        identity: q.identity,
        ts,
        snapshot,
        allowInternal: q.allowInternal === true,
      });
      outcome = {
        ok: true,
        valueJson: JSON.stringify(toJson(r.value)),
        logLines: r.logs.map(logLine),
      };
      readSet = r.readSet;
    } catch (e) {
      outcome = { ok: false, ...failureOf(e) };
      readSet = e instanceof FunctionError ? e.readSet : undefined;
      transient = isTransient(e);
    }
    const entry: CachedQuery = {
      key,
      request: q,
      ts,
      invalidatedAt: null,
      outcome,
      watchers: new Set(),
      readSet: readSet === undefined || readSet.isEmpty ? null : readSet,
      subscribed: false,
    };
    // Ran with code that has been replaced since: shown to whoever asked, never kept.
    if (generation !== this.generation) entry.invalidatedAt = ts;
    // Commits published while it ran may already have changed what it read.
    else if (readSet !== undefined && !readSet.isEmpty) {
      let commits: ReturnType<Database["commitsSince"]>;
      try {
        commits = this.db.commitsSince(ts);
      } catch {
        commits = [];
        entry.invalidatedAt = ts + 1n;
      }
      for (const c of commits) {
        if (entry.invalidatedAt !== null) break;
        for (const w of c.keys) {
          if (readSet.overlaps(w.indexNumber, w.key)) {
            entry.invalidatedAt = c.ts;
            break;
          }
        }
      }
    }
    // A transient failure is shown to whoever asked (and re-run when its reads
    // change, for sessions watching it) but never served to later callers.
    if (entry.invalidatedAt === null && !transient) {
      // Subscribed at once: commits published from now on invalidate it.
      this.subscribe(entry);
      if (ts <= this.db.latestTs()) this.install(entry);
      else {
        const previous = this.ahead.get(key);
        if (previous !== undefined) this.forget(previous);
        this.ahead.set(key, entry);
      }
    }
    return entry;
  }

  /** Makes a subscribed result the one served for its key, unless a newer one is. */
  private install(entry: CachedQuery): void {
    const previous = this.current.get(entry.key);
    if (previous === undefined || previous.ts <= entry.ts || previous.invalidatedAt !== null) {
      if (previous !== undefined && previous.watchers.size === 0) this.forget(previous);
      this.current.set(entry.key, entry);
      this.touch(entry);
    }
  }

  private subscribe(entry: CachedQuery): void {
    if (entry.subscribed || entry.invalidatedAt !== null) return;
    entry.subscribed = true;
    if (entry.readSet !== null) this.subscriptions.add(entry, entry.readSet);
    else this.unchanging.add(entry);
  }

  private unsubscribeEntry(entry: CachedQuery): void {
    if (!entry.subscribed) return;
    entry.subscribed = false;
    this.subscriptions.delete(entry);
    this.unchanging.delete(entry);
  }

  private invalidate(entry: CachedQuery, ts: bigint): void {
    if (entry.invalidatedAt !== null) return;
    entry.invalidatedAt = ts;
    this.forget(entry);
    if (entry.watchers.size === 0) return;
    // Its watchers will want the new result at the latest snapshot: run it
    // once, then tell them, so that each finds it ready (a fan-out to many
    // sessions is then synchronous passes, not an async chain per session).
    const notify = () => {
      // Each watcher moves to the new result and unwatches this one as it does:
      // it gets an empty set to leave, rather than thousands of deletions from
      // the set being walked (this entry never calls anyone again).
      const watchers = [...entry.watchers];
      entry.watchers = new Set();
      // In slices of NOTIFY_SLICE_MS, a turn of the event loop between: each
      // watcher sends its session's update, and one pass over 10,000 held the
      // server for 0.2-0.3 s. (By time, not count: slices of 256 watchers
      // made the commit reach all 10,000 10-18% later, measured.) A watcher
      // told later finds the newest result then.
      inSlices(
        watchers,
        (calls, startedMs) => calls % 64 === 0 && performance.now() - startedMs >= NOTIFY_SLICE_MS,
        (w) => w(entry),
      );
    };
    this.get(entry.request, this.db.latestTs(), entry.key).then(notify, notify);
  }

  private forget(entry: CachedQuery): void {
    this.unsubscribeEntry(entry);
    this.idle.delete(entry);
    if (this.current.get(entry.key) === entry) this.current.delete(entry.key);
    if (this.ahead.get(entry.key) === entry) this.ahead.delete(entry.key);
  }

  /** Marks an unwatched entry as recently used, evicting the least recently used beyond the limit. */
  private touch(entry: CachedQuery): void {
    if (entry.watchers.size > 0) return;
    this.idle.delete(entry);
    this.idle.set(entry, true);
    while (this.idle.size > this.maxIdle) {
      const oldest = this.idle.keys().next().value as CachedQuery;
      this.forget(oldest);
    }
  }
}

/** What a run of the result `key` at snapshot `ts` is found under while it runs. */
function runKeyOf(ts: bigint, key: string): string {
  return `${ts}\u0000${key}`;
}

function validAt(entry: CachedQuery, ts: bigint): boolean {
  return entry.ts <= ts && (entry.invalidatedAt === null || entry.invalidatedAt > ts);
}
