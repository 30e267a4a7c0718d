/**
 * A transaction: a snapshot at its begin timestamp, a read set that records
 * exactly the key ranges it observed, and a write set of whole documents.
 * Reads see the transaction's own writes. Nothing is visible to others until
 * `Database.commit` validates and persists it.
 */
import type { KeyRange } from "../persistence/index.js";
import {
  andThen,
  type ConvexObject,
  checkDocumentFields,
  checkDocumentSize,
  checkTopLevelFieldName,
  checkValue,
  compareKeys,
  type Document,
  decodeDocumentId,
  encodeKey,
  fieldPath,
  isPlainObject,
  keySuccessor,
  LIMITS,
  type MaybePromise,
  newDocumentId,
  rethrowWithin,
  sortKeys,
  tuplePrefixEnd,
  ValueError,
  valueSize,
} from "../values/index.js";
import {
  type Catalog,
  FIRST_USER_INDEX_NUMBER,
  INDEX_BY_NUMBER,
  INDEX_BY_TABLE,
  INDEX_TABLE,
  type IndexInfo,
  type IndexKind,
  indexDocumentFields,
  sameFields,
  TABLES_BY_NAME,
  TABLES_BY_NUMBER,
  TABLES_TABLE,
  type TableInfo,
  tableDocumentFields,
} from "./catalog.js";
import { deepFreeze } from "./documentCache.js";
import { DatabaseError, TransactionLimitError } from "./errors.js";
import { idKey, keyRangeOf, type RangeExpression } from "./indexKeys.js";
import type { TransactionLimits } from "./limits.js";
import { ReadSet } from "./readSet.js";
import { IndexScan, type ScanHost } from "./scan.js";

/** What a transaction needs from the database that owns it. */
export interface TransactionHost extends ScanHost {
  readonly limits: TransactionLimits;
  /** Milliseconds since the epoch (with a fraction) for `_creationTime`. */
  creationTime(): number;
}

export interface PendingWrite {
  tableNumber: number;
  id: string;
  idKey: Buffer;
  /** The version at the snapshot (null for documents this transaction inserted). */
  original: Document | null;
  /** The value this transaction leaves (null = deleted). */
  current: Document | null;
  size: number;
}

export interface WriteOptions {
  /** Allow writing tables whose names start with `_` (for system code, never for user input). */
  system?: boolean;
  /**
   * `insert` with `system`: the new document's ID, allocated beforehand with
   * `newDocumentId(tableNumber)` (file storage names a file after the
   * document that will record it before the document exists).
   */
  id?: string;
}

export interface TransactionCounters {
  documentsRead: number;
  bytesRead: number;
  indexRanges: number;
  documentsWritten: number;
  bytesWritten: number;
}

const TABLE_NAME = /^[A-Za-z][A-Za-z0-9_]*$/;
const SYSTEM_TABLE_NAME = /^_[A-Za-z][A-Za-z0-9_]*$/;
const INDEX_NAME = /^[A-Za-z][A-Za-z0-9_]*$/;
const MAX_NAME_LENGTH = 64;
const MAX_INDEXES_PER_TABLE = 32;
const MAX_FIELDS_PER_INDEX = 16;
const RESERVED_INDEX_NAMES = new Set(["by_id", "by_creation_time"]);

const MAX_ID_LENGTH = 37;

/** The size of a document's fields plus `_id` (a string of `idLength` characters) and `_creationTime`. */
function withSystemFieldsSize(fieldsSize: number, idLength: number): number {
  return fieldsSize + "_id".length + 1 + (2 + idLength) + "_creationTime".length + 1 + 9;
}

export function checkTableName(name: unknown, system = false): asserts name is string {
  if (typeof name !== "string" || name.length === 0 || name.length > MAX_NAME_LENGTH) {
    throw new DatabaseError(
      `Invalid table name ${JSON.stringify(name)}: it must be 1 to ${MAX_NAME_LENGTH} characters`,
    );
  }
  if (system ? !SYSTEM_TABLE_NAME.test(name) : !TABLE_NAME.test(name)) {
    throw new DatabaseError(
      name.startsWith("_") && !system
        ? `Table name ${JSON.stringify(name)} starts with an underscore, which is reserved for system tables`
        : `Invalid table name ${JSON.stringify(name)}: use letters, digits and underscores, starting with a letter`,
    );
  }
}

