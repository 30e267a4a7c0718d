/**
 * The admin-only system queries the official CLI runs over the sync protocol
 * (`npx convex env list/get`, `data`, `function-spec`, `run`'s "did you
 * mean", the index-deletion check): implemented here in TypeScript rather
 * than in the isolate, as read-only functions of the query's transaction, so
 * that their read sets make subscriptions (`convex dev` watching the
 * environment variables) work like those of user queries.
 *
 * Result shapes follow what the CLI reads (convex 1.48, `src/cli/lib/env.ts`,
 * `data.ts`, `run.ts`, `functionSpec.ts`, `checkForLargeIndexDeletion.ts`).
 */
import {
  DatabaseError,
  TABLES_BY_NAME,
  type Transaction,
  TransactionLimitError,
} from "../database/index.js";
import type { ModuleSpec } from "../runtime/appRuntime.js";
import { modulePathOf } from "../runtime/modules.js";
import {
  decodeCursor,
  encodeCursor,
  pagedSource,
  parseQuery,
  QueryError,
  QueryStream,
} from "../runtime/queries.js";
import {
  type Document,
  fromJson,
  type JsonValue,
  type Value,
  ValueError,
} from "../values/index.js";
import { getEnvironmentVariable, listEnvironmentVariables } from "./environment.js";
import { type ValidatorJSON, validateArgs } from "./validators.js";

/** What a system query may know besides the database. */
export interface SystemQueryContext {
  /** The analysed modules of the running app (`AppRuntime.modules`). */
  modules: readonly ModuleSpec[];
  /** The deployment's API URL ("" if unknown). */
  deploymentUrl: string;
}

export type SystemQueryHandler = (
  tx: Transaction,
  args: Record<string, Value>,
  context: SystemQueryContext,
) => Promise<Value>;

export interface SystemQuery {
  /** Canonical path, `_system/cli/tables.js:default`. */
  path: string;
  args: ValidatorJSON;
  handler: SystemQueryHandler;
}

/** Why a system query failed, with the `FunctionError` kind the runner reports it as. */
export class SystemQueryError extends Error {
  override name = "SystemQueryError";
  constructor(
    message: string,
    readonly kind: "arguments" | "user",
  ) {
    super(message);
  }
}

// ---- argument validators (the JSON form of `v.*`) ----------------------------

const field = (fieldType: ValidatorJSON, optional = false) => ({ fieldType, optional });
const object = (value: Record<string, ReturnType<typeof field>>): ValidatorJSON => ({
  type: "object",
  value,
});
const string: ValidatorJSON = { type: "string" };
const number: ValidatorJSON = { type: "number" };
const nullable = (v: ValidatorJSON): ValidatorJSON => ({
  type: "union",
  value: [v, { type: "null" }],
});

/** `paginationOptsValidator` of `convex/server`. */
const paginationOpts = object({
  numItems: field(number),
  cursor: field(nullable(string)),
  endCursor: field(nullable(string), true),
  id: field(number, true),
  maximumRowsRead: field(number, true),
  maximumBytesRead: field(number, true),
});

// ---- helpers -----------------------------------------------------------------

/** Catalog tables: not data, never listed or read by these queries (as in the syscalls). */
const CATALOG_TABLES = new Set(["_tables", "_index"]);

/** A page stops early once it has read this much, well inside the transaction read limits. */
const MAX_PAGE_BYTES = 8 * 1024 * 1024;
const MAX_PAGE_DOCUMENTS = 16_000;

function numItemsOf(opts: Record<string, Value>): number {
  const n = opts.numItems as number;
  if (!Number.isInteger(n) || n < 0) {
    throw new SystemQueryError(
      `\`paginationOpts.numItems\` must be a non-negative integer, got ${n}`,
      "arguments",
    );
  }
  return n;
}

interface Page<T> {
  page: T[];
  isDone: boolean;
  continueCursor: string;
}

/** User tables (no `_` prefix), sorted by name; the cursor is the last name returned. */
async function tables(tx: Transaction, args: Record<string, Value>): Promise<Value> {
  const opts = args.paginationOpts as Record<string, Value>;
  const numItems = numItemsOf(opts);
  const after = opts.cursor as string | null;
  // Any table created or dropped changes the answer.
  tx.readSet.addRange(TABLES_BY_NAME, Buffer.alloc(0), null);
  const names = [...tx.currentCatalog.tablesByName.keys()]
    .filter((n) => !n.startsWith("_") && (after === null || n > after))
    .sort();
  const page = names.slice(0, numItems);
  const isDone = page.length === names.length;
  const result: Page<{ name: string }> = {
    page: page.map((name) => ({ name })),
    isDone,
    continueCursor: page.length > 0 ? page[page.length - 1]! : (after ?? ""),
  };
  return result as unknown as Value;
}

/**
 * Documents of a table in `_creationTime` order, with the cursors of
 * `1.0/queryPage` (a full table scan of that table in that order), so a
 * cursor of one page continues the next with no gap and no repeat.
 */
