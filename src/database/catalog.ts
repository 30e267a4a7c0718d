/**
 * Tables and indexes. They are recorded as documents of two system tables
 * inside the log itself (`_tables` and `_index`), so the catalog at any
 * timestamp is derived from the data, numbers stay stable across restarts,
 * and creating a table or an index is an ordinary transactional write.
 *
 * A `Catalog` is an immutable snapshot; commits that touch the system tables
 * produce a new one.
 */
import type { Document } from "../values/index.js";

export type IndexState = "backfilling" | "enabled" | "dropped";
export type IndexKind = "by_id" | "by_creation_time" | "user";

export interface TableInfo {
  name: string;
  number: number;
  /** `_id` of the table's `_tables` document (undefined for the built-in system tables). */
  docId?: string;
}

export interface IndexInfo {
  number: number;
  tableNumber: number;
  name: string;
  kind: IndexKind;
  /** Field paths the user declared; `_creationTime` and `_id` follow implicitly. */
  fields: readonly string[];
  state: IndexState;
  /** Timestamp of the commit that created the index (0 for built-in ones). */
  createdTs: bigint;
  /** Timestamp of the commit that dropped it, for dropped indexes. */
  droppedTs?: bigint;
  /**
   * Not found by its name: a replacement built beside the index of that name
   * while the code reading the old one serves, or the old one kept for that
   * code until it retires (see `Transaction.declaredIndexes`). Maintained by
   * every write like any live index.
   */
  hidden?: true;
  docId?: string;
}

export const TABLES_TABLE = 1;
export const INDEX_TABLE = 2;
/** User tables and indexes are numbered from here, leaving room for system ones. */
export const FIRST_USER_TABLE_NUMBER = 10001;
export const FIRST_USER_INDEX_NUMBER = 100;

const builtinIndex = (
  number: number,
  tableNumber: number,
  name: string,
  kind: IndexKind,
  fields: string[],
): IndexInfo => ({ number, tableNumber, name, kind, fields, state: "enabled", createdTs: 0n });

/** The system tables that describe all others; they are never stored as catalog rows themselves. */
const BUILTIN_TABLES: TableInfo[] = [
  { name: "_tables", number: TABLES_TABLE },
  { name: "_index", number: INDEX_TABLE },
];

export const TABLES_BY_NAME = 3;
export const TABLES_BY_NUMBER = 4;
export const INDEX_BY_NUMBER = 7;
export const INDEX_BY_TABLE = 8;

const BUILTIN_INDEXES: IndexInfo[] = [
  builtinIndex(1, TABLES_TABLE, "by_id", "by_id", ["_id"]),
  builtinIndex(2, TABLES_TABLE, "by_creation_time", "by_creation_time", ["_creationTime"]),
  builtinIndex(TABLES_BY_NAME, TABLES_TABLE, "by_name", "user", ["name"]),
  builtinIndex(TABLES_BY_NUMBER, TABLES_TABLE, "by_number", "user", ["number"]),
  builtinIndex(5, INDEX_TABLE, "by_id", "by_id", ["_id"]),
  builtinIndex(6, INDEX_TABLE, "by_creation_time", "by_creation_time", ["_creationTime"]),
  builtinIndex(INDEX_BY_NUMBER, INDEX_TABLE, "by_number", "user", ["number"]),
  builtinIndex(INDEX_BY_TABLE, INDEX_TABLE, "by_table", "user", ["table", "name"]),
];

export class Catalog {
  private constructor(
    readonly tablesByName: ReadonlyMap<string, TableInfo>,
    readonly tablesByNumber: ReadonlyMap<number, TableInfo>,
    readonly indexesByNumber: ReadonlyMap<number, IndexInfo>,
    /** Live (not dropped) indexes of each table. */
    readonly indexesByTable: ReadonlyMap<number, readonly IndexInfo[]>,
    /** Largest table and index numbers ever allocated (dropped ones included). */
    readonly maxTableNumber: number,
    readonly maxIndexNumber: number,
  ) {}

  static builtin(): Catalog {
    return Catalog.build(BUILTIN_TABLES, BUILTIN_INDEXES);
  }

