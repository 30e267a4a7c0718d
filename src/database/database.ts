/**
 * The database: transactions over a multiversion log, a single committer
 * with optimistic concurrency control and group commit, and the background
 * work that keeps indexes and retention in order. See README.md.
 */
import type {
  DocumentWrite,
  GarbageWork,
  IndexWrite,
  KeyRange,
  LogEntry,
  MutationAnswer,
  Persistence,
  PersistenceMetadata,
} from "../persistence/index.js";
import {
  andThen,
  type Document,
  keySuccessor,
  type MaybePromise,
  parseStoredValue,
  stringifyValue,
} from "../values/index.js";
import { Catalog, INDEX_TABLE, type IndexInfo, TABLES_TABLE } from "./catalog.js";
import { CommitLog, type CommitRecord, type WrittenKey } from "./commitLog.js";
import { DocumentCache, deepFreeze } from "./documentCache.js";
import { ConflictError, DatabaseError, SnapshotTooOldError } from "./errors.js";
import { indexKey } from "./indexKeys.js";
import { DEFAULT_TRANSACTION_LIMITS, type TransactionLimits } from "./limits.js";
import { defaultWallNs, TimestampOracle } from "./timestamps.js";
import { Transaction, type TransactionHost } from "./transaction.js";

export interface DatabaseOptions {
  persistence: Persistence;
  limits?: Partial<TransactionLimits>;
  /** Bytes of recently used documents kept parsed in memory (default 64 MiB). */
  documentCacheBytes?: number;
  /** How long old versions stay readable (default 5 minutes). */
  retentionMs?: number;
  /** Commits kept in memory for validation (default 100,000); older transactions get a conflict. */
  commitLogEntries?: number;
  /** How often garbage collection runs (default 10 s; 0 = only when `collectGarbage` is called). */
  gcIntervalMs?: number;
  /** Wall clock in nanoseconds, for tests of clock behaviour. */
  wallClockNs?: () => bigint;
}

interface QueuedCommit {
  tx: Transaction;
  resolve: (ts: bigint) => void;
  reject: (e: unknown) => void;
  /** Told once the commit is written (readable by read-write transactions), before it is durable. */
  onWritten?: (() => void) | undefined;
  /** Stored with the commit (see `CommitOptions.answer`). */
  answer?: CommitAnswer | undefined;
}

/** A mutation's answer to its client, stored with its commit (`Database.mutationAnswer`). */
export interface CommitAnswer {
  client: string;
  requestId: number;
  text: string;
}

export interface CommitOptions {
  onWritten?: () => void;
  /**
   * Stored atomically with the commit, under (client, request id), for
   * `mutationAnswer`: a client that sends the mutation again after the
   * server restarted gets this instead of a second run. Not stored for a
   * transaction without writes (running it again changes nothing).
   */
  answer?: CommitAnswer;
}

interface PreparedCommit extends QueuedCommit {
  ts: bigint;
  keys: WrittenKey[];
}

/**
 * Log rows per step of garbage collection (and answers per step of their
 * forgetting). A step runs on the event loop without yielding (reading the
 * log, the versions each row supersedes, then one delete transaction), at
 * about 30 µs per row on the store workload: 2,000 rows held the loop
 * 60–90 ms, several times every 10 s under a sustained write load.
 */
const GC_CHUNK_ROWS = 128;
const BACKFILL_CHUNK_DOCS = 1000;

export class Database implements TransactionHost {
  readonly limits: TransactionLimits;
  private readonly persistence: Persistence;
  private readonly cache: DocumentCache;
  private readonly commitLog: CommitLog;
  private readonly oracle: TimestampOracle;
  private readonly wallNs: () => bigint;
  private readonly retentionNs: bigint;

  /** Latest durable, visible timestamp: read-only transactions begin here. */
  private published: bigint;
  /**
   * Latest timestamp written to the persistence, durable or not: read-write
   * transactions begin here (see `begin`), with `headCatalog`.
   */
  private written: bigint;
  /** Documents written by batches not yet published, with how many such batches wrote each. */
  private readonly unpublished = new Map<string, number>();
  private publishedCatalog: Catalog;
  /** The timestamp since which `publishedCatalog` has been the catalog (snapshots at or after it share it). */
  private catalogSince: bigint;
  private readonly publishListeners = new Set<(commits: readonly CommitRecord[]) => void>();
  private readonly writeListeners = new Set<(commits: readonly CommitRecord[]) => void>();
  private readonly commitChecks = new Set<CommitCheck>();
  /** Catalog including commits accepted but not yet durable. */
  private headCatalog: Catalog;
  /** Reads below this timestamp are refused: versions there may be collected. */
  private retainedFrom: bigint;

