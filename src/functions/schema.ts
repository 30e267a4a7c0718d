/**
 * The app's schema: evaluated from its bundled `schema.js` (in an isolate,
 * like any user code), enforced on writes, and its indexes created in the
 * database.
 */
import {
  type Database,
  type IndexInfo,
  SnapshotTooOldError,
  sameFields,
  type Transaction,
} from "../database/index.js";
import { AppRuntime } from "../runtime/appRuntime.js";
import { linkModules } from "../runtime/loader.js";
import type { ModuleSource } from "../runtime/modules.js";
import { isPlainObject, type Value } from "../values/index.js";
import {
  type SchemaValidators,
  schemaValidatorsFromJson,
  TransactionNames,
  validateWrite,
} from "./validators.js";

export interface SchemaIndex {
  table: string;
  name: string;
  fields: string[];
}

export interface Schema {
  /** `defineSchema(…).export()` text, as the official CLI sends it. */
  json: string;
  validators: SchemaValidators;
  indexes: SchemaIndex[];
  /** `indexes` by table and name, for the transactions of the app's code (`Transaction.declaredIndexes`). */
  declaredIndexes: ReadonlyMap<string, ReadonlyMap<string, readonly string[]>>;
}

/**
 * Reads the indexes out of a schema's `export()` JSON. A pushed schema.js is
 * the sender's code: its JSON is checked here so that a wrong shape fails the
 * push, not the code that diffs and creates the indexes.
 */
export function schemaIndexes(json: string): SchemaIndex[] {
  const parsed = JSON.parse(json) as { tables: Array<{ tableName: string; indexes?: unknown }> };
  const out: SchemaIndex[] = [];
  const tables = new Set<string>();
  for (const t of parsed.tables) {
    const where = `table ${JSON.stringify(t.tableName)}`;
    // Each would hide the other (validators and indexes are looked up by name).
    if (tables.has(t.tableName)) throw new Error(`Invalid schema JSON: ${where} is defined twice`);
    tables.add(t.tableName);
    if (t.indexes === undefined) continue;
    if (!Array.isArray(t.indexes))
      throw new Error(`Invalid schema JSON: the indexes of ${where} must be a list`);
    const names = new Set<string>();
    for (const i of t.indexes as unknown[]) {
      const x = isPlainObject(i) ? (i as { indexDescriptor?: unknown; fields?: unknown }) : {};
      if (
        typeof x.indexDescriptor !== "string" ||
        !Array.isArray(x.fields) ||
        !x.fields.every((f) => typeof f === "string")
      )
        throw new Error(
          `Invalid schema JSON: every index of ${where} needs an indexDescriptor and a list of fields (strings)`,
        );
      if (names.has(x.indexDescriptor))
        throw new Error(
          `Invalid schema JSON: ${where} defines index ${JSON.stringify(x.indexDescriptor)} twice`,
        );
      names.add(x.indexDescriptor);
      out.push({ table: t.tableName, name: x.indexDescriptor, fields: x.fields as string[] });
    }
  }
  return out;
}

export function schemaFromJson(json: string): Schema {
  const indexes = schemaIndexes(json);
  const declaredIndexes = new Map<string, Map<string, readonly string[]>>();
  for (const i of indexes) {
    const table = declaredIndexes.get(i.table) ?? new Map<string, readonly string[]>();
    declaredIndexes.set(i.table, table.set(i.name, i.fields));
  }
  return { json, validators: schemaValidatorsFromJson(json), indexes, declaredIndexes };
}

/** Evaluates a bundled `schema.js` in an isolate and returns its `export()` JSON. */
export async function evaluateSchema(module: ModuleSource): Promise<Schema> {
  const linked = await linkModules([{ ...module, path: "schema.js", environment: "isolate" }]);
  const runtime = await AppRuntime.create(linked, {
    isolates: 1,
    warmContexts: 0,
    contextReuse: false,
  });
  try {
    const json = await runtime.evaluateOnce<string>(
      `(() => { const s = __tessera_app.modules["schema.js"].default; if (!s || typeof s.export !== "function") throw new Error("schema.ts must export default defineSchema(…)"); return s.export(); })()`,
    );
    return schemaFromJson(json);
  } finally {
    runtime.dispose();
  }
}

/**
 * Gives the database the tables and indexes of the app it starts with,
 * before that app serves: its tables exist, each index the schema declares
 * is found by its name on its fields (a hidden index on them shown, else the
 * index built, the one of that name on other fields dropped), and the hidden
 * indexes that remain are dropped (a push's, left by a stop between its steps
 * or before the previous app retired). Waits until every index is backfilled.
 */
