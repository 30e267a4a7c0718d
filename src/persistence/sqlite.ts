/**
 * The embedded default: one SQLite file in WAL mode, through better-sqlite3.
 * A write commits its SQLite transaction on the calling thread and then
 * syncs the WAL on libuv's thread pool (`fdatasync`) before it resolves:
 * durable as `synchronous=FULL`, without holding the event loop for the
 * disk. See README.md for the on-disk format and why durability holds.
 */
import { closeSync, existsSync, fdatasync, mkdirSync, openSync, readSync } from "node:fs";
import { endianness } from "node:os";
import { dirname } from "node:path";
import { Worker } from "node:worker_threads";
import Sqlite from "better-sqlite3";
import { keySuccessor } from "../values/index.js";
import { syncDirectory } from "./fileStore.js";
import type {
  GarbageWork,
  IndexEntry,
  IndexWrite,
  KeyRange,
  LogEntry,
  MutationAnswer,
  Order,
  Persistence,
  PersistenceMetadata,
  StoredDocument,
  WriteBatch,
} from "./types.js";

export const SCHEMA_VERSION = 1;

/**
 * SQLite's page cache, in KiB. Kept small because a commit can cost a walk
 * of the whole cache: when a B-tree split reorders sibling pages, SQLite
 * parks one under the lock-byte page's number (page 262,145 at 4 KiB), and
 * the end of that transaction, finding a cached page number past the end of
 * the file, truncates the cache by visiting every page in it. With 64 MiB
 * (~16,000 pages, full once the file is that large) that walk was the
 * largest single cost of a durable insert at 200,000 documents (8% of its
 * CPU). Reads of pages not in the cache go through the memory map.
 */
export const DEFAULT_CACHE_KIB = 8 * 1024;

/**
 * Frames in the WAL at which the checkpointer is asked to copy it (SQLite's
 * own default for checkpointing in the commit).
 */
export const CHECKPOINT_FRAMES = 1000;

/**
 * Frames at which this connection checkpoints itself, blocking, as SQLite
 * does: reached only when the checkpointer cannot keep up (a writer that
 * never pauses), it keeps the WAL bounded.
 */
export const BACKSTOP_FRAMES = 4 * CHECKPOINT_FRAMES;

/** How long the writer must pause before a checkpoint that could not copy the whole WAL is retried. */
const CHECKPOINT_RETRY_MS = 50;

/** The WAL index is in the machine's byte order. */
const LITTLE_ENDIAN = endianness() === "LE";

/** How long close() waits for the checkpointer thread to finish before ending it. */
const CHECKPOINTER_CLOSE_MS = 30_000;

export interface SqliteOptions {
  /** Path of the database file; its directory is created if missing. `:memory:` for tests of non-durable behaviour. */
  path: string;
  /** SQLite page cache, in KiB (default `DEFAULT_CACHE_KIB`, 8 MiB). */
  cacheKiB?: number;
  /** Bytes of the file to memory-map for reads (default 2 GiB of address space; 0 turns it off). */
  mmapBytes?: number;
  /** How the WAL is synced (tests observe it; default `fs.fdatasync` on the thread pool). */
  syncFile?: (fd: number) => Promise<void>;
  /** How the WAL's directory is synced after the WAL's first sync (tests observe it; default fsync). */
  syncDirectory?: (dir: string) => Promise<void>;
  /** WAL frames that ask for a checkpoint (default `CHECKPOINT_FRAMES`; tests lower it). */
  checkpointFrames?: number;
  /** WAL frames at which this connection checkpoints itself (default `BACKSTOP_FRAMES`). */
  backstopFrames?: number;
  /** The checkpointer thread's module (tests pass ones that fail or never finish). */
  checkpointerModule?: URL;
  /**
   * Starts the checkpointer thread as the store opens instead of at the
   * first checkpoint (default false). A server wants it: the thread's start
   * (~70 ms of CPU) then happens before it serves, not in the middle of a
   * burst of writes, where it competed with them for the CPU.
   */
  checkpointerAtOpen?: boolean;
  /**
   * How long opening waits for another process to let go of the file before
   * it is refused (default 5 s: a server restarted in place may open it
   * while the old one is still exiting).
   */
  busyTimeoutMs?: number;
}

