/**
 * A schema held at commit time. The function runner validates each write as
 * it is made, against its own app's schema; that leaves out commits made by
 * other code: the previous app's mutations still running when a push
 * switches apps, and writers that are not functions. A guard validates what
 * those commits leave in the schema's tables, as they commit. It runs in the
 * database's commit loop, so a large commit it checks holds its batch that
 * long (only the old app's commits, while a push finishes and after it).
 */
import type { Database, Transaction } from "../database/index.js";
import type { Value } from "../values/index.js";
import { FunctionError } from "./runner.js";
import {
  describeViolation,
  findSchemaViolation,
  type Schema,
  type SchemaViolation,
} from "./schema.js";
import { type SchemaValidators, TransactionNames, validateWrite } from "./validators.js";

export class SchemaGuard {
  /** "watch": a violating commit goes ahead and the first one is kept in `violation`; "enforce": it fails. */
  private mode: "watch" | "enforce";
  private found: SchemaViolation | null = null;
  private readonly remove: () => void;

  /** Guards commits from now on: every commit after `db.writtenTs()` is checked. */
  constructor(db: Database, schema: Schema, mode: "watch" | "enforce") {
    this.mode = mode;
    const validators = schema.validators;
    this.remove = validators.schemaValidation
      ? db.addCommitCheck((tx) => this.check(tx, validators))
      : () => {};
  }

  /** The first violating commit seen while watching. */
  get violation(): SchemaViolation | null {
    return this.found;
  }

  enforce(): void {
    this.mode = "enforce";
  }

  dispose(): void {
    this.remove();
  }

  private check(tx: Transaction, validators: SchemaValidators): Error | null {
    // Checked against this very schema as they were written (the app's own runner).
    if (tx.writesCheckedAgainst === validators) return null;
    let names: TransactionNames | null = null;
    for (const w of tx.writes.values()) {
      if (w.current === null) continue;
      const table = tx.currentCatalog.tableByNumber(w.tableNumber)?.name;
      if (table === undefined || !validators.tables.has(table)) continue;
      names ??= new TransactionNames(tx);
      const e = validateWrite(validators, table, w.current as unknown as Value, names);
      if (e === null) continue;
      if (this.mode === "enforce") return new FunctionError(e.message, "user");
      this.found ??= { table, error: describeViolation(table, w.id, e.message) };
    }
    return null;
  }
}

/**
 * Checks the stored data against `schema`, and what commits meanwhile: a
 * watching guard is added first, and the check's snapshot is taken once every
 * commit accepted before it is published, so each commit is either in the
 * snapshot or seen by the guard. Returns the first violation found either way
 * (the guard is then disposed of), or, when there is none, the guard,
 * enforcing from that same step on: the caller goes ahead and must dispose of it.
 */
export async function holdSchema(
  db: Database,
  schema: Schema,
): Promise<{ violation: SchemaViolation } | { violation: null; guard: SchemaGuard }> {
  const guard = new SchemaGuard(db, schema, "watch");
  try {
    await db.whenPublished(db.writtenTs());
    const violation = (await findSchemaViolation(db, schema)) ?? guard.violation;
    if (violation !== null) {
      guard.dispose();
      return { violation };
    }
    guard.enforce();
    return { violation: null, guard };
  } catch (e) {
    guard.dispose();
    throw e;
  }
}
