/**
 * Streaming index range scans. Documents come from storage page by page, at
 * the transaction's snapshot, merged with the transaction's own writes as
 * they stood when the scan started. Each call to `next` extends the read set
 * by exactly the part of the range it observed: up to the last key returned,
 * or to the end of the range once the scan is exhausted (so a `first()` on
 * an empty range still conflicts with a later insert into that range).
 */
import type { IndexEntry, KeyRange } from "../persistence/index.js";
import {
  andThen,
  compareKeys,
  type Document,
  keySuccessor,
  type MaybePromise,
} from "../values/index.js";
import type { IndexInfo, TableInfo } from "./catalog.js";
import { indexKey, keyInRange } from "./indexKeys.js";

export interface ScanHost {
  /** `cache`: the document enters the document cache at once (the reader will be back for it). */
  readDocument(
    tableNumber: number,
    id: string,
    idKey: Buffer,
    ts: bigint,
    cache?: boolean,
  ): MaybePromise<Document | null>;
  scanDocumentsPage(
    tableNumber: number,
    range: KeyRange,
    ts: bigint,
    order: "asc" | "desc",
    limit: number,
  ): MaybePromise<Array<{ key: Buffer; doc: Document }>>;
  scanIndexPage(
    indexNumber: number,
    range: KeyRange,
    ts: bigint,
    order: "asc" | "desc",
    limit: number,
  ): MaybePromise<IndexEntry[]>;
}

/** The slice of a transaction a scan works with (kept narrow to avoid a module cycle). */
export interface ScanOwner {
  readonly beginTs: bigint;
  readonly readSet: { addRange(indexNumber: number, start: Buffer, end: Buffer | null): void };
  readonly writes: ReadonlyMap<
    string,
    { tableNumber: number; idKey: Buffer; current: Document | null; size: number }
  >;
  /** The documents this transaction reads enter the document cache at once. */
  readonly cacheReads: boolean;
  checkActive(): void;
  countDocumentRead(doc: Document, size?: number): void;
}

interface Candidate {
  key: Buffer;
  /** by_id key of the document. */
  docId: Buffer;
  /** The document, once known (by_id pages and the transaction's own writes carry it). */
  doc?: Document;
}

const MIN_PAGE = 8;
const MAX_PAGE = 512;

/** The ID string inside a by_id key (`07 <ascii> 00`). */
function idFromKey(key: Buffer): string {
  return key.toString("latin1", 1, key.length - 1);
}

export class IndexScan {
  private buffer: Candidate[] = [];
  private bufferPos = 0;
  private exhausted = false;
  private overlay: Candidate[] = [];
  private overlayPos = 0;
  /** by_id keys (latin1) of documents the transaction wrote in this table. */
  private overridden: Set<string> | null = null;
  /** The part of the range not fetched from storage yet. */
  private remaining: KeyRange;
  /** The part of the range not yet recorded in the read set. */
  private unobserved: KeyRange;
  private finished = false;
  private lastReturned: Buffer | null = null;
  /** Expected number of documents the caller will take; sizes storage pages (reads are recorded as consumed). */
  prefetch = 0;

  /** A scan over nothing (a table that does not exist). */
  static empty(): IndexScan {
    const s = Object.create(IndexScan.prototype) as IndexScan;
    s.finished = true;
    return s;
  }

  constructor(
    private readonly host: ScanHost,
    private readonly tx: ScanOwner,
    private readonly table: TableInfo,
    readonly index: IndexInfo,
    readonly range: KeyRange,
    readonly order: "asc" | "desc",
  ) {
    this.remaining = { ...range };
    this.unobserved = { ...range };
    const cmp = order === "asc" ? compareKeys : (a: Buffer, b: Buffer) => compareKeys(b, a);
    for (const w of tx.writes.values()) {
      if (w.tableNumber !== table.number) continue;
      this.overridden ??= new Set();
      this.overridden.add(w.idKey.toString("latin1"));
      if (w.current === null) continue;
      const key = indexKey(index, w.current);
      if (keyInRange(key, range)) this.overlay.push({ key, docId: w.idKey, doc: w.current });
    }
    this.overlay.sort((a, b) => cmp(a.key, b.key));
  }

  /** The index key of the last document returned (where a page that stops here would continue). */
  get lastKey(): Buffer | null {
    return this.lastReturned;
  }

  /** True once every document in the range has been returned. */
  get done(): boolean {
    return this.finished;
  }

  private fetchPage(wanted: number): MaybePromise<void> {
    const limit = Math.min(MAX_PAGE, Math.max(MIN_PAGE, wanted, this.prefetch));
    const ts = this.tx.beginTs;
    if (this.index.kind === "by_id") {
      return andThen(
        this.host.scanDocumentsPage(this.table.number, this.remaining, ts, this.order, limit),
        (docs) =>
          this.took(
            docs.map((d) => ({ key: d.key, docId: d.key, doc: d.doc })),
            limit,
          ),
      );
    }
    return andThen(
      this.host.scanIndexPage(this.index.number, this.remaining, ts, this.order, limit),
      (entries) =>
        this.took(
          entries.map((e) => ({ key: e.key, docId: e.docId })),
          limit,
        ),
    );
  }