const fdatasyncAsync = (fd: number) =>
  new Promise<void>((resolve, reject) => fdatasync(fd, (e) => (e ? reject(e) : resolve())));

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS documents (
  table_id INTEGER NOT NULL,
  id BLOB NOT NULL,
  ts INTEGER NOT NULL,
  value TEXT,
  PRIMARY KEY (table_id, id, ts)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS documents_by_ts ON documents (ts);

CREATE TABLE IF NOT EXISTS index_entries (
  index_id INTEGER NOT NULL,
  key BLOB NOT NULL,
  ts INTEGER NOT NULL,
  doc_id BLOB,
  PRIMARY KEY (index_id, key, ts)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS mutation_answers (
  client TEXT NOT NULL,
  request INTEGER NOT NULL,
  ts INTEGER NOT NULL,
  answer TEXT NOT NULL,
  PRIMARY KEY (client, request)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS mutation_answers_by_ts ON mutation_answers (ts);
`;

type Row = unknown[];

/**
 * Statements for one scan shape: a page of rows (both directions, with and
 * without an end bound, at most `PAGE_ROWS[size]` rows: a bound `LIMIT ?`
 * makes SQLite take twice as long for a short scan, so each page size has
 * its own statement), and the latest version of one key.
 */
interface ScanStatements {
  page(order: Order, bounded: boolean, size: number): Sqlite.Statement;
  latest: Sqlite.Statement;
}

/** Page sizes of a scan, in rows: the smallest that fits the limit plus a few versions. */
const PAGE_ROWS = [16, 64, 256, 1024];

export class SqlitePersistence implements Persistence {
  private readonly db: Sqlite.Database;
  /** The lock that makes this process the file's only server (null for `:memory:`). */
  private readonly lock: Sqlite.Database | null;
  private readonly path: string;
  private readonly busyTimeoutMs: number;
  private readonly checkpointFrames: number;
  private readonly backstopFrames: number;
  private readonly checkpointerModule: URL;
  /** The WAL index (`-shm`), read for the WAL's frame count (null until the first write). */
  private shmFd: number | null = null;
  private readonly shmHeader = Buffer.alloc(20);
  /** The WAL's frames when the checkpointer was last asked. */
  private framesAtRequest = 0;
  private lastWriteAt = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  /** The checkpointer thread, started at the first checkpoint request. */
  private checkpointer: Worker | null = null;
  /** Resolves when the checkpointer thread has exited (set when it starts). */
  private checkpointerExit: Promise<void> = Promise.resolve();
  /** A checkpoint request is out (at most one at a time). */
  private checkpointing = false;
  private checkpointerFailed: string | null = null;
  /** Checkpoints the checkpointer reported: the whole WAL copied, or not. */
  private readonly checkpoints = { background: 0, incomplete: 0 };
  private readonly stmts;
  private readonly docScans: ScanStatements;
  private readonly indexScans: ScanStatements;
  private readonly writeBatch: (batch: WriteBatch) => void;
  private readonly collect: (work: GarbageWork) => void;
  private readonly backfill: (entries: IndexWrite[]) => void;
  private closed = false;
  /** The WAL file, opened on the first sync (null: not yet, or an in-memory store). */
  private walFd: number | null = null;
  private readonly walPath: string | null;
  private readonly syncFile: (fd: number) => Promise<void>;
  private readonly syncDirectory: (dir: string) => Promise<void>;
  /** The WAL sync under way, and the one that starts after it (see `syncWal`). */
  private syncing: Promise<void> | null = null;
  private nextSync: Promise<void> | null = null;

  constructor(options: SqliteOptions) {
    if (options.path !== ":memory:") mkdirSync(dirname(options.path), { recursive: true });
    this.walPath = options.path === ":memory:" ? null : `${options.path}-wal`;
    this.syncFile = options.syncFile ?? fdatasyncAsync;
    this.syncDirectory = options.syncDirectory ?? syncDirectory;
    this.path = options.path;
    this.busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    this.checkpointFrames = options.checkpointFrames ?? CHECKPOINT_FRAMES;
    this.backstopFrames = options.backstopFrames ?? BACKSTOP_FRAMES;
    this.checkpointerModule =
      options.checkpointerModule ?? new URL("./checkpointer.mjs", import.meta.url);
    // This process owns the file (README.md, "One process per file"): a
    // second one opening it is refused instead of validating commits against
    // a commit log of its own.
    this.lock = options.path === ":memory:" ? null : takeLock(options.path, this.busyTimeoutMs);
    let db: Sqlite.Database;
    try {
      db = new Sqlite(options.path, { timeout: this.busyTimeoutMs });
    } catch (e) {
      this.lock?.close();
      throw e;
    }
    this.db = db;
    try {
      const mode = db.pragma("journal_mode = WAL", { simple: true });
      if (options.path !== ":memory:" && mode !== "wal") {
        throw new Error(
          `SQLite refused WAL mode on ${options.path} (got ${String(mode)}); Tessera needs it`,
        );
      }
      // Commits write the WAL without syncing it; `write()` syncs it before
      // it resolves (`syncWal`). NORMAL still syncs the WAL header when the
      // WAL restarts, and the checkpoints sync the WAL and the database.
      // Checkpoints are the checkpointer thread's; this connection's own
      // (SQLite's, in the commit) are a backstop (see README, "Checkpoints").
      db.pragma("synchronous = NORMAL");
      db.pragma(`wal_autocheckpoint = ${options.path === ":memory:" ? 1000 : this.backstopFrames}`);
      db.pragma(`cache_size = ${-(options.cacheKiB ?? DEFAULT_CACHE_KIB)}`);
      db.pragma(`mmap_size = ${options.mmapBytes ?? 2 ** 31}`);
      db.pragma("temp_store = MEMORY");
      db.exec(SCHEMA);
      this.checkSchemaVersion();
    } catch (e) {
      db.close();
      this.lock?.close();
      throw e;
    }

    const prep = (sql: string) => db.prepare(sql).safeIntegers(true);
    this.stmts = {
      begin: db.prepare("BEGIN"),
      commit: db.prepare("COMMIT"),
      getMeta: prep("SELECT value FROM meta WHERE key = ?").pluck(),
      setMeta: prep(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      ),
      insertDocument: prep("INSERT INTO documents (table_id, id, ts, value) VALUES (?, ?, ?, ?)"),
      insertIndex: prep(
        "INSERT INTO index_entries (index_id, key, ts, doc_id) VALUES (?, ?, ?, ?)",
      ),
      // Only the value: turning the version timestamp into a BigInt costs more than the lookup saves.
      getDocument: prep(
        "SELECT value FROM documents WHERE table_id = ? AND id = ? AND ts <= ? ORDER BY ts DESC LIMIT 1",
      ).pluck(),
      readLog: prep(
        "SELECT table_id, id, ts, value FROM documents WHERE ts > ? AND ts <= ? ORDER BY ts LIMIT ?",
      ).raw(true),
      readLogAt: prep("SELECT table_id, id, ts, value FROM documents WHERE ts = ?").raw(true),
      gcDocumentBefore: prep("DELETE FROM documents WHERE table_id = ? AND id = ? AND ts < ?"),
      gcDocumentThrough: prep("DELETE FROM documents WHERE table_id = ? AND id = ? AND ts <= ?"),
      gcIndexBefore: prep("DELETE FROM index_entries WHERE index_id = ? AND key = ? AND ts < ?"),
      gcIndexThrough: prep("DELETE FROM index_entries WHERE index_id = ? AND key = ? AND ts <= ?"),
      // A client may reuse a request id once its earlier answer is forgotten.
      insertAnswer: prep(
        "INSERT OR REPLACE INTO mutation_answers (client, request, ts, answer) VALUES (?, ?, ?, ?)",
      ),
      getAnswer: prep(
        "SELECT ts, answer FROM mutation_answers WHERE client = ? AND request = ?",
      ).raw(true),
      forgetAnswers: prep(
        "DELETE FROM mutation_answers WHERE (client, request) IN (SELECT client, request FROM mutation_answers WHERE ts < ? ORDER BY ts LIMIT ?)",
      ),
      dropIndex: prep(
        "DELETE FROM index_entries WHERE index_id = ? AND key IN (SELECT key FROM index_entries WHERE index_id = ? LIMIT ?)",
      ),
    };
    const scans = (
      columns: string,
      table: string,
      group: string,
      keyCol: string,
    ): ScanStatements => {
      const head = `SELECT ${columns} FROM ${table} WHERE ${group} = ? AND ${keyCol} >= ?`;
      // Indexed [asc, desc][open, bounded][size]: prepared once, looked up per page.
      const pages = ["ASC", "DESC"].map((dir) =>
        ["", ` AND ${keyCol} < ?`].map((bound) =>
          PAGE_ROWS.map((rows) =>
            prep(
              `${head}${bound} AND ts <= ? ORDER BY ${keyCol} ${dir}, ts ${dir} LIMIT ${rows}`,
            ).raw(true),
          ),
        ),
      );
      return {
        page: (order, bounded, size) => pages[order === "asc" ? 0 : 1]![bounded ? 1 : 0]![size]!,
        latest: prep(
          `SELECT ${columns} FROM ${table} WHERE ${group} = ? AND ${keyCol} = ? AND ts <= ? ORDER BY ts DESC LIMIT 1`,
        ).raw(true),
      };
    };
    // Keys come back as hex text: a BLOB column becomes a Buffer made in C++
    // (~1 µs each, without Node's pool), which cost more than the SQLite scan
    // itself; a string is compared as it is and made a pooled Buffer only
    // for the rows returned.
    this.docScans = scans("hex(id), ts, value", "documents", "table_id", "id");
    this.indexScans = scans(
      "hex(key), ts, CASE WHEN doc_id IS NULL THEN NULL ELSE hex(doc_id) END",
      "index_entries",
      "index_id",
      "key",
    );

    const s = this.stmts;
    const insertDocuments = multiRowInsert(
      db,
      "INSERT INTO documents (table_id, id, ts, value) VALUES",
      4,
    );
    const insertIndexes = multiRowInsert(
      db,
      "INSERT INTO index_entries (index_id, key, ts, doc_id) VALUES",
      4,
    );
    this.writeBatch = db.transaction((batch: WriteBatch) => {
      insertDocuments(batch.documents, (d, out) => out.push(d.tableNumber, d.id, d.ts, d.value));
      insertIndexes(batch.indexes, (e, out) => out.push(e.indexNumber, e.key, e.ts, e.docId));
      if (batch.maxTs !== undefined) s.setMeta.run("max_ts", batch.maxTs);
      if (batch.answers !== undefined) {
        for (const a of batch.answers) s.insertAnswer.run(a.client, a.requestId, a.ts, a.text);
      }
    });
    const insertBackfill = multiRowInsert(
      db,
      "INSERT OR IGNORE INTO index_entries (index_id, key, ts, doc_id) VALUES",
      4,
    );
    this.backfill = db.transaction((entries: IndexWrite[]) => {
      insertBackfill(entries, (e, out) => out.push(e.indexNumber, e.key, e.ts, e.docId));
    });
    this.collect = db.transaction((work: GarbageWork) => {
      for (const d of work.documents) {
        (d.deleted ? s.gcDocumentThrough : s.gcDocumentBefore).run(d.tableNumber, d.id, d.ts);
      }
      for (const k of work.indexKeys) {
        (k.removed ? s.gcIndexThrough : s.gcIndexBefore).run(k.indexNumber, k.key, k.ts);
      }
      s.setMeta.run("retained_from_ts", work.retainedFromTs);
    });
    if (options.checkpointerAtOpen === true && this.lock !== null) this.startCheckpointer();
  }

  /**
   * Opens the read transaction that reads share until the next write. In a
   * WAL shared with the checkpointer every transaction takes and releases
   * file locks on the -shm file (two system calls), which doubled the cost
   * of a point read; this connection is the file's only writer and ends the
   * transaction before each write, so one held open always sees every
   * commit made so far, and a checkpoint can copy the whole WAL past it.
   * (Whether one is open is asked of the connection, the one source of truth.)
   */
  private read(): void {
    this.ensureOpen();
    if (!this.db.inTransaction) this.stmts.begin.run();
  }

  /** Ends the shared read transaction: a write must commit on its own. */
  private endRead(): void {
    if (this.db.inTransaction) this.stmts.commit.run();
  }

  /**
   * Applies a write: outside the shared read transaction (else it would
   * commit only with it, after its sync), then counted for the checkpointer.
   */
  private applyWrite<T>(write: () => T): T {
    this.ensureOpen();
    this.endRead();
    const result = write();
    this.wrote();
    return result;
  }

  /**
   * After a write: asks the checkpointer to copy the WAL once it holds
   * `checkpointFrames` frames. The count is the WAL index header's `mxFrame`
   * (a u32 in the machine's byte order at byte 16 of the `-shm` file, in
   * SQLite's documented format), read with one `pread`; a torn read only
   * moves a request.
   */
  private wrote(): void {
    if (this.lock === null || this.checkpointerFailed !== null) return;
    this.lastWriteAt = performance.now();
    // Never throws: the batch is applied, and write() must not say otherwise.
    const frames = this.walFramesOrDown();
    if (frames === null) return;
    // The WAL restarted since the last request: count from its start.
    if (frames < this.framesAtRequest) this.framesAtRequest = 0;
    if (frames >= this.framesAtRequest + this.checkpointFrames) this.requestCheckpoint(frames);
  }

  /** The WAL's frame count, or null (and SQLite's checkpoints take over) if the index cannot be read. */
  private walFramesOrDown(): number | null {
    try {
      return this.walFrames();
    } catch (e) {
      this.checkpointerDown(`reading the WAL index failed: ${e instanceof Error ? e.message : e}`);
      return null;
    }
  }

  /**
   * Asks for a checkpoint once no write came for `CHECKPOINT_RETRY_MS`. Not
   * sooner: against a writer that never pauses each round copies a few
   * frames and syncs twice, and a checkpoint per 1,000 new frames (with
   * this connection's backstop) is what keeps up with it.
   */
  private retryWhenIdle(): void {
    if (this.retryTimer !== null) return;
    const check = () => {
      const idle = performance.now() - this.lastWriteAt;
      if (idle < CHECKPOINT_RETRY_MS) {
        this.retryTimer = setTimeout(check, CHECKPOINT_RETRY_MS - idle);
        this.retryTimer.unref();
        return;
      }
      this.retryTimer = null;
      const frames = this.walFramesOrDown();
      if (frames !== null) this.requestCheckpoint(frames);
    };
    this.retryTimer = setTimeout(check, CHECKPOINT_RETRY_MS);
    this.retryTimer.unref();
  }

  private walFrames(): number {
    if (this.shmFd === null) this.shmFd = openSync(`${this.path}-shm`, "r");
    readSync(this.shmFd, this.shmHeader, 0, 20, 0);
    return LITTLE_ENDIAN ? this.shmHeader.readUInt32LE(16) : this.shmHeader.readUInt32BE(16);
  }

  private requestCheckpoint(frames: number): void {
    if (this.checkpointing || this.checkpointerFailed !== null || this.closed) return;
    this.framesAtRequest = frames;
    this.checkpointing = true;
    this.startCheckpointer().postMessage("checkpoint");
  }

  private startCheckpointer(): Worker {
    if (this.checkpointer !== null) return this.checkpointer;
    const worker = new Worker(this.checkpointerModule, {
      workerData: { path: this.path, busyTimeoutMs: this.busyTimeoutMs },
      // None of the process's flags: a worker inherits them by default, and
      // with them the `--import` of the TypeScript hooks, which this plain
      // JavaScript module does not need; the hooks cost the worker's start
      // ~240 ms of CPU (a second thread for the hooks, esbuild loaded)
      // instead of ~70, taken in the middle of serving at the first checkpoint.
      execArgv: [],
    });
    // Never what keeps a process alive: close() ends it.
    worker.unref();
    worker.on("message", (m: CheckpointerMessage) => {
      this.checkpointing = false;
      if ("failed" in m) return this.checkpointerDown(m.failed);
      if (this.closed) return;
      // Frames written while it copied are not copied yet either.
      const frames = this.walFramesOrDown();
      if (frames === null) return;
      if (m.done && frames <= m.log) {
        this.checkpoints.background++;
        // The WAL is all in the database now: reads begun from here on skip it.
        this.endRead();
      } else {
        // Not all copied (the writer kept appending): go on once the writer
        // pauses, so that the WAL is all copied and can restart.
        this.checkpoints.incomplete++;
        this.retryWhenIdle();
      }
    });
    worker.on("error", (e) => this.checkpointerDown(e.message));
    this.checkpointerExit = new Promise((resolve) => worker.once("exit", () => resolve()));
    this.checkpointer = worker;
    return worker;
  }

  /**
   * The checkpointer failed: SQLite's own checkpoints on this connection
   * take over (at its default of 1,000 pages), so the WAL stays bounded.
   */
  private checkpointerDown(reason: string): void {
    if (this.checkpointerFailed !== null || this.closed) return;
    this.checkpointerFailed = reason;
    this.checkpointing = false;
    console.error(
      `tessera: the WAL checkpointer of ${this.path} failed (${reason}); checkpointing on the main thread from now on`,
    );
    this.db.pragma("wal_autocheckpoint = 1000");
    void this.checkpointer?.terminate();
  }

  /**
   * Checkpoints so far: `background` ones the checkpointer completed (the
   * whole WAL copied) and `incomplete` ones it did not; `failed` says why
   * the checkpointer stopped.
   */
  checkpointStats(): { background: number; incomplete: number; failed: string | null } {
    return { ...this.checkpoints, failed: this.checkpointerFailed };
  }

  private checkSchemaVersion(): void {
    const row = this.db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get() as
      | { value: number }
      | undefined;
    if (row === undefined) {
      this.db
        .prepare("INSERT INTO meta (key, value) VALUES ('schema_version', ?)")
        .run(SCHEMA_VERSION);
    } else if (row.value !== SCHEMA_VERSION) {
      throw new Error(
        `This data directory was written with storage format ${row.value}; this Tessera reads format ${SCHEMA_VERSION}`,
      );
    }
  }

  /**
   * Rows stored in `documents` or `index_entries` (one index's, with
   * `indexNumber`), every version and tombstone included: for diagnostics and
   * tests of garbage collection, since no other connection may open the file.
   */
  countRows(table: "documents" | "index_entries", indexNumber?: number): number {
    this.read();
    if (table === "documents" && indexNumber === undefined) {
      return Number(this.db.prepare("SELECT count(*) FROM documents").pluck().get());
    }
    if (table !== "index_entries") throw new Error(`countRows: no index number for ${table}`);
    const stmt =
      indexNumber === undefined
        ? this.db.prepare("SELECT count(*) FROM index_entries")
        : this.db.prepare("SELECT count(*) FROM index_entries WHERE index_id = ?");
    return Number(indexNumber === undefined ? stmt.pluck().get() : stmt.pluck().get(indexNumber));
  }

  /** The durability settings in force on this connection (for diagnostics and tests). */
  durability(): {
    journalMode: string;
    synchronous: "OFF" | "NORMAL" | "FULL" | "EXTRA";
    /** Who syncs the WAL at each write: SQLite inline, or `write()` off the event loop. */
    walSyncAtWrite: "sqlite" | "thread pool";
    /** WAL frames at which this connection checkpoints itself (the backstop behind the checkpointer thread). */
    walAutocheckpoint: number;
  } {
    const levels = ["OFF", "NORMAL", "FULL", "EXTRA"] as const;
    const synchronous = levels[Number(this.db.pragma("synchronous", { simple: true }))]!;
    return {
      journalMode: String(this.db.pragma("journal_mode", { simple: true })),
      synchronous,
      walSyncAtWrite: synchronous === "NORMAL" ? "thread pool" : "sqlite",
      walAutocheckpoint: Number(this.db.pragma("wal_autocheckpoint", { simple: true })),
    };
  }

  /**
   * Resolves once everything committed to the WAL before the call is on
   * stable storage. The WAL only grows between checkpoints and recovery
   * keeps its longest valid prefix of commits, so one sync makes every
   * earlier commit durable: a sync under way serves callers that came
   * before it started; later ones share the next sync, which starts when it
   * ends (at most one more in all, however many wait).
   */
  private syncWal(): Promise<void> {
    if (this.walPath === null) return Promise.resolve();
    if (this.syncing === null) {
      const run = async () => {
        if (this.walFd !== null) return this.syncFile(this.walFd);
        const fd = openSync(this.walPath!, "r");
        this.walFd = fd;
        await this.syncFile(fd);
        // The WAL may have just been created: its directory entry is made
        // durable too, once per open (SQLite does the same when it syncs a
        // new WAL itself, which synchronous=NORMAL leaves to this method).
        await this.syncDirectory(dirname(this.walPath!));
      };
      const sync = run().finally(() => {
        if (this.syncing === sync) this.syncing = null;
      });
      this.syncing = sync;
      return sync;
    }
    this.nextSync ??= this.syncing
      .catch(() => {})
      .then(() => {
        this.nextSync = null;
        // A sync begun since the last one ended started after these callers' commits too.
        return this.syncing ?? this.syncWal();
      });
    return this.nextSync;
  }

  private ensureOpen(): void {
    if (this.closed) throw new Error("persistence is closed");
  }

  async load(): Promise<PersistenceMetadata> {
    this.ensureOpen();
    // A process that died may have left WAL frames it never synced: the
    // kernel still holds them and they read back as committed, so they are
    // made durable before anything read from them is acknowledged (a
    // mutation's stored answer, say).
    if (this.walPath !== null && existsSync(this.walPath)) await this.syncWal();
    return {
      maxTs: (this.stmts.getMeta.get("max_ts") as bigint | undefined) ?? 0n,
      retainedFromTs: (this.stmts.getMeta.get("retained_from_ts") as bigint | undefined) ?? 0n,
    };
  }

  write(batch: WriteBatch): Promise<void> {
    // Applied on this thread before returning (or thrown), as the contract asks.
    this.applyWrite(() => this.writeBatch(batch));
    return this.syncWal();
  }

  getDocument(tableNumber: number, id: Buffer, ts: bigint): string | null {
    this.read();
    return (this.stmts.getDocument.get(tableNumber, id, ts) as string | null | undefined) ?? null;
  }

  scanDocuments(
    tableNumber: number,
    range: KeyRange,
    ts: bigint,
    order: Order,
    limit: number,
  ): StoredDocument[] {
    this.read();
    return latestPerKey(this.docScans, tableNumber, range, ts, order, limit).map((row) => ({
      id: Buffer.from(row[0] as string, "hex"),
      ts: row[1] as bigint,
      value: row[2] as string,
    }));
  }

  scanIndex(
    indexNumber: number,
    range: KeyRange,
    ts: bigint,
    order: Order,
    limit: number,
  ): IndexEntry[] {
    this.read();
    return latestPerKey(this.indexScans, indexNumber, range, ts, order, limit).map((row) => ({
      key: Buffer.from(row[0] as string, "hex"),
      docId: Buffer.from(row[2] as string, "hex"),
    }));
  }

  async readLog(afterTs: bigint, untilTs: bigint, limit: number): Promise<LogEntry[]> {
    this.read();
    let rows = this.stmts.readLog.all(afterTs, untilTs, limit) as Row[];
    if (rows.length === limit && limit > 0) {
      const lastTs = rows[rows.length - 1]![2] as bigint;
      rows = rows
        .filter((r) => (r[2] as bigint) !== lastTs)
        .concat(this.stmts.readLogAt.all(lastTs) as Row[]);
    }
    return rows.map((r) => ({
      tableNumber: Number(r[0]),
      id: r[1] as Buffer,
      ts: r[2] as bigint,
      value: r[3] as string | null,
    }));
  }

  async writeBackfill(entries: IndexWrite[]): Promise<void> {
    this.applyWrite(() => this.backfill(entries));
    await this.syncWal();
  }

  async collectGarbage(work: GarbageWork): Promise<void> {
    this.applyWrite(() => this.collect(work));
    await this.syncWal();
  }

  mutationAnswer(client: string, requestId: number): MutationAnswer | null {
    this.read();
    const row = this.stmts.getAnswer.get(client, requestId) as [bigint, string] | undefined;
    return row === undefined ? null : { client, requestId, ts: row[0], text: row[1] };
  }

  async forgetMutationAnswers(beforeTs: bigint, limit: number): Promise<number> {
    const forgotten = this.applyWrite(() => this.stmts.forgetAnswers.run(beforeTs, limit).changes);
    // Nothing acknowledged depends on this delete: no sync to wait for.
    return forgotten;
  }

  async dropIndexEntries(indexNumber: number, limit: number): Promise<number> {
    const dropped = this.applyWrite(
      () => this.stmts.dropIndex.run(indexNumber, indexNumber, limit).changes,
    );
    await this.syncWal();
    return dropped;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Writes still syncing finish first (their callers are waiting on them).
    await Promise.allSettled([this.syncing, this.nextSync]);
    // A checkpoint under way finishes first; then the thread closes its
    // connection and exits. Referenced again, it keeps the process alive
    // until then: a process waiting on nothing else would exit mid-close.
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    const checkpointer = this.checkpointer;
    if (checkpointer !== null) {
      checkpointer.ref();
      checkpointer.postMessage("close");
      // One that has not exited after CHECKPOINTER_CLOSE_MS is ended (a
      // checkpoint cut short leaves the file consistent: SQLite redoes it).
      let timer: NodeJS.Timeout | undefined;
      const stuck = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, CHECKPOINTER_CLOSE_MS);
      });
      await Promise.race([this.checkpointerExit, stuck]);
      clearTimeout(timer);
      await checkpointer.terminate();
    }
    if (this.walFd !== null) closeSync(this.walFd);
    if (this.shmFd !== null) closeSync(this.shmFd);
    this.endRead();
    this.db.close();
    this.lock?.close();
  }
}

type CheckpointerMessage = { done: boolean; log: number; copied: number } | { failed: string };

/**
 * Takes the lock that makes this process the store's only server: an
 * exclusive lock on a small SQLite file beside it (`<path>-lock`), held until
 * close. The store's own file cannot carry it: the checkpointer opens it too.
 */
function takeLock(path: string, busyTimeoutMs: number): Sqlite.Database {
  const lock = new Sqlite(`${path}-lock`, { timeout: busyTimeoutMs });
  try {
    // Exclusive locking mode keeps the lock the first write takes.
    lock.pragma("locking_mode = EXCLUSIVE");
    lock.pragma("user_version = 1");
    return lock;
  } catch (e) {
    lock.close();
    if ((e as { code?: unknown }).code === "SQLITE_BUSY") {
      throw new Error(
        `${path} is in use by another process (it holds the store's lock): one Tessera server per data directory`,
        { cause: e },
      );
    }
    throw e;
  }
}