  private queue: QueuedCommit[] = [];
  private flushScheduled = false;
  /** Batches written to the persistence and not yet published (one syncing, others waiting on the next sync). */
  private inFlight = 0;
  /** Settles when the newest batch in flight has been published or failed: batches publish in order. */
  private lastPublication: Promise<void> = Promise.resolve();
  private idle: Array<() => void> = [];
  private failure: Error | null = null;
  private closed = false;

  private readonly backgroundJobs = new Map<number, Promise<void>>();
  /** Indexes whose background work is finished (or failed) for the life of this process. */
  private readonly settledIndexes = new Set<number>();
  private gcTimer: NodeJS.Timeout | null = null;
  private gcRunning: Promise<void> | null = null;

  private constructor(
    options: DatabaseOptions,
    published: bigint,
    retainedFrom: bigint,
    catalog: Catalog,
  ) {
    this.persistence = options.persistence;
    this.limits = { ...DEFAULT_TRANSACTION_LIMITS, ...options.limits };
    this.cache = new DocumentCache(options.documentCacheBytes ?? 64 * 1024 * 1024);
    this.commitLog = new CommitLog(published, options.commitLogEntries ?? 100_000);
    this.wallNs = options.wallClockNs ?? defaultWallNs;
    this.oracle = new TimestampOracle(published, this.wallNs);
    this.retentionNs = BigInt(options.retentionMs ?? 5 * 60_000) * 1_000_000n;
    this.published = published;
    this.written = published;
    this.retainedFrom = retainedFrom;
    this.publishedCatalog = catalog;
    this.catalogSince = published;
    this.headCatalog = catalog;
  }

  /** Opens a database on a persistence, rebuilding the catalog from the system tables. */
  static async open(options: DatabaseOptions): Promise<Database> {
    let meta: PersistenceMetadata;
    let catalog: Catalog;
    try {
      meta = await options.persistence.load();
      catalog = await loadCatalog(options.persistence, meta.maxTs);
    } catch (e) {
      // The persistence may hold its file's lock: let it go, since this database never opened.
      await options.persistence.close().catch(() => {});
      throw e;
    }
    const db = new Database(options, meta.maxTs, meta.retainedFromTs, catalog);
    db.startBackgroundWork();
    const gcEvery = options.gcIntervalMs ?? 10_000;
    if (gcEvery > 0) {
      db.gcTimer = setInterval(() => void db.collectGarbage().catch(() => {}), gcEvery);
      db.gcTimer.unref();
    }
    return db;
  }

  /** The latest committed timestamp visible to new transactions. */
  latestTs(): bigint {
    return this.published;
  }

  /**
   * The latest timestamp accepted and written, durable or not. Every commit
   * accepted so far has a timestamp at or below it (acceptance and writing
   * happen in one synchronous step).
   */
  writtenTs(): bigint {
    return this.written;
  }

  /**
   * Runs `check` on every transaction about to commit, once it is known not
   * to conflict: an error it returns (or throws) fails that commit alone.
   * Checks are told of a commit before its timestamp is taken, so one added
   * now sees every commit after `writtenTs()`. Returns a function that removes it.
   */
  addCommitCheck(check: CommitCheck): () => void {
    this.commitChecks.add(check);
    return () => this.commitChecks.delete(check);
  }

  /**
   * Calls `listener` synchronously each time commits become visible, with
   * every index key they wrote, oldest first. Returns an unsubscribe function.
   */
  onPublish(listener: (commits: readonly CommitRecord[]) => void): () => void {
    this.publishListeners.add(listener);
    return () => this.publishListeners.delete(listener);
  }

  /**
   * Calls `listener` synchronously each time a batch of commits is written,
   * before it is durable (then `beginWritten` reads at the batch's newest
   * timestamp): for work that can start during the sync, whose results must
   * not reach anyone before the commits are published.
   */
  onWrite(listener: (commits: readonly CommitRecord[]) => void): () => void {
    this.writeListeners.add(listener);
    return () => this.writeListeners.delete(listener);
  }

  /**
   * The commits after `ts` up to the latest visible one, for checking a read
   * set taken at `ts` against what happened since. Throws `RangeError` when
   * the in-memory log no longer reaches back to `ts`.
   */
  commitsSince(ts: bigint): CommitRecord[] {
    if (ts < this.commitLog.oldestValidatableTs)
      throw new RangeError("commit log no longer covers this timestamp");
    const out: CommitRecord[] = [];
    for (const c of this.commitLog.since(ts)) {
      if (c.ts > this.published) break;
      out.push(c);
    }
    return out;
  }