export async function applySchemaIndexes(db: Database, schema: Schema | null): Promise<void> {
  await db.run(async (tx) => {
    for (const table of schema?.validators.tables.keys() ?? []) tx.ensureTable(table);
    for (const index of schema?.indexes ?? []) {
      const current = liveIndex(tx, index);
      if (current !== undefined && sameFields(current.fields, index.fields)) continue;
      if (current !== undefined) await tx.dropIndex(index.table, index.name);
      if (tx.hiddenIndex(index.table, index.name, index.fields) !== undefined)
        await tx.showIndex(index.table, index.name, index.fields);
      else await tx.createIndex(index.table, index.name, index.fields);
    }
    await dropHiddenIndexes(tx, [schema]);
  });
  await db.waitForBackgroundWork();
}

/** The user index found by the name of `index` (whatever its fields), if any. */
export function liveIndex(tx: Transaction, index: SchemaIndex): IndexInfo | undefined {
  const table = tx.table(index.table);
  const live = table && tx.index(table, index.name);
  // A built-in one of that name is not the schema's (and creating it is refused).
  return live?.kind === "user" ? live : undefined;
}

/** Drops every hidden index that none of `schemas` declares on its fields. */
export async function dropHiddenIndexes(
  tx: Transaction,
  schemas: readonly (Schema | null)[],
): Promise<void> {
  for (const hidden of tx.currentCatalog.hiddenIndexes()) {
    const table = tx.currentCatalog.tableByNumber(hidden.tableNumber)!.name;
    if (!schemas.some((s) => declaresIndex(s, table, hidden.name, hidden.fields)))
      await tx.dropHiddenIndex(table, hidden.name, hidden.fields);
  }
}

/** Whether `schema` declares index `name` of `table` on exactly `fields`. */
export function declaresIndex(
  schema: Schema | null,
  table: string,
  name: string,
  fields: readonly string[],
): boolean {
  const declared = schema?.declaredIndexes.get(table)?.get(name);
  return declared !== undefined && sameFields(declared, fields);
}

export interface SchemaViolation {
  table: string;
  error: string;
}

/** A stored document's violation, worded as a push that finds it reports it. */
export function describeViolation(table: string, id: string, message: string): string {
  const detail = message.replace(
    /^Failed to insert or update a document in table "[^"]*" because it does not match the schema: /,
    "",
  );
  return `Document with ID "${id}" in table "${table}" does not match the schema: ${detail}`;
}

/** Documents checked per transaction when validating existing data. */
export const VALIDATION_PAGE = 1000;

/**
 * The first document that does not satisfy `schema`, checked page by page at
 * one snapshot; null when all do (or schema validation is off). The event
 * loop turns between pages: the store answers these reads synchronously, so
 * without that a push over a large table held every client until the last
 * page, twice per push (wait_for_schema, finish_push): 1.4 s each for 200,000
 * documents, ~7 µs per document, measured; a page takes 7–10 ms.
 */
export async function findSchemaViolation(
  db: Database,
  schema: Schema | null,
): Promise<SchemaViolation | null> {
  if (schema === null || !schema.validators.schemaValidation) return null;
  // Garbage collection runs between pages: the snapshot (the latest commit,
  // which may be older than the retention window on an idle deployment) can
  // leave the window once a commit comes. The check then starts again at the
  // newest one.
  for (let attempt = 1; ; attempt++) {
    try {
      return await violationAt(db, schema, db.latestTs());
    } catch (e) {
      if (!(e instanceof SnapshotTooOldError) || attempt === SNAPSHOT_ATTEMPTS) throw e;
    }
  }
}

/** Checks made before giving up when the snapshot keeps leaving the retention window. */
const SNAPSHOT_ATTEMPTS = 3;

async function violationAt(
  db: Database,
  schema: Schema,
  ts: bigint,
): Promise<SchemaViolation | null> {
  for (const table of schema.validators.tables.keys()) {
    let after: Buffer | undefined;
    for (;;) {
      const tx = await db.beginAt(ts);
      try {
        if (tx.table(table) === undefined) break;
        const ctx = new TransactionNames(tx);
        const scan = tx.query(table, "by_creation_time", [], "asc", after ? { after } : {});
        const docs = await scan.next(VALIDATION_PAGE);
        for (const doc of docs) {
          const e = validateWrite(schema.validators, table, doc as unknown as Value, ctx);
          if (e !== null) {
            const id = String((doc as { _id?: unknown })._id);
            return { table, error: describeViolation(table, id, e.message) };
          }
        }
        if (scan.done || docs.length === 0) break;
        after = scan.lastKey ?? undefined;
        if (after === undefined) break;
      } finally {
        tx.abort();
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
  return null;
}
