/**
 * Serialised queries (what `ctx.db.query(…)` builds in the official library)
 * run against a transaction: a source (index range or full table scan), then
 * operators in order (filters and limits). Streams feed `1.0/queryStream` /
 * `queryStreamNext` one document at a time; pages feed `1.0/queryPage`
 * (`paginate`) with opaque cursors.
 *
 * Reads are recorded as documents are consumed, so a stream that stops
 * early, or a page, observes exactly the index range it returned.
 */
import { createHash } from "node:crypto";
import {
  DatabaseError,
  type IndexInfo,
  type IndexScan,
  type RangeExpression,
  type Transaction,
} from "../database/index.js";
import {
  type Document,
  describeNumber,
  fromJsonOrUndefined,
  isPlainObject,
  type MaybePromise,
} from "../values/index.js";
import { compileFilter, type Predicate } from "./filters.js";

export class QueryError extends Error {
  override name = "QueryError";
}

interface Source {
  table: string;
  index: string;
  range: RangeExpression[];
  order: "asc" | "desc";
}

type Operator = { kind: "filter"; predicate: Predicate } | { kind: "limit"; n: number };

export interface ParsedQuery {
  source: Source;
  operators: Operator[];
  /** A short fingerprint of the source, stored in cursors to reject cursors of other queries. */
  readonly fingerprint: string;
}

const RANGE_TYPES = new Set(["Eq", "Gt", "Gte", "Lt", "Lte"]);

/** Validates and compiles a serialised query. `isSystem` is whether it came from `db.system`. */
export function parseQuery(json: unknown): ParsedQuery {
  if (!isPlainObject(json) || !isPlainObject(json.source) || !Array.isArray(json.operators)) {
    throw new QueryError("Malformed query");
  }
  const src = json.source;
  const order = src.order ?? "asc";
  if (order !== "asc" && order !== "desc")
    throw new QueryError(`Invalid query order ${JSON.stringify(src.order)}`);
  let source: Source;
  if (src.type === "FullTableScan") {
    if (typeof src.tableName !== "string")
      throw new QueryError("Malformed query: missing table name");
    source = { table: src.tableName, index: "by_creation_time", range: [], order };
  } else if (src.type === "IndexRange") {
    if (typeof src.indexName !== "string" || !Array.isArray(src.range))
      throw new QueryError("Malformed index range");
    const dot = src.indexName.indexOf(".");
    if (dot <= 0)
      throw new QueryError(
        `Invalid index name ${JSON.stringify(src.indexName)}: expected "table.index"`,
      );
    const range = src.range.map((e: unknown): RangeExpression => {
      if (
        !isPlainObject(e) ||
        !RANGE_TYPES.has(e.type as string) ||
        typeof e.fieldPath !== "string"
      ) {
        throw new QueryError(`Malformed index range expression ${JSON.stringify(e)}`);
      }
      return {
        type: e.type as RangeExpression["type"],
        fieldPath: e.fieldPath,
        value: fromJsonOrUndefined(e.value),
      };
    });
    source = {
      table: src.indexName.slice(0, dot),
      index: src.indexName.slice(dot + 1),
      range,
      order,
    };
  } else if (src.type === "Search") {
    throw new QueryError("not supported yet: search indexes (withSearchIndex)");
  } else {
    throw new QueryError(`Unknown query source ${JSON.stringify(src.type)}`);
  }
  const operators = json.operators.map((op: unknown): Operator => {
    if (isPlainObject(op) && "filter" in op)
      return { kind: "filter", predicate: compileFilter(op.filter) };
    if (isPlainObject(op) && "limit" in op) {
      const n = op.limit;
      if (typeof n !== "number" || !Number.isInteger(n) || n < 0)
        throw new QueryError(`Invalid limit ${JSON.stringify(n)}`);
      return { kind: "limit", n };
    }
    throw new QueryError(`Malformed query operator ${JSON.stringify(op)}`);
  });
  // Only paginated queries use it: hashed on first use, not for every db.query() (~2% of a
  // one-document query's CPU).
  let fingerprint: string | undefined;
  return {
    source,
    operators,
    get fingerprint() {
      fingerprint ??= createHash("sha256")
        .update(
          JSON.stringify([src.type, src.tableName ?? src.indexName, src.range ?? null, order]),
        )
        .digest("base64url")
        .slice(0, 12);
      return fingerprint;
    },
  };
}