/**
 * Inserts rows with statements of several rows each: one statement per row
 * costs about a third more per row in better-sqlite3 (measured: 84,000 vs
 * 119,000 synced rows/s in batches of 64).
 */
function multiRowInsert(
  db: Sqlite.Database,
  head: string,
  columns: number,
): <T>(rows: readonly T[], bind: (row: T, out: unknown[]) => void) => void {
  const sizes = [32, 8, 1];
  const row = `(${new Array(columns).fill("?").join(", ")})`;
  const stmts = sizes.map((n) => db.prepare(`${head} ${new Array(n).fill(row).join(", ")}`));
  return (rows, bind) => {
    let i = 0;
    for (let k = 0; k < sizes.length; k++) {
      const n = sizes[k]!;
      while (rows.length - i >= n) {
        const args: unknown[] = [];
        for (let j = i; j < i + n; j++) bind(rows[j]!, args);
        stmts[k]!.run(args);
        i += n;
      }
    }
  };
}

/**
 * The latest version at or before `ts` of each key in `range` that is live
 * there, at most `limit` of them, in key order (keys as hex text). Rows come
 * in pages (`all()` costs about a third less per row than `iterate()`), in
 * key order with timestamps in the same direction: the latest version of a
 * key is the first row of its run when descending and the last when
 * ascending, so an ascending page's last run may continue in the next page
 * and is read again there — or, when one key's versions fill a whole page,
 * its latest version is looked up directly.
 */
