/**
 * The syscalls of queries and mutations, answered from a database
 * transaction, with the argument and result JSON the official `convex/server`
 * library sends and expects (see node_modules/convex/src/server/impl/).
 * Ops that belong to later work answer `not supported yet: <op>`.
 */
import {
  DatabaseError,
  SnapshotTooOldError,
  type Transaction,
  TransactionLimitError,
} from "../database/index.js";
import {
  andThen,
  type Document,
  decodeDocumentId,
  fromJson,
  fromJsonOrUndefined,
  isPlainObject,
  type JsonValue,
  type MaybePromise,
  toJson,
  type Value,
  ValueError,
} from "../values/index.js";
import { AnswerWithAhead, JsonText, SyscallError, type SyscallHandler } from "./execution.js";
import { FilterError } from "./filters.js";
import { assertTableAccess, parseQuery, QueryError, QueryStream, queryPage } from "./queries.js";

/** A user identity as `ctx.auth.getUserIdentity()` returns it (already validated by the caller). */
export type UserIdentity = Record<string, Value> & {
  subject: string;
  issuer: string;
  tokenIdentifier: string;
};

/** What an execution scheduled so far, and the limits (`ctx.meta.getTransactionMetrics`). */
export interface SchedulerUsage {
  jobs: number;
  maxJobs: number;
  argsBytes: number;
  maxArgsBytes: number;
}

export interface UdfEnvironment {
  tx: Transaction;
  kind: "query" | "mutation";
  identity: UserIdentity | null;
  /** e.g. `messages:list`. */
  functionName: string;
  visibility: "public" | "internal";
  deployment: { name: string; region: string | null; class: "s16" | "s256" | "d1024" | "d2048" };
  /**
   * The deployment's environment variables, asked for the first time an
   * execution reads `process.env` (the caller records the read); none if absent.
   */
  environmentVariables?: () => Record<string, string>;
  /** `ctx.scheduler` of a mutation: writes a job in this transaction (`atSeconds`: Unix seconds). */
  scheduler?: {
    schedule(name: string, args: JsonValue, atSeconds: number): Promise<string>;
    cancel(id: string): Promise<void>;
    /** What this execution scheduled so far, against the limits. */
    usage(): SchedulerUsage;
  };
  /** `ctx.storage`: in this transaction (none: the storage ops are "not supported yet"). */
  storage?: StorageHooks;
}

/**
 * `ctx.storage` on the host (functions/storage.ts behind it). In queries and
 * mutations each call works in the execution's transaction; in actions each
 * is a transaction of its own. Refusals are `SyscallError`s.
 */
export interface StorageHooks {
  generateUploadUrl(): Promise<string>;
  getUrl(storageId: string): Promise<string | null>;
  getMetadata(storageId: string): Promise<{
    storageId: string;
    sha256: string;
    size: number;
    contentType: string | null;
  } | null>;
  delete(storageId: string): Promise<void>;
  /** A new file with these bytes; its storage ID. */
  store(bytes: Buffer, contentType: string | null, sha256?: string): Promise<string>;
  get(storageId: string): Promise<{ bytes: Buffer; contentType: string | null } | null>;
}

/** What `1.0/storage*` ops do with their JSON arguments (shared by queries, mutations and actions). */
export async function storageOp(
  storage: StorageHooks,
  op: string,
  a: Record<string, unknown>,
  canWrite: boolean,
): Promise<unknown> {
  const writing =
    op === "1.0/storageGenerateUploadUrl" ||
    op === "1.0/storageDelete" ||
    op === "1.0/storageStore";
  if (writing && !canWrite)
    throw new SyscallError("Can't write files in a query: only mutations and actions can");
  const id = (): string => {
    if (typeof a.storageId !== "string")
      throw new SyscallError(`Invalid argument \`storageId\` for ${op}: expected a string`);
    return a.storageId;
  };
  switch (op) {
    case "1.0/storageGenerateUploadUrl":
      return storage.generateUploadUrl();
    case "1.0/storageGetUrl":
      return storage.getUrl(id());
    case "1.0/storageGetMetadata":
      return storage.getMetadata(id());
    case "1.0/storageDelete":
      await storage.delete(id());
      return null;
    case "1.0/storageStore": {
      if (typeof a.blob !== "string")
        throw new SyscallError("Invalid argument `blob` for storage.store: expected base64 bytes");
      const type = typeof a.contentType === "string" && a.contentType !== "" ? a.contentType : null;
      const sha = typeof a.sha256 === "string" ? a.sha256 : undefined;
      return storage.store(Buffer.from(a.blob, "base64"), type, sha);
    }
    case "1.0/storageGet": {
      const file = await storage.get(id());
      return file === null
        ? null
        : { blob: file.bytes.toString("base64"), contentType: file.contentType };
    }
  }
  throw new SyscallError(`Unknown async operation ${op}`);
}

