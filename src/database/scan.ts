/**
 * Streaming index range scans. Documents come from storage page by page, at
 * the transaction's snapshot, merged with the transaction's own writes as
 * they stood when the scan started. Each call to `next` extends the read set
 * by exactly the part of the range it observed: up to the last key returned,
 * or to the end of the range once the scan is exhausted (so a `first()` on
 * an empty range still conflicts with a later insert into that range).
 */
import type { IndexEntry, KeyRange } from "../persistence/index.js";
import { compareKeys, type Document, keySuccessor } from "../values/index.js";
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
  ): Promise<Document | null>;
  scanDocumentsPage(
    tableNumber: number,
    range: KeyRange,
    ts: bigint,
    order: "asc" | "desc",
    limit: number,
  ): Promise<Array<{ key: Buffer; doc: Document }>>;
  scanIndexPage(
    indexNumber: number,
    range: KeyRange,
    ts: bigint,
    order: "asc" | "desc",
    limit: number,
  ): Promise<IndexEntry[]>;
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

  private async fetchPage(wanted: number): Promise<void> {
    const limit = Math.min(MAX_PAGE, Math.max(MIN_PAGE, wanted, this.prefetch));
    const ts = this.tx.beginTs;
    let page: Candidate[];
    if (this.index.kind === "by_id") {
      const docs = await this.host.scanDocumentsPage(
        this.table.number,
        this.remaining,
        ts,
        this.order,
        limit,
      );
      page = docs.map((d) => ({ key: d.key, docId: d.key, doc: d.doc }));
    } else {
      const entries = await this.host.scanIndexPage(
        this.index.number,
        this.remaining,
        ts,
        this.order,
        limit,
      );
      page = entries.map((e) => ({ key: e.key, docId: e.docId }));
    }
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

  /** The next stored candidate not shadowed by the transaction's own writes. */
  private async peekStored(wanted: number): Promise<Candidate | undefined> {
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
      await this.fetchPage(wanted);
    }
  }

  /**
   * Up to `n` more documents. Returns fewer only when the range is
   * exhausted (then `done` is true).
   */
  async next(n: number): Promise<Document[]> {
    const out: Document[] = [];
    if (this.finished) return out;
    this.tx.checkActive();
    let lastKey: Buffer | null = null;
    try {
      while (out.length < n) {
        const stored = await this.peekStored(n - out.length);
        const pending = this.overlay[this.overlayPos];
        let pick: Candidate;
        if (stored === undefined && pending === undefined) {
          this.finished = true;
          break;
        }
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
        let doc = pick.doc;
        let size: number | undefined;
        if (doc === undefined) {
          const id = idFromKey(pick.docId);
          const found = await this.host.readDocument(
            this.table.number,
            id,
            pick.docId,
            this.tx.beginTs,
            this.tx.cacheReads,
          );
          if (found === null) {
            throw new Error(
              `internal error: index ${this.table.name}.${this.index.name} points at ${id}, which does not exist at the snapshot`,
            );
          }
          doc = found;
        } else if (pick === pending) {
          size = this.tx.writes.get(doc._id)?.size;
        }
        this.tx.countDocumentRead(doc, size);
        out.push(doc);
        lastKey = pick.key;
        this.lastReturned = pick.key;
      }
    } finally {
      this.observe(lastKey);
    }
    return out;
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