/** The smallest limit among the operators: no more documents than that can ever be returned. */
function overallLimit(ops: Operator[]): number {
  let min = Number.POSITIVE_INFINITY;
  for (const op of ops) if (op.kind === "limit") min = Math.min(min, op.n);
  return min;
}

/** A running query: documents one at a time, through the operators. */
export class QueryStream {
  private readonly scan: IndexScan;
  /** Documents emitted past each limit operator so far. */
  private readonly counts: number[];
  private done = false;
  /** Documents to send ahead with the next `queryStreamNext` answer (see syscalls.ts). */
  ahead = 1;
  /** An error met while reading ahead, for the call that reaches it. */
  failure: unknown = undefined;

  /** `index`: the one `pagedSource` gave for `query`, else looked up here. */
  constructor(
    tx: Transaction,
    readonly query: ParsedQuery,
    bounds: { after?: Buffer; through?: Buffer } = {},
    index?: IndexInfo | null,
  ) {
    const { table, range, order } = query.source;
    this.scan =
      index === undefined
        ? tx.query(table, query.source.index, range, order, bounds)
        : tx.queryOn(index, table, range, order, bounds);
    this.counts = query.operators.map(() => 0);
    const limit = overallLimit(query.operators);
    if (Number.isFinite(limit)) this.scan.prefetch = Math.min(limit, 512);
    if (limit === 0) this.done = true;
  }

  /** The index key of the last document the source produced (for cursors). */
  get lastKey(): Buffer | null {
    return this.scan.lastKey;
  }

  /** Whether the source range is exhausted (as opposed to stopped by a limit). */
  get sourceExhausted(): boolean {
    return this.scan.done;
  }

  /**
   * The next document, or null when the query is done. `rows` counts the
   * documents read from the source, filtered out ones included.
   */
  next(stats?: { rows: number }): MaybePromise<Document | null> {
    while (!this.done) {
      const page = this.scan.next(1);
      if (page instanceof Promise) {
        return page.then((docs) => {
          const doc = this.took(docs[0], stats);
          return doc === undefined ? this.next(stats) : doc;
        });
      }
      const doc = this.took(page[0], stats);
      if (doc !== undefined) return doc;
    }
    return null;
  }

  /**
   * What the source's next document gives: itself if it passes, null once
   * the query is done, undefined to look further.
   */
  private took(
    doc: Document | undefined,
    stats: { rows: number } | undefined,
  ): Document | null | undefined {
    if (doc === undefined) {
      this.done = true;
      return null;
    }
    if (stats) stats.rows++;
    return this.passes(doc) ? doc : undefined;
  }

  /** Runs the operators over one document; marks the stream done when a limit is reached. */
  private passes(doc: Document): boolean {
    const ops = this.query.operators;
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      if (op.kind === "filter") {
        if (!op.predicate(doc)) return false;
      } else {
        if (this.counts[i]! >= op.n) {
          this.done = true;
          return false;
        }
        this.counts[i]!++;
        if (this.counts[i] === op.n && i === ops.length - 1) this.done = true;
      }
    }
    return true;
  }
}

// ---- pagination --------------------------------------------------------------

const END = "end";

interface Cursor {
  fingerprint: string;
  /** Index key where the previous page stopped, or END once the range was exhausted. */
  position: Buffer | typeof END;
}

export function encodeCursor(c: Cursor): string {
  const pos = c.position === END ? END : `k${c.position.toString("base64url")}`;
  return `${c.fingerprint}.${pos}`;
}

/**
 * The index a paginated `query` reads in `tx` (null: its table does not
 * exist), and what its cursors carry: the fingerprint of its source and the
 * number of that index (never reused), so a cursor made on another index,
 * such as one a deploy replaced under the same name, is refused as
 * InvalidCursor (the official client then starts the paginated query over)
 * rather than read as a key of this one. The stream of the page takes the
 * index from here (`QueryStream`'s `index`), not looking it up again.
 */
export function pagedSource(
  tx: Transaction,
  query: ParsedQuery,
): { index: IndexInfo | null; fingerprint: string } {
  const index = tx.queryIndex(query.source.table, query.source.index);
  return {
    index,
    fingerprint: `${query.fingerprint}${index === null ? "" : index.number.toString(36)}`,
  };
}