/** The storage ops `storageOp` answers. */
export const STORAGE_OPS: ReadonlySet<string> = new Set([
  "1.0/storageGenerateUploadUrl",
  "1.0/storageGetUrl",
  "1.0/storageGetMetadata",
  "1.0/storageDelete",
  "1.0/storageStore",
  "1.0/storageGet",
]);

/** Catalog tables are the database's own business: user code never sees them. */
const HIDDEN_TABLES = new Set(["_tables", "_index"]);

/**
 * Ops of later work in every kind of function (actions' file storage only
 * when the deployment has none), answered with a clear error instead of
 * "unknown".
 */
export const NOT_SUPPORTED_ANYWHERE: Readonly<Record<string, string>> = {
  "1.0/storageGenerateUploadUrl": "file storage",
  "1.0/storageGetUrl": "file storage",
  "1.0/storageGetMetadata": "file storage",
  "1.0/storageDelete": "file storage",
  "1.0/storageGet": "file storage",
  "1.0/storageStore": "file storage",
  "1.0/createFunctionHandle": "function handles",
  "1.0/getServiceUrl": "service URLs",
  "1.0/createServiceToken": "service tokens",
  "1.0/actions/vectorSearch": "vector search",
};

/** Ops of later work in queries and mutations. */
const NOT_SUPPORTED: Readonly<Record<string, string>> = {
  ...NOT_SUPPORTED_ANYWHERE,
  "1.0/runUdf": "ctx.runQuery / ctx.runMutation inside queries and mutations",
  "1.0/auditLog": "audit logs",
  "1.0/getRequestMetadata": "request metadata",
  "1.0/signJwt": "signing JWTs",
  "1.0/actions/query": "actions",
  "1.0/actions/mutation": "actions",
  "1.0/actions/action": "actions",
  "1.0/actions/schedule": "actions",
  "1.0/actions/cancel_job": "actions",
};

/** The error for an op nothing answers: "not supported yet" when it is in `later`, else `unknown`. */
export function unansweredOp(
  op: string,
  later: Readonly<Record<string, string>>,
  unknown: string,
): SyscallError {
  return op in later
    ? new SyscallError(`not supported yet: ${later[op]} (${op})`)
    : new SyscallError(unknown);
}

/** Turns what the database throws into what user code may see. */
export function translate(e: unknown): unknown {
  if (e instanceof TransactionLimitError || e instanceof SnapshotTooOldError) {
    return new SyscallError(e.message, undefined, true);
  }
  if (
    e instanceof DatabaseError ||
    e instanceof ValueError ||
    e instanceof QueryError ||
    e instanceof FilterError
  ) {
    return new SyscallError(e.message);
  }
  return e;
}

function argsObject(args: unknown, op: string): Record<string, unknown> {
  if (!isPlainObject(args)) throw new SyscallError(`Invalid arguments for ${op}`);
  return args;
}

function idArg(json: unknown, what: string): string {
  const id = fromJson(json);
  if (typeof id !== "string")
    throw new SyscallError(`Invalid argument \`id\` for \`${what}\`: expected a string`);
  return id;
}

function optionalTable(args: Record<string, unknown>): string | undefined {
  const t = args.table;
  if (t === undefined || t === null) return undefined;
  if (typeof t !== "string") throw new SyscallError("Invalid table name");
  return t;
}

/** The state of one execution's syscalls; the op tables below are shared by all executions. */
interface UdfState {
  readonly env: UdfEnvironment;
  readonly tx: Transaction;
  readonly streams: Map<number, QueryStream>;
  nextQueryId: number;
  readonly mutation: boolean;
  /** A `.paginate()` ran already (Convex allows one per execution). */
  paginated: boolean;
}