  /** Buffers a page fetched from storage (`limit`: what was asked for). */
  private took(page: Candidate[], limit: number): void {
    if (page.length < limit) this.exhausted = true;
    const last = page[page.length - 1];
    if (last !== undefined) {
      if (this.order === "asc")
        this.remaining = { start: keySuccessor(last.key), end: this.remaining.end };
      else this.remaining = { start: this.remaining.start, end: last.key };
    }
    this.buffer = page;
    this.bufferPos = 0;
  }

  /**
   * The next stored candidate not shadowed by the transaction's own writes,
   * or a promise when a page must come from storage first (look again once
   * it settles).
   */
  private peekStored(wanted: number): Candidate | undefined | Promise<void> {
    for (;;) {
      while (this.bufferPos < this.buffer.length) {
        const c = this.buffer[this.bufferPos]!;
        if (this.overridden?.has(c.docId.toString("latin1"))) {
          this.bufferPos++;
          continue;
        }
        return c;
      }
      if (this.exhausted) return undefined;
      const fetched = this.fetchPage(wanted);
      if (fetched instanceof Promise) return fetched;
    }
  }

  /**
   * Up to `n` more documents. Returns fewer only when the range is
   * exhausted (then `done` is true). Answers at once when storage does.
   */
  next(n: number): MaybePromise<Document[]> {
    const out: Document[] = [];
    if (this.finished) return out;
    this.tx.checkActive();
    const seen: { lastKey: Buffer | null } = { lastKey: null };
    let result: MaybePromise<Document[]>;
    try {
      result = this.fill(out, n, seen);
    } catch (e) {
      this.observe(seen.lastKey);
      throw e;
    }
    if (result instanceof Promise) return result.finally(() => this.observe(seen.lastKey));
    this.observe(seen.lastKey);
    return result;
  }

  /** Adds documents to `out` until it holds `n` or the range is exhausted. */
  private fill(
    out: Document[],
    n: number,
    seen: { lastKey: Buffer | null },
  ): MaybePromise<Document[]> {
    while (out.length < n) {
      const stored = this.peekStored(n - out.length);
      if (stored instanceof Promise) return stored.then(() => this.fill(out, n, seen));
      const pending = this.overlay[this.overlayPos];
      if (stored === undefined && pending === undefined) {
        this.finished = true;
        break;
      }
      let pick: Candidate;
      if (
        stored === undefined ||
        (pending !== undefined &&
          (this.order === "asc"
            ? compareKeys(pending.key, stored.key)
            : compareKeys(stored.key, pending.key)) < 0)
      ) {
        pick = pending!;
        this.overlayPos++;
      } else {
        pick = stored;
        this.bufferPos++;
      }
      if (pick.doc !== undefined) {
        const size = pick === pending ? this.tx.writes.get(pick.doc._id)?.size : undefined;
        this.accept(out, pick, pick.doc, size, seen);
        continue;
      }
      const picked = pick;
      const found = this.host.readDocument(
        this.table.number,
        idFromKey(picked.docId),
        picked.docId,
        this.tx.beginTs,
        this.tx.cacheReads,
      );
      if (found instanceof Promise) {
        return found.then((doc) => {
          this.accept(out, picked, this.existing(doc, picked), undefined, seen);
          return this.fill(out, n, seen);
        });
      }
      this.accept(out, picked, this.existing(found, picked), undefined, seen);
    }
    return out;
  }

  /** The document an index entry points at, which must exist at the snapshot. */
  private existing(doc: Document | null, pick: Candidate): Document {
    if (doc === null) {
      throw new Error(
        `internal error: index ${this.table.name}.${this.index.name} points at ${idFromKey(pick.docId)}, which does not exist at the snapshot`,
      );
    }
    return doc;
  }

  private accept(
    out: Document[],
    pick: Candidate,
    doc: Document,
    size: number | undefined,
    seen: { lastKey: Buffer | null },
  ): void {
    this.tx.countDocumentRead(doc, size);
    out.push(doc);
    seen.lastKey = pick.key;
    this.lastReturned = pick.key;
  }

  /** Extends the read set over what the caller has now seen. */
  private observe(lastKey: Buffer | null): void {
    const u = this.unobserved;
    const record = (start: Buffer, end: Buffer | null) =>
      this.tx.readSet.addRange(this.index.number, start, end);
    if (this.finished) {
      record(u.start, u.end);
      this.unobserved = { start: u.start, end: u.start };
      return;
    }
    if (lastKey === null) return;
    if (this.order === "asc") {
      const end = keySuccessor(lastKey);
      record(u.start, end);
      this.unobserved = { start: end, end: u.end };
    } else {
      record(lastKey, u.end);
      this.unobserved = { start: u.start, end: lastKey };
    }
  }

  async collect(): Promise<Document[]> {
    const out: Document[] = [];
    while (!this.finished) out.push(...(await this.next(MAX_PAGE)));
    return out;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Document> {
    while (!this.finished) {
      for (const d of await this.next(MIN_PAGE)) yield d;
    }
  }
}