/**
 * Narrows a scan to continue a page: `after` is the index key where a
 * previous page stopped (exclusive), `through` the key where this page must
 * end (inclusive). Both are in scan order.
 */
export interface ScanBounds {
  after?: Buffer;
  through?: Buffer;
}

function narrow(range: KeyRange, order: "asc" | "desc", bounds: ScanBounds): KeyRange {
  let { start, end } = range;
  const later = (a: Buffer, b: Buffer) => (compareKeys(a, b) > 0 ? a : b);
  const earlier = (a: Buffer, b: Buffer | null) => (b === null || compareKeys(a, b) < 0 ? a : b);
  if (order === "asc") {
    if (bounds.after) start = later(start, keySuccessor(bounds.after));
    if (bounds.through) end = earlier(keySuccessor(bounds.through), end);
  } else {
    if (bounds.after) end = earlier(bounds.after, end);
    if (bounds.through) start = later(start, bounds.through);
  }
  if (end !== null && compareKeys(start, end) > 0) end = start;
  return { start, end };
}

/** Counters of a transaction that has read and written nothing. */
function noCounts(): TransactionCounters {
  return { documentsRead: 0, bytesRead: 0, indexRanges: 0, documentsWritten: 0, bytesWritten: 0 };
}

export class Transaction {
  readonly readSet = new ReadSet();
  readonly writes = new Map<string, PendingWrite>();
  readonly counters: TransactionCounters = noCounts();
  /**
   * Called with every document a write is about to leave in a user or system
   * table (not for deletions), before it is recorded; throwing rejects the
   * write. The function runner uses it for schema validation.
   */
  checkWrite: ((tableName: string, doc: Document) => void) | null = null;
  /**
   * What `checkWrite` enforces, for commit checks that would enforce the
   * same again (the function runner puts its schema's validators here).
   */
  writesCheckedAgainst: unknown = null;
  /**
   * The user indexes as the code running in this transaction declared them
   * (table name → index name → fields). A query reads the index of its name,
   * unless these fields differ from that index's and a hidden index of that
   * name has them: while a push replaces an index with one on other fields,
   * the code of each side reads its own (see `createIndex`'s `hidden`). The
   * function runner sets it from the app's schema.
   */
  declaredIndexes: ReadonlyMap<string, ReadonlyMap<string, readonly string[]>> | null = null;
  /** How many catalog documents (`_tables`, `_index`) this transaction wrote. */
  catalogWrites = 0;
  private state: "active" | "committing" | "committed" | "aborted" = "active";
  private catalog: Catalog;

  constructor(
    private readonly host: TransactionHost,
    readonly beginTs: bigint,
    private readonly baseCatalog: Catalog,
    readonly readOnly: boolean,
    /** The documents it reads enter the document cache at once (whoever reads them next is coming). */
    readonly cacheReads = false,
  ) {
    this.catalog = baseCatalog;
  }

  /** The per-transaction limits in force. */
  get limits(): TransactionLimits {
    return this.host.limits;
  }

  get isActive(): boolean {
    return this.state === "active";
  }

  /** The catalog this transaction sees: the snapshot's plus its own changes. */
  get currentCatalog(): Catalog {
    return this.catalog;
  }

  checkActive(): void {
    if (this.state !== "active")
      throw new DatabaseError(`This transaction is already ${this.state}`);
  }

  /** @internal Called by the database when commit starts and ends. */
  markState(state: "committing" | "committed" | "aborted"): void {
    this.state = state;
  }

  abort(): void {
    if (this.state === "active") this.state = "aborted";
  }

  /**
   * Forgets everything read and written so far, as if the transaction had
   * just begun at the same snapshot: for a function execution that was
   * stopped midway and runs again from the start (its reads must not count
   * twice against the limits, its writes must not happen twice).
   */
  restart(): void {
    this.checkActive();
    this.readSet.clear();
    this.writes.clear();
    Object.assign(this.counters, noCounts());
    this.catalogWrites = 0;
    this.catalog = this.baseCatalog;
  }

  // ---- catalog lookups, recorded in the read set ---------------------------

  /** Looks a table up by name; the lookup (hit or miss) joins the read set. */
  table(name: string): TableInfo | undefined {
    const key = encodeKey([name]);
    this.readSet.addRange(TABLES_BY_NAME, key, tuplePrefixEnd(key));
    return this.catalog.table(name);
  }