  /** The commits written but not yet published (durable and visible) up to `ts`, oldest first. */
  unpublishedCommits(ts: bigint): CommitRecord[] {
    const out: CommitRecord[] = [];
    if (ts <= this.published) return out;
    for (const c of this.commitLog.since(this.published)) {
      if (c.ts > ts) break;
      out.push(c);
    }
    return out;
  }

  get catalog(): Catalog {
    return this.publishedCatalog;
  }

  /** The oldest timestamp that can still be read. */
  get retainedFromTs(): bigint {
    return this.retainedFrom;
  }

  private checkUsable(): void {
    if (this.failure)
      throw new DatabaseError(`The database failed and must be reopened: ${this.failure.message}`);
    if (this.closed) throw new DatabaseError("The database is closed");
  }

  /**
   * Begins a transaction. A read-only one reads at the latest published
   * (durable) timestamp. A read-write one reads at the latest written
   * timestamp, which may not be durable yet: a transaction that depends on
   * a commit still syncing need not wait for that sync to begin, only to be
   * acknowledged. Its outcome must not reach anyone before its snapshot is
   * durable: `commit` waits for that, and whoever reports the outcome of a
   * read-write transaction it aborts waits for `whenPublished(tx.beginTs)`.
   * With `cacheReads`, the documents it reads enter the document cache at
   * once rather than on their second read (for a reader that knows they
   * will be read again soon: the scheduler's batch of due jobs).
   */
  begin(options: { readOnly?: boolean; cacheReads?: boolean } = {}): Transaction {
    this.checkUsable();
    const readOnly = options.readOnly === true;
    return new Transaction(
      this,
      readOnly ? this.published : this.written,
      readOnly ? this.publishedCatalog : this.headCatalog,
      readOnly,
      options.cacheReads === true,
    );
  }

  /**
   * Resolves once `ts` is published (durable and visible); rejects if the
   * database failed first, since the batch holding `ts` may then be lost.
   */
  whenPublished(ts: bigint): Promise<void> {
    if (ts <= this.published) return Promise.resolve();
    // The newest batch in flight holds `ts` or comes after it; batches publish in order.
    return this.lastPublication.then(() => {
      if (this.published < ts)
        throw new DatabaseError(
          `Commit failed: the snapshot it read was not made durable: ${this.failure?.message ?? "the database closed"}`,
        );
    });
  }

  /**
   * The answer stored with a commit for (client, request id) (see
   * `CommitOptions.answer`), once that commit is durable; null if none is
   * stored (never stored, forgotten, or the commit failed).
   */
  async mutationAnswer(client: string, requestId: number): Promise<MutationAnswer | null> {
    this.checkUsable();
    const answer = await this.persistence.mutationAnswer(client, requestId);
    if (answer === null) return null;
    await this.whenPublished(answer.ts);
    return answer;
  }

