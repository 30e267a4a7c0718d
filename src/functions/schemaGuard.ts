/**
 * A schema held at commit time. The function runner validates each write as
 * it is made, against its own app's schema; that leaves out commits made by
 * other code: the previous app's mutations still running when a push
 * switches apps, and writers that are not functions. A guard validates what
 * those commits leave in the schema's tables, as they commit.
 */
import type { Database, Transaction } from "../database/index.js";
import type { Value } from "../values/index.js";
import { FunctionError } from "./runner.js";
import type { Schema } from "./schema.js";
import { type ValidationContext, validateWrite } from "./validators.js";

export interface SchemaViolation {
  table: string;
  error: string;
}

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
      ? db.addCommitCheck((tx) => this.check(tx, schema))
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

  private check(tx: Transaction, schema: Schema): Error | null {
    const validators = schema.validators;
    // Checked against this very schema as they were written (the app's own runner).
    if (tx.writesCheckedAgainst === validators) return null;
    let ctx: ValidationContext | null = null;
    for (const w of tx.writes.values()) {
      if (w.current === null) continue;
      const table = tx.currentCatalog.tableByNumber(w.tableNumber)?.name;
      if (table === undefined || !validators.tables.has(table)) continue;
      ctx ??= {
        tableNumberForName: (name) => tx.currentCatalog.table(name)?.number,
        tableNameForNumber: (n) => tx.currentCatalog.tableByNumber(n)?.name,
      };
      const e = validateWrite(validators, table, w.current as unknown as Value, ctx);
      if (e === null) continue;
      if (this.mode === "enforce") return new FunctionError(e.message, "user");
      this.found ??= { table, error: describeViolation(table, w.id, e.message) };
    }
    return null;
  }
}

/** A stored document's violation, as a push that finds it reports it. */
export function describeViolation(table: string, id: string, message: string): string {
  const detail = message.replace(
    /^Failed to insert or update a document in table "[^"]*" because it does not match the schema: /,
    "",
  );
  return `Document with ID "${id}" in table "${table}" does not match the schema: ${detail}`;
}