  private tableByNumber(number: number): TableInfo | undefined {
    const t = this.catalog.tableByNumber(number);
    if (t === undefined) {
      const key = encodeKey([number]);
      this.readSet.addRange(TABLES_BY_NUMBER, key, tuplePrefixEnd(key));
    }
    return t;
  }

  /** Looks an index up by table and name; the lookup joins the read set. */
  index(table: TableInfo, name: string): IndexInfo | undefined {
    const key = encodeKey([table.number, name]);
    this.readSet.addRange(INDEX_BY_TABLE, key, tuplePrefixEnd(key));
    return this.catalog.index(table.number, name);
  }

  /** The hidden index of this name on exactly these fields; the lookup joins the read set. */
  hiddenIndex(tableName: string, name: string, fields: readonly string[]): IndexInfo | undefined {
    const table = this.table(tableName);
    if (table === undefined) return undefined;
    this.index(table, name);
    return this.catalog.hiddenIndex(table.number, name, fields);
  }

  /** The index a query by this name reads (see `declaredIndexes`). */
  private indexAsDeclared(table: TableInfo, name: string): IndexInfo | undefined {
    const index = this.index(table, name);
    const declared = this.declaredIndexes?.get(table.name)?.get(name);
    if (declared === undefined || (index !== undefined && sameFields(index.fields, declared)))
      return index;
    const hidden = this.catalog.hiddenIndex(table.number, name, declared);
    // Read on other fields, its range would be refused or, worse, its order differ.
    if (hidden === undefined && index !== undefined)
      throw new DatabaseError(
        `Index ${table.name}.${name} is on ${JSON.stringify(index.fields)} but this code declared it on ${JSON.stringify(declared)}: a deploy changed it`,
      );
    return hidden;
  }

  // ---- reads ---------------------------------------------------------------

  private countRange(): void {
    if (++this.counters.indexRanges > this.host.limits.maxIndexRanges) {
      throw new TransactionLimitError(
        `Too many reads in a single function execution (limit: ${this.host.limits.maxIndexRanges}): each db.get and db.query counts. Consider paginating, or doing the work in several mutations.`,
        "indexRanges",
      );
    }
  }

  /** @internal Counts a document returned by a read against the limits. */
  countDocumentRead(doc: Document, size?: number): void {
    const limits = this.host.limits;
    this.counters.bytesRead += size ?? valueSize(doc);
    if (++this.counters.documentsRead > limits.maxDocumentsRead) {
      throw new TransactionLimitError(
        `Too many documents read in a single function execution (limit: ${limits.maxDocumentsRead}). Consider using smaller limits in your queries, paginating your queries, or using indexed queries with a selective index range expression.`,
        "documentsRead",
      );
    }
    if (this.counters.bytesRead > limits.maxBytesRead) {
      throw new TransactionLimitError(
        `Too many bytes read in a single function execution (limit: ${limits.maxBytesRead} bytes). Consider using smaller limits in your queries, paginating your queries, or using indexed queries with a selective index range expression.`,
        "bytesRead",
      );
    }
  }

  /**
   * The document with this ID, or null. With `table`, the ID must belong to
   * that table (the `db.get(table, id)` form).
   */
  get(id: string, table?: string): MaybePromise<Document | null> {
    this.checkActive();
    const { tableNumber } = decodeDocumentId(id);
    if (table !== undefined) {
      const t = this.table(table);
      if (t === undefined || t.number !== tableNumber) {
        throw new DatabaseError(
          `Invalid ID ${JSON.stringify(id)} for table ${JSON.stringify(table)}: it is an ID of another table`,
        );
      }
    }
    this.countRange();
    const info = this.tableByNumber(tableNumber);
    if (info === undefined) return null;
    const key = idKey(id);
    this.readSet.addPoint(this.catalog.byIdIndex(tableNumber).number, key);
    const pending = this.writes.get(id);
    if (pending !== undefined) {
      if (pending.current !== null) this.countDocumentRead(pending.current, pending.size);
      return pending.current;
    }
    return andThen(
      this.host.readDocument(tableNumber, id, key, this.beginTs, this.cacheReads),
      (doc) => {
        if (doc !== null) this.countDocumentRead(doc);
        return doc;
      },
    );
  }

  /** The table an ID belongs to, if that table exists in this transaction's view. */
  tableOfId(id: string): TableInfo | undefined {
    return this.tableByNumber(decodeDocumentId(id).tableNumber);
  }