async function tableData(tx: Transaction, args: Record<string, Value>): Promise<Value> {
  const table = args.table as string;
  const order = args.order as "asc" | "desc";
  const opts = args.paginationOpts as Record<string, Value>;
  const numItems = numItemsOf(opts);
  const cursor = opts.cursor as string | null;
  const query = parseQuery({
    source: { type: "FullTableScan", tableName: table, order },
    operators: [],
  });
  const { index, fingerprint } = pagedSource(tx, query);
  const start = cursor === null ? null : decodeCursor(cursor, fingerprint);
  const endCursor = encodeCursor({ fingerprint, position: "end" });
  if (start?.position === "end" || CATALOG_TABLES.has(table)) {
    return { page: [], isDone: true, continueCursor: endCursor };
  }
  // An empty position means "from the start of the range".
  const after = start === null || start.position.length === 0 ? undefined : start.position;
  const stream = new QueryStream(tx, query, { after }, index);
  const page: Document[] = [];
  const bytesBefore = tx.counters.bytesRead;
  while (
    page.length < Math.min(numItems, MAX_PAGE_DOCUMENTS) &&
    tx.counters.bytesRead - bytesBefore < MAX_PAGE_BYTES
  ) {
    const doc = await stream.next();
    if (doc === null) break;
    page.push(doc);
  }
  let continueCursor: string;
  if (stream.sourceExhausted) continueCursor = endCursor;
  else {
    const last = stream.lastKey ?? start?.position ?? Buffer.alloc(0);
    continueCursor = encodeCursor({ fingerprint, position: last as Buffer });
  }
  return { page, isDone: stream.sourceExhausted, continueCursor };
}

const FUNCTION_TYPES = {
  query: "Query",
  mutation: "Mutation",
  action: "Action",
  httpAction: "HttpAction",
} as const;

/** A validator's JSON text as a Convex value (`v.any()` when absent or unreadable). */
function validatorValue(text: string | null): Value {
  if (text !== null) {
    try {
      const json = JSON.parse(text) as JsonValue;
      // Through `fromJson`, so a bigint literal's `{"$integer": …}` travels as the bigint it encodes.
      if (json !== null) return fromJson(json);
    } catch {
      // Fall through: an unreadable validator is described as `any`.
    }
  }
  return { type: "any" };
}

function apiSpec(context: SystemQueryContext): Value {
  const out: { identifier: string; value: Value }[] = [];
  for (const m of context.modules) {
    for (const f of m.functions) {
      const identifier = `${m.path}:${f.name}`;
      out.push({
        identifier,
        value: {
          identifier,
          functionType: FUNCTION_TYPES[f.kind],
          visibility: { kind: f.visibility },
          args: validatorValue(f.args),
          returns: validatorValue(f.returns),
        },
      });
    }
  }
  out.sort((a, b) => (a.identifier < b.identifier ? -1 : a.identifier > b.identifier ? 1 : 0));
  return out.map((e) => e.value);
}

// ---- the registry ------------------------------------------------------------

const QUERIES: Array<[path: string, args: ValidatorJSON, handler: SystemQueryHandler]> = [
  [
    "_system/cli/queryEnvironmentVariables:default",
    object({}),
    async (tx) => (await listEnvironmentVariables(tx)) as unknown as Value,
  ],
  [
    "_system/cli/queryEnvironmentVariables:get",
    object({ name: field(string) }),
    async (tx, args) => (await getEnvironmentVariable(tx, args.name as string)) as unknown as Value,
  ],
  ["_system/cli/tables:default", object({ paginationOpts: field(paginationOpts) }), tables],
  [
    "_system/cli/tableData:default",
    object({
      table: field(string),
      order: field({
        type: "union",
        value: [
          { type: "literal", value: "asc" },
          { type: "literal", value: "desc" },
        ],
      }),
      paginationOpts: field(paginationOpts),
    }),
    tableData,
  ],
  [
    "_system/cli/tableSize:default",
    object({ tableName: field(string) }),
    async (tx, args) => {
      const table = args.tableName as string;
      return CATALOG_TABLES.has(table) ? 0 : tx.count(table);
    },
  ],
  ["_system/cli/modules:apiSpec", object({}), async (_tx, _args, context) => apiSpec(context)],
  [
    "_system/cli/convexUrl:cloudUrl",
    object({}),
    async (_tx, _args, context) => context.deploymentUrl,
  ],
];

function canonicalPath(path: string): string {
  const { module, exportName } = modulePathOf(path);
  return `${module}:${exportName}`;
}

const REGISTRY = new Map<string, SystemQuery>(
  QUERIES.map(([path, args, handler]) => {
    const canonical = canonicalPath(path);
    return [canonical, { path: canonical, args, handler }];
  }),
);

/**
 * The system query at `path` (`_system/cli/tables`, `_system/cli/tables:default`
 * and `_system/cli/tables.js:default` are the same), or undefined.
 */
export function findSystemQuery(path: string): SystemQuery | undefined {
  if (!path.startsWith("_system/")) return undefined;
  return REGISTRY.get(canonicalPath(path));
}

/** The paths of every system query, canonical form (`_system/cli/tables.js:default`). */
export function systemQueryPaths(): string[] {
  return [...REGISTRY.keys()];
}

/**
 * Checks the arguments and runs a system query on `tx` (read-only). Bad
 * arguments and cursors are `SystemQueryError`s of kind "arguments"; a
 * database refusal (a limit, an invalid table name) one of kind "user".
 */
export async function runSystemQuery(
  query: SystemQuery,
  tx: Transaction,
  args: Value | undefined,
  context: SystemQueryContext,
): Promise<Value> {
  const argError = validateArgs(query.args, args, {
    tableNumberForName: (name) => tx.currentCatalog.table(name)?.number,
  });
  if (argError !== null) throw new SystemQueryError(argError.message, "arguments");
  try {
    return await query.handler(tx, (args ?? {}) as Record<string, Value>, context);
  } catch (e) {
    if (e instanceof QueryError) throw new SystemQueryError(e.message, "arguments");
    if (
      e instanceof DatabaseError ||
      e instanceof TransactionLimitError ||
      e instanceof ValueError
    ) {
      throw new SystemQueryError(e.message, "user");
    }
    throw e;
  }
}