export function decodeCursor(text: unknown, fingerprint: string): Cursor {
  if (typeof text !== "string") throw new QueryError("Invalid cursor: expected a string");
  const dot = text.indexOf(".");
  const pos = text.slice(dot + 1);
  if (dot < 0 || (pos !== END && !pos.startsWith("k"))) {
    throw new QueryError(`Invalid cursor ${JSON.stringify(text.slice(0, 80))}`);
  }
  if (text.slice(0, dot) !== fingerprint) {
    throw new QueryError(
      "InvalidCursor: this cursor belongs to a different query, or to an index a deploy has replaced since. A paginated query must keep the same table, index, range and order across pages.",
    );
  }
  return { fingerprint, position: pos === END ? END : Buffer.from(pos.slice(1), "base64url") };
}

export interface PageRequest {
  cursor: string | null;
  endCursor: string | null;
  pageSize: number;
  maximumRowsRead: number | null;
}

export interface PageResult {
  page: Document[];
  isDone: boolean;
  continueCursor: string;
  splitCursor: string | null;
  pageStatus: "SplitRecommended" | "SplitRequired" | null;
}

/**
 * One page of a paginated query. Without `endCursor`, up to `pageSize`
 * documents from `cursor` on; with it, exactly the documents up to and
 * including `endCursor` (how a reactive page keeps its boundaries when
 * documents come and go). `maximumRowsRead` caps the documents read,
 * filtered ones included.
 */
export function queryPage(
  tx: Transaction,
  query: ParsedQuery,
  req: PageRequest,
): MaybePromise<PageResult> {
  if (!Number.isInteger(req.pageSize) || req.pageSize < 0) {
    throw new QueryError(
      `\`options.numItems\` must be a non-negative integer, got ${describeNumber(req.pageSize)}`,
    );
  }
  const max = req.maximumRowsRead;
  if (max !== null && (!Number.isInteger(max) || max < 0)) {
    throw new QueryError(
      `\`options.maximumRowsRead\` must be a non-negative integer, got ${describeNumber(max)}`,
    );
  }
  const { index, fingerprint } = pagedSource(tx, query);
  const start = req.cursor === null ? null : decodeCursor(req.cursor, fingerprint);
  const end = req.endCursor === null ? null : decodeCursor(req.endCursor, fingerprint);
  const endCursorText = (position: Buffer | typeof END) => encodeCursor({ fingerprint, position });
  if (start?.position === END) {
    return {
      page: [],
      isDone: true,
      continueCursor: endCursorText(END),
      splitCursor: null,
      pageStatus: null,
    };
  }
  const bounds = {
    after: start?.position instanceof Buffer ? start.position : undefined,
    through: end?.position instanceof Buffer ? end.position : undefined,
  };
  const stream = new QueryStream(tx, query, bounds, index);
  const page: Document[] = [];
  const stats = { rows: 0 };
  const limitByCursor = end !== null;
  const fill = (): MaybePromise<PageResult> => {
    for (;;) {
      if (!limitByCursor && page.length >= req.pageSize) break;
      if (req.maximumRowsRead !== null && stats.rows >= req.maximumRowsRead) break;
      const doc = stream.next(stats);
      if (doc instanceof Promise) {
        return doc.then((d) => {
          if (d === null) return finish();
          page.push(d);
          return fill();
        });
      }
      if (doc === null) break;
      page.push(doc);
    }
    return finish();
  };
  const finish = (): PageResult => {
    const exhausted = stream.sourceExhausted;
    const isDone = limitByCursor ? end!.position === END && exhausted : exhausted;
    let continueCursor: string;
    if (limitByCursor) continueCursor = req.endCursor!;
    else if (exhausted) continueCursor = endCursorText(END);
    else {
      // Continue after the last document read (returned or filtered out); an empty
      // key means "from the start of the range".
      const last = stream.lastKey;
      continueCursor =
        last === null ? (req.cursor ?? endCursorText(Buffer.alloc(0))) : endCursorText(last);
    }
    return { page, isDone, continueCursor, splitCursor: null, pageStatus: null };
  };
  return fill();
}

export function tableOfQuery(query: ParsedQuery): string {
  return query.source.table;
}

export function assertTableAccess(table: string, isSystem: boolean, what: string): void {
  const system = table.startsWith("_");
  if (system !== isSystem) {
    throw new DatabaseError(
      `${system ? "System" : "User"} tables can only be accessed from db.${isSystem ? "" : "system."}${what}().`,
    );
  }
}