  /**
   * Scans an index of a table over a range (equalities on a prefix of the
   * index fields, then optional bounds on the next field), streaming
   * documents in index order. A missing table reads as empty.
   */
  query(
    tableName: string,
    indexName: string,
    range: readonly RangeExpression[] = [],
    order: "asc" | "desc" = "asc",
    bounds: ScanBounds = {},
  ): IndexScan {
    this.checkActive();
    this.countRange();
    return this.scanOf(this.queryIndex(tableName, indexName), tableName, range, order, bounds);
  }

  /**
   * `query` on the index `queryIndex` gave for this table and index name,
   * for a caller that needed it first (a paginated query's cursors carry
   * its number): the lookup and its read are not made again.
   */
  queryOn(
    index: IndexInfo | null,
    tableName: string,
    range: readonly RangeExpression[] = [],
    order: "asc" | "desc" = "asc",
    bounds: ScanBounds = {},
  ): IndexScan {
    this.checkActive();
    this.countRange();
    return this.scanOf(index, tableName, range, order, bounds);
  }

  private scanOf(
    index: IndexInfo | null,
    tableName: string,
    range: readonly RangeExpression[],
    order: "asc" | "desc",
    bounds: ScanBounds,
  ): IndexScan {
    if (index === null) return IndexScan.empty();
    return new IndexScan(
      this.host,
      this,
      // Looked up (and its read recorded) by queryIndex.
      this.catalog.tableByNumber(index.tableNumber)!,
      index,
      narrow(keyRangeOf(index, tableName, range), order, bounds),
      order,
    );
  }

  /**
   * The index `query` reads for this table and index name (see
   * `declaredIndexes`), or null when the table does not exist (a built-in
   * index of it reads as empty); refuses what `query` refuses.
   */
  queryIndex(tableName: string, indexName: string): IndexInfo | null {
    this.checkActive();
    const table = this.table(tableName);
    if (table === undefined) {
      if (!RESERVED_INDEX_NAMES.has(indexName)) {
        throw new DatabaseError(
          `Index ${tableName}.${indexName} not found: table ${JSON.stringify(tableName)} does not exist`,
        );
      }
      return null;
    }
    const index = this.indexAsDeclared(table, indexName);
    if (index === undefined) {
      throw new DatabaseError(`Index ${tableName}.${indexName} not found`);
    }
    if (index.state !== "enabled") {
      throw new DatabaseError(
        `Index ${tableName}.${indexName} is still being backfilled and cannot be queried yet`,
      );
    }
    return index;
  }

  /**
   * The number of documents in a table at the snapshot, this transaction's
   * writes included. Reads the keys of the table's `by_creation_time` index,
   * not the documents (so they do not count against the read limits), and
   * records the whole table as read.
   */
  async count(tableName: string): Promise<number> {
    this.checkActive();
    this.countRange();
    const table = this.table(tableName);
    if (table === undefined) return 0;
    const index = this.catalog.index(table.number, "by_creation_time")!;
    const own = new Set<string>();
    let count = 0;
    for (const w of this.writes.values()) {
      if (w.tableNumber !== table.number) continue;
      own.add(w.idKey.toString("latin1"));
      if (w.current !== null) count++;
    }
    let range: KeyRange = { start: Buffer.alloc(0), end: null };
    for (;;) {
      const entries = await this.host.scanIndexPage(index.number, range, this.beginTs, "asc", 1024);
      for (const e of entries) if (!own.has(e.docId.toString("latin1"))) count++;
      if (entries.length < 1024) break;
      range = { start: keySuccessor(entries[entries.length - 1]!.key), end: null };
    }
    this.readSet.addRange(index.number, Buffer.alloc(0), null);
    return count;
  }

  /**
   * Records the whole of a table as read without reading it (for values the
   * caller already holds, e.g. a cached copy of a system table): any later
   * write to the table conflicts with this transaction or invalidates its
   * subscriptions. A missing table records nothing.
   */
  recordTableRead(tableName: string): void {
    this.checkActive();
    const table = this.table(tableName);
    if (table === undefined) return;
    const index = this.catalog.index(table.number, "by_creation_time")!;
    this.readSet.addRange(index.number, Buffer.alloc(0), null);
  }

  // ---- writes --------------------------------------------------------------