/** The table an ID points at, checking `db.get` vs `db.system.get` and an explicit table name. */
function tableFor(
  tx: Transaction,
  id: string,
  table: string | undefined,
  isSystem: boolean,
  what: string,
): string | null {
  let tableName: string | undefined;
  try {
    tableName = tx.tableOfId(id)?.name;
  } catch (e) {
    if (e instanceof ValueError)
      throw new SyscallError(`Invalid argument \`id\` for \`${what}\`: ${e.message}`);
    throw e;
  }
  if (table !== undefined && tableName !== undefined && table !== tableName) {
    throw new SyscallError(
      `Invalid argument \`id\` for \`${what}\`: ID ${JSON.stringify(id)} belongs to table ${JSON.stringify(tableName)}, not ${JSON.stringify(table)}`,
    );
  }
  if (tableName === undefined || HIDDEN_TABLES.has(tableName)) return null;
  assertTableAccess(tableName, isSystem, what.replace(/^db\./, "").replace(/^system\./, ""));
  return tableName;
}

function startQuery(args: Record<string, unknown>): ParsedQueryWithTable {
  const query = parseQuery(args.query);
  if (HIDDEN_TABLES.has(query.source.table))
    throw new SyscallError(`Table ${query.source.table} not found`);
  return query;
}

/**
 * The JSON text of documents shared through the document cache, by the
 * (frozen, never changed) object: a document read again and again — every
 * re-run of a watched query reads the same ones — is encoded once.
 */
const sharedDocumentJson = new WeakMap<Document, JsonText>();

/** A document's wire form as JSON text. */
function documentJson(doc: Document): JsonText {
  if (!Object.isFrozen(doc)) return new JsonText(JSON.stringify(toJson(doc)));
  let json = sharedDocumentJson.get(doc);
  if (json === undefined) {
    json = new JsonText(JSON.stringify(toJson(doc)));
    sharedDocumentJson.set(doc, json);
  }
  return json;
}

/** Most documents a `queryStreamNext` answer carries for the calls after it. */
const MAX_AHEAD = 64;
/** Most bytes of documents read ahead for one `queryStreamNext` answer. */
const MAX_AHEAD_BYTES = 1024 * 1024;

const SYNC_OPS: Record<string, (s: UdfState, a: Record<string, unknown>) => unknown> = {
  // Tessera's own: `process.env` (the bootstrap asks once per execution).
  "tessera/env": (s) => s.env.environmentVariables?.() ?? {},
  "1.0/queryStream": (s, a) => {
    const id = s.nextQueryId++;
    s.streams.set(id, new QueryStream(s.tx, startQuery(a)));
    return { queryId: id };
  },
  "1.0/queryCleanup": (s, a) => s.streams.delete(a.queryId as number),
  "1.0/db/normalizeId": (s, a) => {
    const table = a.table;
    const idString = a.idString;
    if (typeof table !== "string" || typeof idString !== "string")
      throw new SyscallError("Invalid arguments for normalizeId");
    let id: string | null = null;
    try {
      const { tableNumber } = decodeDocumentId(idString);
      if (!HIDDEN_TABLES.has(table) && s.tx.table(table)?.number === tableNumber) id = idString;
    } catch (e) {
      if (!(e instanceof ValueError)) throw e;
    }
    return { id };
  },
  "1.0/getSnapshotTs": (s) => toJson(s.tx.beginTs),
};

/**
 * The async ops. Each answers at once when the transaction can (reads that
 * storage answers at once, writes), so that the execution gets the answer
 * without leaving the isolate (see execution.ts), and with a promise when not.
 */
const ASYNC_OPS: Record<
  string,
  (s: UdfState, a: Record<string, unknown>) => MaybePromise<unknown>