  static build(tables: Iterable<TableInfo>, indexes: Iterable<IndexInfo>): Catalog {
    const byName = new Map<string, TableInfo>();
    const byNumber = new Map<number, TableInfo>();
    let maxTable = FIRST_USER_TABLE_NUMBER - 1;
    for (const t of tables) {
      byName.set(t.name, t);
      byNumber.set(t.number, t);
      maxTable = Math.max(maxTable, t.number);
    }
    const indexesByNumber = new Map<number, IndexInfo>();
    const byTable = new Map<number, IndexInfo[]>();
    let maxIndex = FIRST_USER_INDEX_NUMBER - 1;
    for (const i of indexes) {
      indexesByNumber.set(i.number, i);
      maxIndex = Math.max(maxIndex, i.number);
      if (i.state === "dropped") continue;
      const list = byTable.get(i.tableNumber);
      if (list) list.push(i);
      else byTable.set(i.tableNumber, [i]);
    }
    return new Catalog(byName, byNumber, indexesByNumber, byTable, maxTable, maxIndex);
  }

  table(name: string): TableInfo | undefined {
    return this.tablesByName.get(name);
  }

  tableByNumber(number: number): TableInfo | undefined {
    return this.tablesByNumber.get(number);
  }

  indexes(tableNumber: number): readonly IndexInfo[] {
    return this.indexesByTable.get(tableNumber) ?? [];
  }

  /** The index found by this name (not a hidden one). */
  index(tableNumber: number, name: string): IndexInfo | undefined {
    return this.indexes(tableNumber).find((i) => i.name === name && i.hidden !== true);
  }

  /** The hidden index of this name on exactly these fields. */
  hiddenIndex(tableNumber: number, name: string, fields: readonly string[]): IndexInfo | undefined {
    return this.indexes(tableNumber).find(
      (i) => i.hidden === true && i.name === name && sameFields(i.fields, fields),
    );
  }

  /** Every live hidden index. */
  hiddenIndexes(): IndexInfo[] {
    const out: IndexInfo[] = [];
    for (const list of this.indexesByTable.values())
      for (const i of list) if (i.hidden === true) out.push(i);
    return out;
  }

  byIdIndex(tableNumber: number): IndexInfo {
    const i = this.indexes(tableNumber).find((x) => x.kind === "by_id");
    if (!i) throw new Error(`internal error: table ${tableNumber} has no by_id index`);
    return i;
  }

  /** A new catalog with the given catalog documents applied (`null` value = the document was deleted). */
  withChanges(
    changes: Iterable<{ tableNumber: number; id: string; doc: Document | null; ts: bigint }>,
  ): Catalog {
    const tables = new Map<string, TableInfo>();
    for (const t of this.tablesByNumber.values()) tables.set(t.docId ?? `builtin:${t.number}`, t);
    const indexes = new Map<string, IndexInfo>();
    for (const i of this.indexesByNumber.values()) indexes.set(i.docId ?? `builtin:${i.number}`, i);
    for (const c of changes) {
      if (c.tableNumber === TABLES_TABLE) {
        if (c.doc === null) tables.delete(c.id);
        else tables.set(c.id, tableFromDocument(c.doc));
      } else if (c.tableNumber === INDEX_TABLE) {
        if (c.doc === null) indexes.delete(c.id);
        else indexes.set(c.id, indexFromDocument(c.doc, c.ts, indexes.get(c.id)));
      }
    }
    return Catalog.build(tables.values(), indexes.values());
  }
}

/** The `_tables` document of a user table. */
export function tableDocumentFields(
  name: string,
  number: number,
): { name: string; number: number; state: string } {
  return { name, number, state: "active" };
}

/** The `_index` document of an index. */
export function indexDocumentFields(
  tableNumber: number,
  name: string,
  kind: IndexKind,
  fields: readonly string[],
  number: number,
  state: IndexState,
  hidden = false,
): {
  table: number;
  name: string;
  kind: string;
  fields: string[];
  number: number;
  state: string;
  hidden?: true;
} {
  return {
    table: tableNumber,
    name,
    kind,
    fields: [...fields],
    number,
    state,
    ...(hidden ? { hidden: true as const } : {}),
  };
}

export function sameFields(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((f, i) => f === b[i]);
}

function tableFromDocument(doc: Document): TableInfo {
  return { name: doc.name as string, number: doc.number as number, docId: doc._id };
}

function indexFromDocument(doc: Document, ts: bigint, previous: IndexInfo | undefined): IndexInfo {
  const state = doc.state as IndexState;
  return {
    number: doc.number as number,
    tableNumber: doc.table as number,
    name: doc.name as string,
    kind: doc.kind as IndexKind,
    fields: doc.fields as string[],
    state,
    // The creation timestamp is that of the first version of the document; the
    // drop timestamp that of the version that first says "dropped" (a dropped
    // index's document never changes again, so on reload it is the version's).
    createdTs: previous?.createdTs ?? ts,
    droppedTs: state === "dropped" ? (previous?.droppedTs ?? ts) : undefined,
    ...(doc.hidden === true ? { hidden: true as const } : {}),
    docId: doc._id,
  };
}