  private checkWritable(): void {
    this.checkActive();
    if (this.readOnly)
      throw new DatabaseError(
        "This transaction is read-only: writes are only allowed in mutations",
      );
  }

  /** Creates the user table `name` unless it exists (a table a schema declares, before its first document). */
  ensureTable(name: string): void {
    this.checkWritable();
    this.tableForWrite(name, undefined);
  }

  private tableForWrite(name: string, options: WriteOptions | undefined): TableInfo {
    checkTableName(name, options?.system === true && name.startsWith("_"));
    if (name === "_tables" || name === "_index") {
      throw new DatabaseError(
        `Table ${name} is managed by the database and cannot be written directly`,
      );
    }
    return this.table(name) ?? this.createTable(name);
  }

  /** Adds a write to the write set, after checking it keeps the transaction within its limits. */
  private record(w: PendingWrite, doc: Document | null, size: number): void {
    const existing = this.writes.get(w.id);
    const target = existing ?? w;
    // Catalog bookkeeping (tables and indexes created on the way) does not count against user limits.
    if (w.tableNumber !== TABLES_TABLE && w.tableNumber !== INDEX_TABLE) {
      const limits = this.host.limits;
      const documents = this.counters.documentsWritten + (existing === undefined ? 1 : 0);
      const bytes = this.counters.bytesWritten + size - target.size;
      if (documents > limits.maxDocumentsWritten) {
        throw new TransactionLimitError(
          `Too many documents written in a single function execution (limit: ${limits.maxDocumentsWritten}). Consider splitting the work into several mutations.`,
          "documentsWritten",
        );
      }
      if (bytes > limits.maxBytesWritten) {
        throw new TransactionLimitError(
          `Too many bytes written in a single function execution (limit: ${limits.maxBytesWritten} bytes). Consider splitting the work into several mutations.`,
          "bytesWritten",
        );
      }
      this.counters.documentsWritten = documents;
      this.counters.bytesWritten = bytes;
    }
    if (existing === undefined) this.writes.set(w.id, w);
    target.current = doc === null ? null : deepFreeze(doc);
    target.size = size;
  }

  private rejectSystemFields(fields: ConvexObject, op: string): void {
    for (const f of ["_id", "_creationTime"]) {
      if (f in fields) throw new ValueError(`System field ${f} cannot be set in ${op}`, `.${f}`);
    }
  }

  /** Inserts a document into a table (creating the table if needed) and returns its ID. */
  insert(tableName: string, value: unknown, options?: WriteOptions): MaybePromise<string> {
    this.checkWritable();
    const { value: fields, size } = checkDocumentFields(value);
    this.rejectSystemFields(fields, "insert");
    // Check the size before the table is created on the way, with the longest possible ID.
    checkDocumentSize(withSystemFieldsSize(size, MAX_ID_LENGTH));
    const table = this.tableForWrite(tableName, options);
    if (options?.id === undefined)
      return this.insertAs(newDocumentId(table.number), table, fields, size);
    return this.allocatedId(options.id, table, options).then((id) =>
      this.insertAs(id, table, fields, size),
    );
  }

  private insertAs(id: string, table: TableInfo, fields: ConvexObject, size: number): string {
    const doc = sortKeys({
      _id: id,
      _creationTime: this.host.creationTime(),
      ...fields,
    }) as Document;
    this.checkWrite?.(table.name, doc);
    this.record(
      { tableNumber: table.number, id, idKey: idKey(id), original: null, current: null, size: 0 },
      doc,
      withSystemFieldsSize(size, id.length),
    );
    return id;
  }

  /** Checks an ID chosen by system code for an insert into `table`: its table's, and not in use. */
  private async allocatedId(id: string, table: TableInfo, options: WriteOptions): Promise<string> {
    if (options.system !== true)
      throw new DatabaseError("Only system code may choose the ID of a new document");
    if (decodeDocumentId(id).tableNumber !== table.number)
      throw new DatabaseError(`ID ${JSON.stringify(id)} does not belong to table ${table.name}`);
    // The read makes a concurrent insert of the same ID conflict.
    if (this.writes.has(id) || (await this.get(id)) !== null)
      throw new DatabaseError(`A document with ID ${JSON.stringify(id)} already exists`);
    return id;
  }