function latestPerKey(
  stmts: ScanStatements,
  group: number,
  range: KeyRange,
  ts: bigint,
  order: Order,
  limit: number,
): Row[] {
  const out: Row[] = [];
  if (limit <= 0) return out;
  let { start, end } = range;
  let size = PAGE_ROWS.findIndex((n) => n >= limit + 8);
  if (size < 0) size = PAGE_ROWS.length - 1;
  const pageRows = PAGE_ROWS[size]!;
  const keep = (row: Row) => {
    if (row[2] !== null) out.push(row);
    return out.length >= limit;
  };
  for (;;) {
    const stmt = stmts.page(order, end !== null, size);
    const rows = (
      end === null ? stmt.all(group, start, ts) : stmt.all(group, start, end, ts)
    ) as Row[];
    const complete = rows.length < pageRows;
    if (order === "desc") {
      let prev: string | null = null;
      for (const row of rows) {
        if (row[0] === prev) continue;
        prev = row[0] as string;
        if (keep(row)) return out;
      }
      if (complete || prev === null) return out;
      // Every key of the page had its latest version there: go on below the last.
      end = Buffer.from(prev, "hex");
      continue;
    }
    const partial = complete ? null : (rows[rows.length - 1]![0] as string);
    if (partial !== null && rows[0]![0] === partial) {
      // One key's versions fill the page: take its latest directly and go on past it.
      const key = Buffer.from(partial, "hex");
      const latest = stmts.latest.get(group, key, ts) as Row;
      if (keep(latest)) return out;
      start = keySuccessor(key);
      continue;
    }
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]!;
      if (row[0] === partial) break;
      if (i + 1 < rows.length && rows[i + 1]![0] === row[0]) continue;
      if (keep(row)) return out;
    }
    if (partial === null) return out;
    start = Buffer.from(partial, "hex");
  }
}
