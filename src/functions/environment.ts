/**
 * The deployment's environment variables, kept as documents `{name, value}`
 * of the system table `_environment_variables` (indexed `by_name`). Being in
 * the database makes them durable, changed atomically with the rest of a
 * transaction, and readable at any snapshot with a read set — so a query
 * listing them (the CLI's `queryEnvironmentVariables`) is a subscription
 * like any other and re-runs when a variable changes.
 */
import type { CommitRecord, Database, Transaction } from "../database/index.js";
import type { Document } from "../values/index.js";

export const ENVIRONMENT_TABLE = "_environment_variables";
const BY_NAME = "by_name";
const SYSTEM = { system: true } as const;

/**
 * Limits documented at https://docs.convex.dev/production/environment-variables
 * (section "Setting environment variables"): up to 512 variables, names and
 * values together at most 512 KiB, names at most 256 characters, starting with
 * a letter and made of letters, digits and underscores, values at most 8 KiB.
 * Older revisions of that page said 100 variables and 40-character names;
 * we follow the current one.
 */
export const ENVIRONMENT_LIMITS = {
  maxVariables: 512,
  maxNameLength: 256,
  maxValueBytes: 8 * 1024,
  maxTotalBytes: 512 * 1024,
} as const;

const NAME = /^[a-zA-Z][a-zA-Z0-9_]*$/;

export interface EnvironmentVariable {
  name: string;
  value: string;
}

/** Sets `name` to `value`, or removes it when `value` is null. */
export interface EnvironmentChange {
  name: string;
  value: string | null;
}

export type EnvironmentErrorCode =
  | "InvalidEnvironmentVariableChanges"
  | "InvalidEnvironmentVariableName"
  | "InvalidEnvironmentVariableValue"
  | "EnvironmentVariableValueTooLarge"
  | "DuplicateEnvironmentVariable"
  | "TooManyEnvironmentVariables"
  | "EnvironmentVariablesTooLarge";

/** A refused change: the request was wrong (HTTP 400 with `{code, message}`). */
export class EnvironmentVariableError extends Error {
  override name = "EnvironmentVariableError";
  constructor(
    readonly code: EnvironmentErrorCode,
    message: string,
  ) {
    super(message);
  }
}

const bytes = (s: string) => Buffer.byteLength(s, "utf8");

function variableOf(doc: Document): EnvironmentVariable {
  return { name: doc.name as string, value: doc.value as string };
}

const byName = (a: EnvironmentVariable, b: EnvironmentVariable) =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : 0;

/** Whether the table exists and its `by_name` index can be read (recorded in the read set). */
function nameIndexUsable(tx: Transaction): boolean | undefined {
  const table = tx.table(ENVIRONMENT_TABLE);
  if (table === undefined) return undefined;
  return tx.index(table, BY_NAME)?.state === "enabled";
}

async function allDocuments(tx: Transaction): Promise<Document[]> {
  const usable = nameIndexUsable(tx);
  if (usable === undefined) return [];
  return tx.query(ENVIRONMENT_TABLE, usable ? BY_NAME : "by_creation_time").collect();
}

async function documentNamed(tx: Transaction, name: string): Promise<Document | null> {
  const usable = nameIndexUsable(tx);
  if (usable === undefined) return null;
  if (usable) {
    const [doc] = await tx
      .query(ENVIRONMENT_TABLE, BY_NAME, [{ type: "Eq", fieldPath: "name", value: name }])
      .next(1);
    return doc ?? null;
  }
  for await (const doc of tx.query(ENVIRONMENT_TABLE, "by_creation_time")) {
    if (doc.name === name) return doc;
  }
  return null;
}

/** Every variable, sorted by name. The whole table joins the read set. */
export async function listEnvironmentVariables(tx: Transaction): Promise<EnvironmentVariable[]> {
  return (await allDocuments(tx)).map(variableOf).sort(byName);
}

/** The variable called `name`, or null. Only that name joins the read set. */
export async function getEnvironmentVariable(
  tx: Transaction,
  name: string,
): Promise<EnvironmentVariable | null> {
  const doc = await documentNamed(tx, name);
  return doc === null ? null : variableOf(doc);
}