  /** The current version of a document this transaction is about to change (read set included). */
  private existing(
    id: string,
    op: string,
    options: WriteOptions | undefined,
  ): MaybePromise<{ doc: Document; table: TableInfo }> {
    const table = this.tableOfId(id);
    const managed = table?.number === TABLES_TABLE || table?.number === INDEX_TABLE;
    if (table?.name.startsWith("_") && (options?.system !== true || managed)) {
      throw new DatabaseError(`System table ${table.name} cannot be modified with ${op}`);
    }
    return andThen(this.get(id), (doc) => {
      if (doc === null || table === undefined) {
        throw new DatabaseError(
          `Document with ID ${JSON.stringify(id)} does not exist, so it cannot be ${op === "delete" ? "deleted" : op === "replace" ? "replaced" : "patched"}`,
        );
      }
      return { doc, table };
    });
  }

  private pendingFor(table: TableInfo, id: string, original: Document): PendingWrite {
    return (
      this.writes.get(id) ?? {
        tableNumber: table.number,
        id,
        idKey: idKey(id),
        original,
        current: null,
        size: 0,
      }
    );
  }

  private checkSystemFieldsUnchanged(doc: Document, fields: Record<string, unknown>): void {
    for (const f of ["_id", "_creationTime"] as const) {
      if (f in fields && fields[f] !== undefined && !Object.is(fields[f], doc[f])) {
        throw new ValueError(
          `System field ${f} cannot be changed (it is ${JSON.stringify(doc[f])})`,
          `.${f}`,
        );
      }
    }
  }

  /** Shallow-merges fields into a document; a field set to `undefined` is removed. */
  patch(id: string, value: unknown, options?: WriteOptions): MaybePromise<void> {
    this.checkWritable();
    if (!isPlainObject(value)) throw new ValueError("The value of a patch must be an object");
    return andThen(this.existing(id, "patch", options), ({ doc, table }) =>
      this.patchExisting(doc, table, value),
    );
  }

  private patchExisting(doc: Document, table: TableInfo, value: Record<string, unknown>): void {
    const id = doc._id;
    this.checkSystemFieldsUnchanged(doc, value);
    const next: Record<string, unknown> = { ...doc };
    for (const k of Object.keys(value)) {
      if (k === "_id" || k === "_creationTime") continue;
      const p = fieldPath("", k);
      try {
        checkTopLevelFieldName(k);
      } catch (e) {
        rethrowWithin(e, p);
      }
      const v = value[k];
      if (v === undefined) delete next[k];
      else next[k] = checkValue(v, p).value;
    }
    // The same count as on insert: user fields only.
    if (Object.keys(next).length - 2 > LIMITS.maxObjectFields) {
      throw new ValueError(`Object has more than ${LIMITS.maxObjectFields} fields`);
    }
    const size = valueSize(next as Document);
    checkDocumentSize(size);
    const patched = sortKeys(next) as Document;
    this.checkWrite?.(table.name, patched);
    this.record(this.pendingFor(table, id, doc), patched, size);
  }

  /** Replaces all user fields of a document, keeping `_id` and `_creationTime`. */
  replace(id: string, value: unknown, options?: WriteOptions): MaybePromise<void> {
    this.checkWritable();
    const { value: fields } = checkDocumentFields(value);
    return andThen(this.existing(id, "replace", options), ({ doc, table }) =>
      this.replaceExisting(doc, table, fields),
    );
  }

  private replaceExisting(doc: Document, table: TableInfo, fields: ConvexObject): void {
    const id = doc._id;
    this.checkSystemFieldsUnchanged(doc, fields);
    const next = sortKeys({
      ...fields,
      _id: doc._id,
      _creationTime: doc._creationTime,
    }) as Document;
    const size = valueSize(next);
    checkDocumentSize(size);
    this.checkWrite?.(table.name, next);
    this.record(this.pendingFor(table, id, doc), next, size);
  }

  delete(id: string, options?: WriteOptions): MaybePromise<void> {
    this.checkWritable();
    return andThen(this.existing(id, "delete", options), ({ doc, table }) =>
      this.record(this.pendingFor(table, id, doc), null, 0),
    );
  }

  // ---- catalog writes ------------------------------------------------------

  private writeCatalogDocument(tableNumber: number, fields: ConvexObject): string {
    const id = newDocumentId(tableNumber);
    const doc = sortKeys({
      _id: id,
      _creationTime: this.host.creationTime(),
      ...fields,
    }) as Document;
    this.record(
      { tableNumber, id, idKey: idKey(id), original: null, current: null, size: 0 },
      doc,
      valueSize(doc),
    );
    this.catalogWrites++;
    this.catalog = this.catalog.withChanges([{ tableNumber, id, doc, ts: this.beginTs }]);
    return id;
  }