> = {
  "1.0/get": (s, a) => {
    const id = idArg(a.id, "db.get");
    const table = tableFor(s.tx, id, optionalTable(a), a.isSystem === true, "db.get");
    if (table === null) return null;
    return andThen(s.tx.get(id), (doc) => (doc === null ? null : documentJson(doc)));
  },
  "1.0/insert": (s, a) => {
    if (!s.mutation)
      throw new SyscallError("Can't insert documents in a query: only mutations can write");
    if (typeof a.table !== "string")
      throw new SyscallError("Invalid argument `table` for `db.insert`");
    if (a.table.startsWith("_"))
      throw new SyscallError("System tables (prefixed with `_`) are read-only.");
    const value = fromJson(a.value);
    return andThen(s.tx.insert(a.table, value), (id) => ({ _id: id }));
  },
  "1.0/shallowMerge": (s, a) => {
    if (!s.mutation)
      throw new SyscallError("Can't patch documents in a query: only mutations can write");
    const id = idArg(a.id, "db.patch");
    if (tableFor(s.tx, id, optionalTable(a), false, "db.patch") === null) {
      throw new SyscallError(
        `Document with ID ${JSON.stringify(id)} does not exist, so it cannot be patched`,
      );
    }
    if (!isPlainObject(a.value)) throw new SyscallError("The value of a patch must be an object");
    const value: Record<string, Value | undefined> = {};
    for (const [k, v] of Object.entries(a.value)) value[k] = fromJsonOrUndefined(v);
    return andThen(s.tx.patch(id, value), () => null);
  },
  "1.0/replace": (s, a) => {
    if (!s.mutation)
      throw new SyscallError("Can't replace documents in a query: only mutations can write");
    const id = idArg(a.id, "db.replace");
    if (tableFor(s.tx, id, optionalTable(a), false, "db.replace") === null) {
      throw new SyscallError(
        `Document with ID ${JSON.stringify(id)} does not exist, so it cannot be replaced`,
      );
    }
    return andThen(s.tx.replace(id, fromJson(a.value)), () => null);
  },
  "1.0/remove": (s, a) => {
    if (!s.mutation)
      throw new SyscallError("Can't delete documents in a query: only mutations can write");
    const id = idArg(a.id, "db.delete");
    if (tableFor(s.tx, id, optionalTable(a), false, "db.delete") === null) {
      throw new SyscallError(
        `Document with ID ${JSON.stringify(id)} does not exist, so it cannot be deleted`,
      );
    }
    return andThen(s.tx.delete(id), () => null);
  },
  "1.0/queryStreamNext": (s, a) => {
    const stream = s.streams.get(a.queryId as number);
    if (stream === undefined) throw new SyscallError("This query was already closed");
    // An error met while reading ahead belongs to the call that reaches it.
    if (stream.failure !== undefined) {
      const failure = stream.failure;
      stream.failure = undefined;
      throw failure;
    }
    // The answer carries the documents of the next calls too (the bootstrap
    // answers those without a round trip): 1, 2, 4, … up to 64 more, so a
    // loop left early has read at most about as many again as it consumed.
    // Not near the read limits: what is read ahead counts as read.
    const answers: Array<{ value: JsonValue; done: boolean } | JsonText> = [];
    const wanted = 1 + stream.ahead;
    stream.ahead = Math.min(stream.ahead * 2, MAX_AHEAD);
    const { counters, limits } = s.tx;
    const bytesBefore = counters.bytesRead;
    const answer = () =>
      answers.length === 1 ? answers[0] : new AnswerWithAhead(answers[0], answers.slice(1));
    const failed = (e: unknown) => {
      if (answers.length === 0) throw e;
      stream.failure = e;
      return answer();
    };
    /** Adds the answer `doc` gives; whether the stream goes on. */
    const took = (doc: Document | null): boolean => {
      if (doc === null) {
        s.streams.delete(a.queryId as number);
        answers.push({ value: null, done: true });
        return false;
      }
      answers.push(new JsonText(`{"value":${documentJson(doc).text},"done":false}`));
      return true;
    };
    const fill = (): MaybePromise<unknown> => {
      while (answers.length < wanted) {
        if (
          answers.length > 0 &&
          (counters.documentsRead * 2 > limits.maxDocumentsRead ||
            counters.bytesRead * 2 > limits.maxBytesRead ||
            counters.bytesRead - bytesBefore > MAX_AHEAD_BYTES)
        )
          break;
        let doc: MaybePromise<Document | null>;
        try {
          doc = stream.next();
        } catch (e) {
          return failed(e);
        }
        if (doc instanceof Promise) return doc.then((d) => (took(d) ? fill() : answer()), failed);
        if (!took(doc)) break;
      }
      return answer();
    };
    return fill();
  },
  "1.0/queryPage": (s, a) => {
    if (s.paginated)
      throw new SyscallError(
        "A function execution may run only one paginated query (`.paginate()`), as in Convex; split the work into separate queries",
      );
    const query = startQuery(a);
    s.paginated = true;
    const page = queryPage(s.tx, query, {
      cursor: (a.cursor as string | null | undefined) ?? null,
      endCursor: (a.endCursor as string | null | undefined) ?? null,
      pageSize: a.pageSize as number,
      maximumRowsRead: (a.maximumRowsRead as number | null | undefined) ?? null,
    });
    return andThen(page, (result) => ({ ...result, page: result.page.map((d) => toJson(d)) }));
  },
  "1.0/count": async (s, a) => {
    if (typeof a.table !== "string" || HIDDEN_TABLES.has(a.table))
      throw new SyscallError("Invalid table for count");
    return s.tx.count(a.table);
  },
  "1.0/schedule": async (s, a) => {
    const scheduler = s.env.scheduler;
    if (!s.mutation || scheduler === undefined)
      throw new SyscallError("Can't schedule functions in a query: only mutations and actions can");
    if (typeof a.name !== "string")
      throw new SyscallError(
        a.functionHandle !== undefined || a.reference !== undefined
          ? "not supported yet: scheduling function handles and component functions"
          : "Invalid arguments for scheduler.runAfter/runAt: expected a function name",
      );
    if (typeof a.ts !== "number") throw new SyscallError("Invalid scheduled time");
    return scheduler.schedule(a.name, (a.args ?? {}) as JsonValue, a.ts);
  },
  "1.0/cancel_job": async (s, a) => {
    const scheduler = s.env.scheduler;
    if (!s.mutation || scheduler === undefined)
      throw new SyscallError("Can't cancel scheduled functions in a query");
    await scheduler.cancel(idArg(a.id, "scheduler.cancel"));
    return null;
  },
  "1.0/getUserIdentity": (s) => (s.env.identity === null ? null : toJson(s.env.identity)),
  "1.0/getTransactionMetrics": (s) => {
    const c = s.tx.counters;
    const l = s.tx.limits;
    const metric = (used: number, limit: number) => ({
      used,
      remaining: Math.max(0, limit - used),
    });
    // Queries schedule nothing; files are read and written only by actions.
    const none = { used: 0, remaining: 0 };
    const scheduled = s.env.scheduler?.usage();
    return {
      bytesRead: metric(c.bytesRead, l.maxBytesRead),
      bytesWritten: metric(c.bytesWritten, l.maxBytesWritten),
      databaseQueries: metric(c.indexRanges, l.maxIndexRanges),
      documentsRead: metric(c.documentsRead, l.maxDocumentsRead),
      documentsWritten: metric(c.documentsWritten, l.maxDocumentsWritten),
      functionsScheduled:
        scheduled === undefined ? none : metric(scheduled.jobs, scheduled.maxJobs),
      scheduledFunctionArgsBytes:
        scheduled === undefined ? none : metric(scheduled.argsBytes, scheduled.maxArgsBytes),
      filesWritten: none,
      fileWriteBytes: none,
      filesRead: none,
      fileReadBytes: none,
    };
  },
  "1.0/getFunctionMetadata": (s) => ({ name: s.env.functionName, componentPath: "" }),
  "1.0/getDeploymentMetadata": (s) => toJson(s.env.deployment as unknown as Value),
};