  /**
   * Forgets the stored answers of commits more than `ageMs` before the
   * latest one, in chunks that leave the event loop to others in between.
   */
  async forgetMutationAnswers(ageMs: number): Promise<number> {
    this.checkUsable();
    const beforeTs = this.latestTs() - BigInt(ageMs) * 1_000_000n;
    let forgotten = 0;
    for (;;) {
      const n = await this.persistence.forgetMutationAnswers(beforeTs, GC_CHUNK_ROWS);
      forgotten += n;
      if (n < GC_CHUNK_ROWS || this.failure !== null || this.closed) return forgotten;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /**
   * Begins a read-only transaction at the latest written timestamp, which
   * may not be durable yet: nothing it read may be shown to anyone before
   * `whenPublished(tx.beginTs)`.
   */
  beginWritten(): Transaction {
    this.checkUsable();
    return new Transaction(this, this.written, this.headCatalog, true);
  }

  /** Begins a read-only transaction at a past timestamp inside the retention window. */
  async beginAt(ts: bigint): Promise<Transaction> {
    this.checkUsable();
    if (ts > this.published)
      throw new DatabaseError(`Timestamp ${ts} is in the future (latest is ${this.published})`);
    this.checkSnapshot(ts);
    const catalog =
      ts >= this.catalogSince ? this.publishedCatalog : await loadCatalog(this.persistence, ts);
    return new Transaction(this, ts, catalog, true);
  }

  /**
   * Runs `fn` in a transaction and commits it, re-running it from scratch on
   * conflicts (up to `maxAttempts` times).
   */
  async run<T>(
    fn: (tx: Transaction) => MaybePromise<T>,
    options: { maxAttempts?: number; readOnly?: boolean } = {},
  ): Promise<{ value: T; ts: bigint; attempts: number }> {
    const maxAttempts = options.maxAttempts ?? 16;
    for (let attempt = 1; ; attempt++) {
      const tx = this.begin({ readOnly: options.readOnly });
      try {
        const value = await fn(tx);
        const ts = await this.commit(tx);
        return { value, ts, attempts: attempt };
      } catch (e) {
        tx.abort();
        if (e instanceof ConflictError && attempt < maxAttempts) continue;
        // What it read may still be syncing: its error is not told before that is durable.
        if (!tx.readOnly) await this.whenPublished(tx.beginTs);
        throw e;
      }
    }
  }

  // ---- commit --------------------------------------------------------------

  /**
   * Validates and commits a transaction. Resolves with the commit timestamp
   * once the writes are durable; rejects with `ConflictError` if a commit
   * since the transaction began wrote into its read set. A transaction with
   * no writes commits at its begin timestamp without validation (it is
   * serializable there by construction).
   */
  commit(tx: Transaction, options: CommitOptions = {}): Promise<bigint> {
    try {
      tx.checkActive();
      this.checkUsable();
    } catch (e) {
      return Promise.reject(e);
    }
    if (tx.writes.size === 0) {
      tx.markState("committed");
      // Its snapshot (a read-write transaction's may still be syncing) must be durable first.
      return this.whenPublished(tx.beginTs).then(() => tx.beginTs);
    }
    tx.markState("committing");
    return new Promise<bigint>((resolve, reject) => {
      this.queue.push({
        tx,
        resolve,
        reject,
        onWritten: options.onWritten,
        answer: options.answer,
      });
      this.scheduleFlush();
    });
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    const run = () => {
      this.flushScheduled = false;
      this.flush().catch((e) => this.fail(e));
    };
    // Nothing in flight: write now (commits issued in the same synchronous
    // run still join), so the sync starts while other transactions execute.
    // Otherwise setImmediate lets every commit of this turn join the batch.
    if (this.inFlight === 0) queueMicrotask(run);
    else setImmediate(run);
  }

  private conflictMessage(w: WrittenKey): string {
    const table = this.headCatalog.tableByNumber(w.tableNumber)?.name ?? `#${w.tableNumber}`;
    return `Documents read from or written to the ${JSON.stringify(table)} table changed while this transaction was running, so it conflicted with a concurrent commit and must be retried.`;
  }

  /** Validates queued transactions in order and writes the accepted ones as one durable batch. */
  private async flush(): Promise<void> {
    if (this.queue.length === 0) return this.afterFlush();
    const items = this.queue;
    this.queue = [];
    const deferred: (() => void)[] = [];
    try {
      return await this.flushItems(items, deferred);
    } finally {
      for (const reject of deferred) reject();
    }
  }

  private async flushItems(items: typeof this.queue, deferred: (() => void)[]): Promise<void> {
    const accepted: PreparedCommit[] = [];
    const documents: DocumentWrite[] = [];
    const indexes: IndexWrite[] = [];
    const cacheUpdates: Array<{ id: string; ts: bigint; doc: Document | null; size: number }> = [];
    const answers: MutationAnswer[] = [];
    let head = this.headCatalog;
    for (const item of items) {
      const { tx } = item;
      let conflict: WrittenKey | null;
      try {
        conflict = this.commitLog.findConflict(tx.beginTs, tx.readSet);
      } catch {
        tx.markState("aborted");
        item.reject(
          new ConflictError(
            "This transaction ran for too long to be validated and must be retried.",
          ),
        );
        continue;
      }
      if (conflict !== null) {
        tx.markState("aborted");
        const error = new ConflictError(
          this.conflictMessage(conflict),
          head.tableByNumber(conflict.tableNumber)?.name ?? null,
        );
        // Told only once this batch is published: a retry that began earlier
        // would read a snapshot already known to be stale and conflict again.
        deferred.push(() => item.reject(error));
        continue;
      }
      if (this.commitChecks.size > 0) {
        const refused = runCommitChecks(this.commitChecks, tx);
        if (refused !== null) {
          tx.markState("aborted");
          item.reject(refused);
          continue;
        }
      }
      const ts = this.oracle.next();
      let prepared: PreparedWrites;
      try {
        prepared = prepareWrites(tx, head, ts);
      } catch (e) {
        // A commit that cannot be turned into writes fails alone; the batch goes on.
        tx.markState("aborted");
        item.reject(e);
        continue;
      }
      head = prepared.catalog;
      documents.push(...prepared.documents);
      indexes.push(...prepared.indexes);
      cacheUpdates.push(...prepared.cacheUpdates);
      this.commitLog.append({ ts, keys: prepared.keys });
      if (item.answer !== undefined) answers.push({ ...item.answer, ts });
      // Spelled out: spreading the queued item cost more than the rest of the loop (measured).
      accepted.push({
        tx,
        resolve: item.resolve,
        reject: item.reject,
        onWritten: item.onWritten,
        ts,
        keys: prepared.keys,
      });
    }
    if (accepted.length === 0) return this.afterFlush();

    const maxTs = accepted[accepted.length - 1]!.ts;
    // What write and publish listeners are told (one array for both).
    const records: CommitRecord[] = accepted.map((c) => ({ ts: c.ts, keys: c.keys }));
    this.headCatalog = head;
    // Batches are pipelined: this one is written while earlier ones may still
    // be syncing (it then shares the next sync), and published after them.
    this.inFlight++;
    const previous = this.lastPublication;
    let published!: () => void;
    this.lastPublication = new Promise<void>((resolve) => {
      published = resolve;
    });
    let writeError: unknown = null;
    let durable: Promise<void> | null = null;
    try {
      durable = this.persistence.write(
        answers.length === 0
          ? { documents, indexes, maxTs }
          : { documents, indexes, maxTs, answers },
      );
    } catch (e) {
      writeError = e;
    }
    if (durable !== null) {
      // Applied (write() applies a batch before it returns): read-write
      // transactions see it from now on, through the cache too.
      for (const u of cacheUpdates) {
        this.cache.set(u.id, { ts: u.ts, doc: u.doc, size: cachedSize(u.size) });
        this.unpublished.set(u.id, (this.unpublished.get(u.id) ?? 0) + 1);
      }
      this.written = maxTs;
      for (const c of accepted) c.onWritten?.();
      if (this.writeListeners.size > 0) tellListeners(this.writeListeners, records);
      try {
        await durable;
      } catch (e) {
        writeError = e;
      }
    }
    await previous;
    this.inFlight--;
    if (durable !== null) {
      for (const u of cacheUpdates) {
        const n = this.unpublished.get(u.id)!;
        if (n === 1) this.unpublished.delete(u.id);
        else this.unpublished.set(u.id, n - 1);
      }
    }
    try {
      if (writeError !== null || this.failure !== null) {
        // The outcome on disk is unknown (or an earlier batch's is), so nothing
        // more can be acknowledged: fail loudly.
        const reason = writeError !== null ? writeError : this.failure;
        for (const c of accepted) {
          c.tx.markState("aborted");
          c.reject(
            new DatabaseError(`Commit failed: storage write error: ${errorMessage(reason)}`),
          );
        }
        return this.fail(reason);
      }
      this.publish(head, maxTs, accepted, records);
    } finally {
      published();
    }
  }

  /** Makes a durable batch visible: readers, listeners, then the writers. */
  private publish(
    head: Catalog,
    maxTs: bigint,
    accepted: PreparedCommit[],
    records: readonly CommitRecord[],
  ): void {
    const catalogChanged = head !== this.publishedCatalog;
    if (catalogChanged) this.catalogSince = maxTs;
    this.published = maxTs;
    this.publishedCatalog = head;
    // Listeners (subscriptions) see the commits before their writers hear back,
    // so that a writer's next read of a subscription finds it up to date.
    if (this.publishListeners.size > 0) tellListeners(this.publishListeners, records);
    for (const c of accepted) {
      c.tx.markState("committed");
      c.resolve(c.ts);
    }
    if (catalogChanged) this.startBackgroundWork();
    this.afterFlush();
  }

  /** Puts the database in the failed state and rejects everything waiting to commit. */
  private fail(e: unknown): void {
    this.failure ??= e instanceof Error ? e : new Error(String(e));
    for (const q of this.queue.splice(0)) {
      q.tx.markState("aborted");
      q.reject(new DatabaseError(`Commit failed: ${this.failure.message}`));
    }
    this.afterFlush();
  }

  private afterFlush(): void {
    if (this.queue.length > 0) this.scheduleFlush();
    else if (this.inFlight === 0) for (const f of this.idle.splice(0)) f();
  }

  /** Resolves once every commit queued so far has been decided. */
  private drain(): Promise<void> {
    if (this.queue.length === 0 && this.inFlight === 0 && !this.flushScheduled)
      return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  // ---- reads (TransactionHost) --------------------------------------------

  private checkSnapshot(ts: bigint): void {
    if (ts < this.retainedFrom) {
      throw new SnapshotTooOldError(
        `Timestamp ${ts} is older than the retention window (versions before ${this.retainedFrom} may be gone)`,
      );
    }
  }

  creationTime(): number {
    return Number(this.wallNs() / 1000n) / 1000;
  }

  readDocument(
    tableNumber: number,
    id: string,
    key: Buffer,
    ts: bigint,
    cache = false,
  ): MaybePromise<Document | null> {
    this.checkSnapshot(ts);
    const cached = this.cache.get(id, ts);
    if (cached !== undefined) return cached.doc;
    const publishedBefore = this.published;
    const writtenBefore = this.written;
    return andThen(this.persistence.getDocument(tableNumber, key, ts), (stored) =>
      stored === null
        ? null
        : this.admitRead(id, ts, stored, publishedBefore, writtenBefore, cache),
    );
  }

  /** A document just read from storage; it enters the cache when it may. */
  private admitRead(
    id: string,
    ts: bigint,
    stored: string,
    publishedBefore: bigint,
    writtenBefore: bigint,
    cache: boolean,
  ): Document {
    const doc = parseStoredDocument(stored);
    // Only the newest version may enter the cache (see DocumentCache). It is
    // valid from the read timestamp on when nothing newer is written: nothing
    // was published or written during the read, and no batch not yet
    // published wrote this document (its entry, newer, may have been
    // evicted). Only shared documents need freezing; others belong to this
    // caller alone.
    if (
      ts >= publishedBefore &&
      this.published === publishedBefore &&
      this.written === writtenBefore &&
      !this.unpublished.has(id) &&
      (cache || this.cache.admit(id))
    ) {
      this.cache.set(id, { ts, doc: deepFreeze(doc), size: cachedSize(stored.length) });
    }
    return doc;
  }

  scanDocumentsPage(
    tableNumber: number,
    range: KeyRange,
    ts: bigint,
    order: "asc" | "desc",
    limit: number,
  ): MaybePromise<Array<{ key: Buffer; doc: Document }>> {
    this.checkSnapshot(ts);
    return andThen(this.persistence.scanDocuments(tableNumber, range, ts, order, limit), (rows) =>
      rows.map((r) => {
        const id = r.id.toString("latin1", 1, r.id.length - 1);
        const cached = this.cache.get(id, ts);
        const doc = cached?.doc ?? parseStoredDocument(r.value);
        return { key: r.id, doc };
      }),
    );
  }

  scanIndexPage(
    indexNumber: number,
    range: KeyRange,
    ts: bigint,
    order: "asc" | "desc",
    limit: number,
  ) {
    this.checkSnapshot(ts);
    return this.persistence.scanIndex(indexNumber, range, ts, order, limit);
  }

  // ---- background work: index backfill and cleanup -------------------------

  /**
   * Starts the index work that is due and not running: backfills of new
   * indexes, and cleanup of dropped ones once no reader can see them any
   * more (the retention horizon has passed the drop, so older snapshots are
   * refused rather than shown an emptied index). A finished job looks again,
   * since one job can make another due; a failed one is not retried until
   * the database is reopened.
   */
  private startBackgroundWork(): void {
    if (this.closed) return;
    for (const index of this.publishedCatalog.indexesByNumber.values()) {
      if (this.backgroundJobs.has(index.number) || this.settledIndexes.has(index.number)) continue;
      let work: (() => Promise<void>) | null = null;
      if (index.state === "backfilling") work = () => this.backfill(index);
      else if (index.state === "dropped" && this.retainedFrom >= index.droppedTs!) {
        work = () => this.cleanUpDropped(index);
      }
      if (work === null) continue;
      const job = work()
        .then(() => {
          this.backgroundJobs.delete(index.number);
          this.startBackgroundWork();
        })
        .catch((e) => {
          this.backgroundJobs.delete(index.number);
          this.settledIndexes.add(index.number);
          if (!this.closed)
            console.error(`tessera: background work on index ${index.name} failed:`, e);
        });
      this.backgroundJobs.set(index.number, job);
    }
  }

  /**
   * Writes entries for every document of the snapshot just before the
   * index was created, at that timestamp (C−1, where C is the creating
   * commit). The creating commit and every later one maintain the index
   * themselves, and their entries at C or later take precedence; nobody
   * reads the index at C−1, since it did not exist yet. Then enables it.
   * Re-running an interrupted backfill rewrites the same entries, which
   * the persistence ignores.
   */
  private async backfill(index: IndexInfo): Promise<void> {
    const snapshot = index.createdTs - 1n;
    let range: KeyRange = { start: Buffer.alloc(0), end: null };
    for (;;) {
      if (
        this.closed ||
        this.publishedCatalog.indexesByNumber.get(index.number)?.state !== "backfilling"
      ) {
        return;
      }
      const rows = await this.persistence.scanDocuments(
        index.tableNumber,
        range,
        snapshot,
        "asc",
        BACKFILL_CHUNK_DOCS,
      );
      await this.persistence.writeBackfill(
        rows.map((r) => ({
          indexNumber: index.number,
          key: indexKey(index, parseStoredDocument(r.value)),
          ts: snapshot,
          docId: r.id,
        })),
      );
      if (rows.length < BACKFILL_CHUNK_DOCS) break;
      range = { start: keySuccessor(rows[rows.length - 1]!.id), end: null };
      await new Promise((r) => setImmediate(r));
    }
    await this.run(async (tx) => {
      const current = tx.currentCatalog.indexesByNumber.get(index.number);
      if (current?.state === "backfilling") await tx.setIndexState(current, "enabled");
    });
  }

  private async cleanUpDropped(index: IndexInfo): Promise<void> {
    while (!this.closed) {
      if ((await this.persistence.dropIndexEntries(index.number, 1000)) === 0) {
        this.settledIndexes.add(index.number);
        return;
      }
      await new Promise((r) => setImmediate(r));
    }
  }

  /** Resolves when no index is being backfilled or cleaned up. */
  async waitForBackgroundWork(): Promise<void> {
    while (this.backgroundJobs.size > 0) await Promise.all(this.backgroundJobs.values());
  }

  // ---- retention -----------------------------------------------------------

  /**
   * Deletes versions that no read inside the retention window can see.
   * Runs on a timer; callable directly (tests, tools).
   */
  collectGarbage(): Promise<void> {
    this.gcRunning ??= this.runGarbageCollection().finally(() => {
      this.gcRunning = null;
    });
    return this.gcRunning;
  }

  private async runGarbageCollection(): Promise<void> {
    let cutoff = this.wallNs() - this.retentionNs;
    if (cutoff > this.published) cutoff = this.published;
    // A backfill reads and writes at the timestamp before its index's creation: keep it intact.
    for (const i of this.publishedCatalog.indexesByNumber.values()) {
      if (i.state === "backfilling" && i.createdTs - 1n < cutoff) cutoff = i.createdTs - 1n;
    }
    while (!this.closed && !this.failure && this.retainedFrom < cutoff) {
      const rows = await this.persistence.readLog(this.retainedFrom, cutoff, GC_CHUNK_ROWS);
      const through = rows.length < GC_CHUNK_ROWS ? cutoff : rows[rows.length - 1]!.ts;
      const work = await this.garbageIn(rows, through);
      // Refuse reads below the new horizon before anything is deleted.
      this.retainedFrom = through;
      await this.persistence.collectGarbage(work);
      this.startBackgroundWork();
      await new Promise((r) => setImmediate(r));
    }
  }

  /** What collecting the given log rows deletes: superseded versions and index entries. */
  private async garbageIn(rows: LogEntry[], through: bigint): Promise<GarbageWork> {
    const work: GarbageWork = { documents: [], indexKeys: [], retainedFromTs: through };
    for (const row of rows) {
      work.documents.push({
        tableNumber: row.tableNumber,
        id: row.id,
        ts: row.ts,
        deleted: row.value === null,
      });
      const prev = await this.persistence.getDocument(row.tableNumber, row.id, row.ts - 1n);
      const oldDoc = prev === null ? null : parseStoredDocument(prev);
      const newDoc = row.value === null ? null : parseStoredDocument(row.value);
      for (const index of this.headCatalog.indexes(row.tableNumber)) {
        if (index.kind === "by_id") continue;
        const oldKey = oldDoc && indexKey(index, oldDoc);
        const newKey = newDoc && indexKey(index, newDoc);
        if (oldKey && newKey && oldKey.equals(newKey)) continue;
        if (oldKey)
          work.indexKeys.push({
            indexNumber: index.number,
            key: oldKey,
            ts: row.ts,
            removed: true,
          });
        if (newKey)
          work.indexKeys.push({
            indexNumber: index.number,
            key: newKey,
            ts: row.ts,
            removed: false,
          });
      }
    }
    return work;
  }

  // ---- shutdown ------------------------------------------------------------

  /** Finishes queued commits, stops background work and closes the persistence. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.drain();
    this.closed = true;
    if (this.gcTimer) clearInterval(this.gcTimer);
    await this.gcRunning;
    await Promise.all(this.backgroundJobs.values());
    await this.persistence.close();
  }
}

function parseStoredDocument(text: string): Document {
  return parseStoredValue(text) as Document;
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** See `Database.addCommitCheck`. */
export type CommitCheck = (tx: Transaction) => Error | null;

function runCommitChecks(checks: ReadonlySet<CommitCheck>, tx: Transaction): Error | null {
  for (const check of checks) {
    try {
      const e = check(tx);
      if (e !== null) return e;
    } catch (e) {
      return e instanceof Error ? e : new Error(String(e));
    }
  }
  return null;
}

interface PreparedWrites {
  /** The catalog after this commit (the input one if it changed no table or index). */
  catalog: Catalog;
  documents: DocumentWrite[];
  indexes: IndexWrite[];
  keys: WrittenKey[];
  cacheUpdates: Array<{ id: string; ts: bigint; doc: Document | null; size: number }>;
}

/**
 * Turns a validated transaction into the rows its commit at `ts` appends:
 * document versions, index entries for every key that appeared or
 * disappeared, and the written keys for the commit log. Catalog changes apply
 * first, so the commit's own writes maintain the indexes it creates.
 */
function prepareWrites(tx: Transaction, catalog: Catalog, ts: bigint): PreparedWrites {
  const out: PreparedWrites = { catalog, documents: [], indexes: [], keys: [], cacheUpdates: [] };
  if (tx.catalogWrites > 0) {
    const changes: Array<{ tableNumber: number; id: string; doc: Document | null; ts: bigint }> =
      [];
    for (const w of tx.writes.values()) {
      if (w.tableNumber === TABLES_TABLE || w.tableNumber === INDEX_TABLE) {
        changes.push({ tableNumber: w.tableNumber, id: w.id, doc: w.current, ts });
      }
    }
    out.catalog = catalog.withChanges(changes);
  }
  for (const w of tx.writes.values()) {
    if (w.original === null && w.current === null) continue;
    out.documents.push({
      tableNumber: w.tableNumber,
      id: w.idKey,
      ts,
      value: w.current === null ? null : stringifyValue(w.current),
    });
    out.cacheUpdates.push({ id: w.id, ts, doc: w.current, size: w.size });
    const tableNumber = w.tableNumber;
    for (const index of out.catalog.indexes(tableNumber)) {
      const indexNumber = index.number;
      if (index.kind === "by_id") {
        out.keys.push({ indexNumber, tableNumber, key: w.idKey });
        continue;
      }
      const oldKey = w.original === null ? null : indexKey(index, w.original);
      const newKey = w.current === null ? null : indexKey(index, w.current);
      if (oldKey !== null && newKey !== null && oldKey.equals(newKey)) {
        // The entry stays; readers of it still see new content, so it is a written key.
        out.keys.push({ indexNumber, tableNumber, key: newKey });
        continue;
      }
      if (oldKey !== null) {
        out.indexes.push({ indexNumber, key: oldKey, ts, docId: null });
        out.keys.push({ indexNumber, tableNumber, key: oldKey });
      }
      if (newKey !== null) {
        out.indexes.push({ indexNumber, key: newKey, ts, docId: w.idKey });
        out.keys.push({ indexNumber, tableNumber, key: newKey });
      }
    }
  }
  return out;
}

/**
 * Memory a cached document takes, estimated from its Convex size (or JSON
 * length): parsed objects cost a few times their serialised size.
 */
function cachedSize(serialized: number): number {
  return 3 * serialized + 128;
}

/** The catalog at a timestamp, read from the `_tables` and `_index` system tables. */
async function loadCatalog(persistence: Persistence, ts: bigint): Promise<Catalog> {
  const changes: Array<{ tableNumber: number; id: string; doc: Document; ts: bigint }> = [];
  for (const tableNumber of [TABLES_TABLE, INDEX_TABLE]) {
    let range: KeyRange = { start: Buffer.alloc(0), end: null };
    for (;;) {
      const rows = await persistence.scanDocuments(tableNumber, range, ts, "asc", 1000);
      for (const r of rows) {
        const doc = parseStoredDocument(r.value);
        changes.push({ tableNumber, id: doc._id, doc, ts: r.ts });
      }
      if (rows.length < 1000) break;
      range = { start: keySuccessor(rows[rows.length - 1]!.id), end: null };
    }
  }
  return Catalog.builtin().withChanges(changes);
}

function tellListeners(
  listeners: Set<(commits: readonly CommitRecord[]) => void>,
  commits: readonly CommitRecord[],
): void {
  for (const listener of listeners) {
    try {
      listener(commits);
    } catch {
      // A listener's failure is its own: the commits stand.
    }
  }
}