  /** The next free number, with a read of "nothing above the current maximum" so concurrent allocations conflict. */
  private allocate(indexNumber: number, currentMax: number): number {
    this.readSet.addRange(indexNumber, tuplePrefixEnd(encodeKey([currentMax]))!, null);
    return currentMax + 1;
  }

  private createTable(name: string): TableInfo {
    const number = this.allocate(TABLES_BY_NUMBER, this.catalog.maxTableNumber);
    this.writeCatalogDocument(TABLES_TABLE, tableDocumentFields(name, number));
    this.addIndex(number, "by_id", "by_id", ["_id"], "enabled");
    this.addIndex(number, "by_creation_time", "by_creation_time", ["_creationTime"], "enabled");
    return this.catalog.tableByNumber(number)!;
  }

  private addIndex(
    tableNumber: number,
    name: string,
    kind: IndexKind,
    fields: readonly string[],
    state: "enabled" | "backfilling",
    hidden = false,
  ): IndexInfo {
    const number = this.allocate(
      INDEX_BY_NUMBER,
      Math.max(this.catalog.maxIndexNumber, FIRST_USER_INDEX_NUMBER - 1),
    );
    this.writeCatalogDocument(
      INDEX_TABLE,
      indexDocumentFields(tableNumber, name, kind, fields, number, state, hidden),
    );
    return this.catalog.indexesByNumber.get(number)!;
  }

  /**
   * Defines an index on a table (creating the table if needed). On a table
   * that already has documents in this transaction's snapshot the index
   * starts out backfilling: the database fills it after the commit and then
   * enables it. Field paths are dotted (`a.b`).
   *
   * With `hidden`, the index is not found by its name (and not counted
   * against the table's limit) until `showIndex`: a replacement for the index
   * of that name, built while code reading that one serves.
   */
  async createIndex(
    tableName: string,
    indexName: string,
    fields: readonly string[],
    options?: WriteOptions & { hidden?: boolean },
  ): Promise<void> {
    this.checkWritable();
    if (
      typeof indexName !== "string" ||
      !INDEX_NAME.test(indexName) ||
      indexName.length > MAX_NAME_LENGTH
    ) {
      throw new DatabaseError(
        `Invalid index name ${JSON.stringify(indexName)}: use letters, digits and underscores, starting with a letter, at most ${MAX_NAME_LENGTH} characters`,
      );
    }
    if (RESERVED_INDEX_NAMES.has(indexName)) {
      throw new DatabaseError(`Index name ${indexName} is reserved`);
    }
    if (!Array.isArray(fields) || fields.length === 0 || fields.length > MAX_FIELDS_PER_INDEX) {
      throw new DatabaseError(
        `Index ${tableName}.${indexName} must have 1 to ${MAX_FIELDS_PER_INDEX} fields`,
      );
    }
    const seen = new Set<string>();
    for (const f of fields) {
      if (typeof f !== "string" || f.length === 0 || f.split(".").some((p) => p.length === 0)) {
        throw new DatabaseError(
          `Index ${tableName}.${indexName} has an invalid field path ${JSON.stringify(f)}`,
        );
      }
      if (f === "_id" || f === "_creationTime") {
        throw new DatabaseError(
          `Index ${tableName}.${indexName} cannot list ${f}: every index ends with _creationTime and _id implicitly`,
        );
      }
      if (seen.has(f))
        throw new DatabaseError(`Index ${tableName}.${indexName} lists field ${f} twice`);
      seen.add(f);
    }
    // Whether the table has documents at the snapshot: not if this transaction created it.
    const existed =
      this.table(tableName) !== undefined && this.baseCatalog.table(tableName) !== undefined;
    const table = this.tableForWrite(tableName, options);
    const hidden = options?.hidden === true;
    if (hidden && this.catalog.hiddenIndex(table.number, indexName, fields) !== undefined) {
      throw new DatabaseError(
        `Index ${tableName}.${indexName} already has a hidden version on these fields`,
      );
    }
    if (!hidden && this.index(table, indexName) !== undefined) {
      throw new DatabaseError(`Index ${tableName}.${indexName} already exists`);
    }
    const userIndexes = this.catalog
      .indexes(table.number)
      .filter((i) => i.kind === "user" && i.hidden !== true).length;
    if (!hidden && userIndexes >= MAX_INDEXES_PER_TABLE) {
      throw new DatabaseError(
        `Table ${tableName} already has ${MAX_INDEXES_PER_TABLE} indexes, the maximum`,
      );
    }
    // A table created in this transaction (even by an earlier call) has no
    // documents at the snapshot, so there is nothing to backfill.
    const empty =
      !existed &&
      ![...this.writes.values()].some((w) => w.tableNumber === table.number && w.original !== null);
    this.addIndex(
      table.number,
      indexName,
      "user",
      fields,
      empty ? "enabled" : "backfilling",
      hidden,
    );
  }