/** Checks the form of a batch of changes; throws `EnvironmentVariableError`. */
export function validateEnvironmentChanges(changes: unknown): EnvironmentChange[] {
  if (!Array.isArray(changes)) {
    throw new EnvironmentVariableError(
      "InvalidEnvironmentVariableChanges",
      "`changes` must be an array of {name, value} objects",
    );
  }
  const seen = new Set<string>();
  const out: EnvironmentChange[] = [];
  for (const [i, c] of changes.entries()) {
    if (typeof c !== "object" || c === null || Array.isArray(c)) {
      throw new EnvironmentVariableError(
        "InvalidEnvironmentVariableChanges",
        `Change ${i} must be an object {name, value}`,
      );
    }
    const { name, value } = c as { name?: unknown; value?: unknown };
    if (typeof name !== "string") {
      throw new EnvironmentVariableError(
        "InvalidEnvironmentVariableName",
        `Change ${i}: the environment variable name must be a string`,
      );
    }
    if (name.length === 0 || name.length > ENVIRONMENT_LIMITS.maxNameLength || !NAME.test(name)) {
      throw new EnvironmentVariableError(
        "InvalidEnvironmentVariableName",
        `Invalid environment variable name ${JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}…` : name)}: names must be 1 to ${ENVIRONMENT_LIMITS.maxNameLength} characters, start with a letter and contain only letters, digits and underscores`,
      );
    }
    if (seen.has(name)) {
      throw new EnvironmentVariableError(
        "DuplicateEnvironmentVariable",
        `Environment variable ${name} appears more than once in the same request`,
      );
    }
    seen.add(name);
    if (value !== null && typeof value !== "string") {
      throw new EnvironmentVariableError(
        "InvalidEnvironmentVariableValue",
        `The value of environment variable ${name} must be a string (or null to remove it)`,
      );
    }
    if (typeof value === "string") {
      if (!value.isWellFormed()) {
        throw new EnvironmentVariableError(
          "InvalidEnvironmentVariableValue",
          `The value of environment variable ${name} is not valid Unicode (it has an unpaired surrogate)`,
        );
      }
      const size = bytes(value);
      if (size > ENVIRONMENT_LIMITS.maxValueBytes) {
        throw new EnvironmentVariableError(
          "EnvironmentVariableValueTooLarge",
          `The value of environment variable ${name} is ${size} bytes, more than the limit of ${ENVIRONMENT_LIMITS.maxValueBytes} bytes (8 KiB)`,
        );
      }
    }
    out.push({ name, value });
  }
  return out;
}

/**
 * Applies a batch of changes in one transaction: all of them or, if any is
 * invalid or the result would break a limit, none. `value: null` removes a
 * variable (removing one that does not exist is not an error). Resolves with
 * the commit timestamp; throws `EnvironmentVariableError` for a refused batch.
 */
export async function applyEnvironmentChanges(
  db: Database,
  changes: readonly EnvironmentChange[],
): Promise<bigint> {
  const checked = validateEnvironmentChanges(changes);
  const { ts } = await db.run(async (tx) => {
    if (checked.length === 0) return;
    if (tx.table(ENVIRONMENT_TABLE) === undefined) {
      // Creates the table too; with no documents yet, the index is usable at once.
      await tx.createIndex(ENVIRONMENT_TABLE, BY_NAME, ["name"], SYSTEM);
    }
    for (const { name, value } of checked) {
      const existing = await documentNamed(tx, name);
      if (value === null) {
        if (existing !== null) await tx.delete(existing._id, SYSTEM);
      } else if (existing === null) {
        await tx.insert(ENVIRONMENT_TABLE, { name, value }, SYSTEM);
      } else if (existing.value !== value) {
        await tx.patch(existing._id, { value }, SYSTEM);
      }
    }
    const all = await allDocuments(tx);
    if (all.length > ENVIRONMENT_LIMITS.maxVariables) {
      throw new EnvironmentVariableError(
        "TooManyEnvironmentVariables",
        `A deployment can have at most ${ENVIRONMENT_LIMITS.maxVariables} environment variables; these changes would leave ${all.length}`,
      );
    }
    let total = 0;
    for (const d of all) total += bytes(d.name as string) + bytes(d.value as string);
    if (total > ENVIRONMENT_LIMITS.maxTotalBytes) {
      throw new EnvironmentVariableError(
        "EnvironmentVariablesTooLarge",
        `The environment variables of a deployment (names and values) can total at most ${ENVIRONMENT_LIMITS.maxTotalBytes} bytes (512 KiB); these changes would make ${total}`,
      );
    }
  });
  return ts;
}

/**
 * The current environment variables for executions (`process.env`), read
 * from the table once and kept until a commit writes to it. Executions use
 * the latest published values whatever their snapshot, except that a query
 * reading a snapshot with a change still syncing waits for it (`valuesAt`);
 * a mutation, which takes its snapshot only as it starts running, checks
 * afterwards that its values were its snapshot's (`staleFor`) and runs
 * again if not.
 */
export class EnvironmentCache {
  private values: Record<string, string> | null = null;
  private loading: Promise<Record<string, string>> | null = null;
  private readonly unsubscribe: () => void;
  /** Changes published since this cache was made: values taken at another count may be old. */
  private changes = 0;

  constructor(private readonly db: Database) {
    this.unsubscribe = db.onPublish((commits) => {
      if (this.changeIn(commits)) {
        this.values = null;
        this.loading = null;
        this.changes++;
      }
    });
  }

  /** What `staleFor` compares with: take it before taking the values (`current`, `load`). */
  get version(): number {
    return this.changes;
  }

  /**
   * Whether values taken at `version` may differ from those of the snapshot
   * at `ts`: a change was published since, or the snapshot holds one still
   * syncing (a read-write transaction begins at the latest written commit).
   */
  staleFor(version: number, ts: bigint): boolean {
    return version !== this.changes || this.changeIn(this.db.unpublishedCommits(ts));
  }

  /** Whether one of `commits` wrote to the table. */
  private changeIn(commits: readonly CommitRecord[]): boolean {
    // Every execution asks (valuesAt, staleFor), almost always with nothing unpublished.
    if (commits.length === 0) return false;
    const table = this.db.catalog.table(ENVIRONMENT_TABLE);
    if (table === undefined) return false;
    return commits.some((c) => c.keys.some((k) => k.tableNumber === table.number));
  }

  /**
   * The values for an execution reading the snapshot at `ts`. When that
   * snapshot holds a change not yet published (a query run ahead of a
   * commit's sync), the values are read once the change is published, so
   * that they are the snapshot's own.
   */
  async valuesAt(ts: bigint): Promise<Record<string, string>> {
    if (this.changeIn(this.db.unpublishedCommits(ts))) await this.db.whenPublished(ts);
    return this.current ?? this.load();
  }

  /** The values if they are loaded (no wait), else undefined. */
  get current(): Record<string, string> | undefined {
    return this.values ?? undefined;
  }

  /** The values, loaded if needed. */
  load(): Promise<Record<string, string>> {
    if (this.values !== null) return Promise.resolve(this.values);
    if (this.loading !== null) return this.loading;
    const tx = this.db.begin({ readOnly: true });
    const loading = listEnvironmentVariables(tx)
      .then((vars) => {
        const values: Record<string, string> = Object.create(null);
        for (const v of vars) values[v.name] = v.value;
        // Unless a commit changed the table meanwhile (which cleared `loading`).
        if (this.loading === loading) this.values = values;
        return values;
      })
      .finally(() => {
        tx.abort();
        if (this.loading === loading) this.loading = null;
      });
    this.loading = loading;
    return loading;
  }

  close(): void {
    this.unsubscribe();
  }
}

/**
 * Creates the environment variables table if the deployment has none yet, so
 * that a read of it is recorded before its first variable exists.
 */
export async function ensureEnvironmentTable(db: Database): Promise<void> {
  if (db.catalog.table(ENVIRONMENT_TABLE) !== undefined) return;
  await db.run(async (tx) => {
    if (tx.table(ENVIRONMENT_TABLE) === undefined)
      await tx.createIndex(ENVIRONMENT_TABLE, BY_NAME, ["name"], SYSTEM);
  });
  await db.waitForBackgroundWork();
}