export function udfSyscalls(env: UdfEnvironment): SyscallHandler {
  const state: UdfState = {
    env,
    tx: env.tx,
    streams: new Map(),
    nextQueryId: 1,
    mutation: env.kind === "mutation",
    paginated: false,
  };
  return new UdfSyscalls(state);
}

class UdfSyscalls implements SyscallHandler {
  constructor(private readonly state: UdfState) {}

  sync(op: string, args: unknown): unknown {
    const f = SYNC_OPS[op];
    if (f === undefined) throw unansweredOp(op, NOT_SUPPORTED, `Unknown operation ${op}`);
    try {
      return f(this.state, argsObject(args, op));
    } catch (e) {
      throw translate(e);
    }
  }

  async(op: string, args: unknown): MaybePromise<unknown> {
    const storage = this.state.env.storage;
    const f =
      ASYNC_OPS[op] ??
      (storage !== undefined && STORAGE_OPS.has(op)
        ? (s: UdfState, a: Record<string, unknown>) => storageOp(storage, op, a, s.mutation)
        : undefined);
    if (f === undefined) throw unansweredOp(op, NOT_SUPPORTED, `Unknown async operation ${op}`);
    let result: MaybePromise<unknown>;
    try {
      result = f(this.state, argsObject(args, op));
    } catch (e) {
      throw translate(e);
    }
    return result instanceof Promise
      ? result.catch((e) => {
          throw translate(e);
        })
      : result;
  }
}

type ParsedQueryWithTable = ReturnType<typeof parseQuery>;