  /** Removes a user index; its entries are deleted in the background after the commit. */
  async dropIndex(tableName: string, indexName: string): Promise<void> {
    await this.setIndexState(this.userIndexToChange(tableName, indexName), "dropped");
  }

  private userIndexToChange(tableName: string, indexName: string): IndexInfo {
    this.checkWritable();
    const table = this.table(tableName);
    const index = table && this.index(table, indexName);
    if (!table || !index || index.kind !== "user")
      throw new DatabaseError(`Index ${tableName}.${indexName} not found`);
    return index;
  }

  /**
   * Hides the index of this name: queries by the name no longer find it,
   * except from code that declared its fields (`declaredIndexes`); writes
   * keep maintaining it until `dropHiddenIndex`.
   */
  async hideIndex(tableName: string, indexName: string): Promise<void> {
    const index = this.userIndexToChange(tableName, indexName);
    if (this.catalog.hiddenIndex(index.tableNumber, indexName, index.fields) !== undefined)
      throw new DatabaseError(
        `Index ${tableName}.${indexName} already has a hidden version on these fields`,
      );
    await this.rewriteIndex(index, { hidden: true });
  }

  /** Makes the hidden index of this name on `fields` the one found by its name. */
  async showIndex(tableName: string, indexName: string, fields: readonly string[]): Promise<void> {
    const index = this.hiddenIndexToChange(tableName, indexName, fields);
    if (this.index(this.table(tableName)!, indexName) !== undefined)
      throw new DatabaseError(`Index ${tableName}.${indexName} already exists`);
    await this.rewriteIndex(index, { hidden: false });
  }

  /** Removes the hidden index of this name on `fields`, as `dropIndex` does a visible one. */
  async dropHiddenIndex(
    tableName: string,
    indexName: string,
    fields: readonly string[],
  ): Promise<void> {
    await this.setIndexState(this.hiddenIndexToChange(tableName, indexName, fields), "dropped");
  }

  private hiddenIndexToChange(
    tableName: string,
    indexName: string,
    fields: readonly string[],
  ): IndexInfo {
    this.checkWritable();
    const index = this.hiddenIndex(tableName, indexName, fields);
    if (index === undefined)
      throw new DatabaseError(
        `Index ${tableName}.${indexName} has no hidden version on these fields`,
      );
    return index;
  }

  /** @internal Moves an index to a new state by rewriting its `_index` document. */
  async setIndexState(index: IndexInfo, state: "enabled" | "dropped"): Promise<void> {
    await this.rewriteIndex(index, { state });
  }

  private async rewriteIndex(
    index: IndexInfo,
    change: { state?: "enabled" | "dropped"; hidden?: boolean },
  ): Promise<void> {
    if (!index.docId) throw new DatabaseError(`Index ${index.name} is built in and cannot change`);
    const doc = await this.get(index.docId);
    if (doc === null) throw new DatabaseError(`Index ${index.name} no longer exists`);
    const { hidden: _, ...rest } = doc;
    const hidden = change.hidden ?? doc.hidden === true;
    const next = {
      ...rest,
      ...(change.state !== undefined ? { state: change.state } : {}),
      ...(hidden ? { hidden: true } : {}),
    } as Document;
    this.record(
      this.pendingFor(this.catalog.tableByNumber(INDEX_TABLE)!, index.docId, doc),
      next,
      valueSize(next),
    );
    this.catalogWrites++;
    this.catalog = this.catalog.withChanges([
      { tableNumber: INDEX_TABLE, id: index.docId, doc: next, ts: this.beginTs },
    ]);
  }
}
