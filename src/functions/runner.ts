/**
 * Runs an app's queries and mutations: resolves the function, checks its
 * arguments, executes it in a fresh isolate context against a transaction,
 * checks its return value, and for mutations commits — re-running the whole
 * function on optimistic-concurrency conflicts, a bounded number of times.
 */
import { randomBytes } from "node:crypto";
import {
  type Catalog,
  ConflictError,
  type Database,
  DatabaseError,
  type ReadSet,
  type Transaction,
} from "../database/index.js";
import { type ActionEnvironment, actionSyscalls } from "../runtime/actionSyscalls.js";
import type { AppRuntime, FunctionSpec } from "../runtime/appRuntime.js";
import {
  ACTION_TIME_LIMIT_MS,
  type ExecutionError,
  execute,
  type LogLine,
  SyscallError,
} from "../runtime/execution.js";
import { type HttpExchange, httpActionSyscalls } from "../runtime/httpStreams.js";
import { modulePathOf } from "../runtime/modules.js";
import type { NodeExecutor } from "../runtime/nodeExecutor.js";
import { StackMapper } from "../runtime/sourceMaps.js";
import {
  type SchedulerUsage,
  type StorageHooks,
  type UdfEnvironment,
  type UserIdentity,
  udfSyscalls,
} from "../runtime/syscalls.js";
import {
  type Document,
  fromJson,
  type JsonValue,
  stringifyValue,
  toJson,
  type Value,
  ValueError,
} from "../values/index.js";
import { type ContentionLane, ContentionLanes } from "./contention.js";
import { ENVIRONMENT_TABLE, type EnvironmentCache } from "./environment.js";
import { cancelJob, ScheduleBudget, SchedulerError, scheduleJob } from "./scheduler.js";
import type { Schema } from "./schema.js";
import { type FileStorage, isStorageRefusal } from "./storage.js";
import {
  findSystemQuery,
  runSystemQuery,
  type SystemQuery,
  SystemQueryError,
} from "./systemQueries.js";
import {
  parseArgsValidator,
  parseReturnsValidator,
  type SchemaValidators,
  TransactionNames,
  type ValidationContext,
  type ValidatorJSON,
  validateArgs,
  validateReturns,
  validateWrite,
} from "./validators.js";

/**
 * A fresh 128-bit seed per execution. Drawn from a pooled buffer: a
 * `randomBytes` call per execution cost ~4% of a point-read query's time.
 */
const SEED_BYTES = 16;
let seedPool = Buffer.alloc(0);
let seedOffset = 0;
function executionSeed(): string {
  if (seedOffset + SEED_BYTES > seedPool.length) {
    seedPool = randomBytes(SEED_BYTES * 256);
    seedOffset = 0;
  }
  const seed = seedPool.toString("hex", seedOffset, seedOffset + SEED_BYTES);
  seedOffset += SEED_BYTES;
  return seed;
}

export type FunctionKind = "query" | "mutation" | "action" | "httpAction";

/** The module whose default export routes HTTP actions. */
const HTTP_MODULE = "http.js";

/**
 * An HTTP request for an HTTP action: its body base64 (null for none), or
 * `streamed`, read through the exchange (httpStreams.ts) as the action's
 * `request.body` is pulled.
 */
export interface HttpRequestMessage {
  method: string;
  /** The full URL. */
  url: string;
  /** The path the router matches. */
  path: string;
  headers: [string, string][];
  body: string | null;
  streamed?: boolean;
}

/**
 * An HTTP action's response: its body base64 (null for none), or
 * `streamed`: status, headers and body already went through the exchange
 * (`aborted`: the client went away before the end).
 */
export interface HttpResponseMessage {
  status: number;
  statusText: string;
  headers: [string, string][];
  body: string | null;
  streamed?: boolean;
  aborted?: boolean;
}

/** Why a function call failed; `message` is what its caller sees. */
export type FunctionErrorKind =
  | "notFound"
  | "arguments"
  | "returns"
  | "user"
  | "timeout"
  | "memory"
  | "conflict"
  | "internal";

/** A mutation ran with environment values older than its snapshot (see `EnvironmentCache.staleFor`). */
class StaleEnvironment extends Error {
  constructor(readonly tx: Transaction) {
    super("The mutation ran with environment variables older than its snapshot");
  }
}

export class FunctionError extends Error {
  override name = "FunctionError";
  /** Queries: what the query had read when it failed. */
  readSet?: ReadSet;
  constructor(
    message: string,
    readonly kind: FunctionErrorKind,
    readonly logs: LogLine[] = [],
    /** For a `ConvexError`: its data, as a Convex value. */
    readonly data?: Value,
    /** Stack trace mapped to the user's source files, when there is one. */
    readonly userStack?: string,
  ) {
    super(message);
  }
}

export interface CallOptions {
  identity?: UserIdentity | null;
  /** Queries: the snapshot to read (default: the latest). */
  ts?: bigint;
  /** Queries: a read-only transaction to read in instead (ended by the call), e.g. from `Database.beginWritten`. */
  snapshot?: Transaction;
  /** Internal functions may only be called by other functions and admins. */
  allowInternal?: boolean;
  /** Mutations: runs in the transaction after the function succeeded, before the commit (the scheduler's bookkeeping). */
  beforeCommit?: (tx: Transaction) => Promise<void>;
  /**
   * Mutations: the client's request, whose answer (`encode` of the result)
   * is stored with the commit so that a resend after a server restart is
   * answered from there (`Database.mutationAnswer`).
   */
  request?: {
    client: string;
    requestId: number;
    encode: (result: { value: Value; logs: LogLine[] }) => string;
  };
}

export interface CallResult {
  value: Value;
  logs: LogLine[];
  /** The snapshot a query read, or the commit timestamp of a mutation. */
  ts: bigint;
  /** Queries: what the query read, for subscriptions and caching. */
  readSet?: ReadSet;
}

interface ResolvedFunction {
  spec: FunctionSpec;
  module: string;
  exportName: string;
  args: ValidatorJSON;
  returns: ValidatorJSON | null;
}

export interface RunnerOptions {
  db: Database;
  runtime: AppRuntime;
  schema?: Schema | null;
  deploymentName?: string;
  /** Attempts of a mutation before an OCC conflict is reported (default 12). */
  maxAttempts?: number;
  /** User-code time limit per execution (default 1000 ms). */
  timeLimitMs?: number;
  /** The Node.js runtime of the app's "use node" modules, if it has any. */
  nodeExecutor?: NodeExecutor;
  /** Isolates for actions (default: `runtime`'s; a separate pool keeps long actions from holding up the rest). */
  actionRuntime?: AppRuntime;
  /** Wall-clock limit of an action (default 10 minutes). */
  actionTimeLimitMs?: number;
  /** The deployment's environment variables for `process.env` (none: empty). */
  environment?: EnvironmentCache;
  /** Told of every finished query and mutation (the committed attempt of a mutation), for function logs. */
  onExecution?: (record: ExecutionRecord) => void;
  /** The deployment's API URL, for the `_system/cli/convexUrl:cloudUrl` system query (read when asked: servers learn their port late). */
  deploymentUrl?: string | (() => string);
  /** `ctx.storage` (none: the storage ops are "not supported yet"); file URLs are on `deploymentUrl`. */
  storage?: FileStorage;
  /** Counts kept across runners (a push replaces the runner, not the counts). */
  counters?: MutationCounters;
}

/** How mutations fared: commits, and attempts re-run because they conflicted. */
export interface MutationCounters {
  committed: number;
  conflicts: number;
}

/** One function call as the logs show it. */
export interface ExecutionRecord {
  kind: FunctionKind;
  /** The function path as called (`messages:list`). */
  path: string;
  startedAtMs: number;
  durationMs: number;
  logs: LogLine[];
  /** The error message of a failed call. */
  error: string | null;
}

export class FunctionRunner {
  private readonly lanes = new ContentionLanes();
  private readonly resolved = new Map<string, ResolvedFunction>();
  private readonly stacks: StackMapper;

  constructor(private readonly options: RunnerOptions) {
    this.stacks = new StackMapper(options.runtime.app.sourceMap);
  }

  /** Table names and numbers as the latest catalog has them (before a transaction exists). */
  private catalogContext(): ValidationContext {
    return new CatalogNames(this.options.db.catalog);
  }

  private validationContext(tx: Transaction): ValidationContext {
    return new TransactionNames(tx);
  }

  /** The kind of the function at `path`, or undefined if there is none. */
  kindOf(path: string): FunctionSpec["kind"] | undefined {
    try {
      const { module, exportName } = modulePathOf(path);
      return this.functionSpec(module, exportName)?.kind;
    } catch {
      return undefined;
    }
  }

  /** A function's analysis, from the isolate modules or the "use node" modules. */
  private functionSpec(module: string, exportName: string): FunctionSpec | undefined {
    return (
      this.options.runtime.functionSpec(module, exportName) ??
      this.options.nodeExecutor?.modules
        .find((m) => m.path === module)
        ?.functions.find((f) => f.name === exportName)
    );
  }

  /** Whether a module is a "use node" one. */
  private isNodeModule(module: string): boolean {
    return this.options.nodeExecutor?.modules.some((m) => m.path === module) ?? false;
  }

  /** Finds a function by path (`file:export`, `dir/file:export`, default export without colon). */
  private resolve(path: string, kind: FunctionKind, options: CallOptions): ResolvedFunction {
    const key = `${kind}:${path}`;
    let r = this.resolved.get(key);
    if (r === undefined) {
      const { module, exportName } = modulePathOf(path);
      const spec = this.functionSpec(module, exportName);
      if (spec === undefined) {
        throw new FunctionError(
          `Could not find public function for '${path}'. Did you forget to run \`npx convex dev\` or \`npx convex deploy\`?`,
          "notFound",
        );
      }
      if (spec.kind !== kind) {
        throw new FunctionError(
          `Trying to execute ${path} as ${kind === "query" ? "Query" : kind === "mutation" ? "Mutation" : "Action"}, but it is defined as ${spec.kind === "query" ? "Query" : spec.kind === "mutation" ? "Mutation" : spec.kind === "action" ? "Action" : "HTTP action"}.`,
          "notFound",
        );
      }
      if (spec.error !== undefined) throw new FunctionError(spec.error, "internal");
      r = {
        spec,
        module,
        exportName,
        args: parseArgsValidator(spec.args ?? '{"type":"any"}'),
        returns: spec.returns === null ? null : parseReturnsValidator(spec.returns),
      };
      this.resolved.set(key, r);
    }
    if (r.spec.visibility === "internal" && options.allowInternal !== true) {
      throw new FunctionError(
        `Could not find public function for '${path}'. Did you forget to run \`npx convex dev\` or \`npx convex deploy\`?`,
        "notFound",
      );
    }
    return r;
  }

  /** Runs a query at the latest snapshot. */
  async query(
    path: string,
    args: Value | undefined,
    options: CallOptions = {},
  ): Promise<CallResult> {
    // Admin-only system queries (systemQueries.ts); to anyone else they do not exist.
    const system = path.startsWith("_system/") ? findSystemQuery(path) : undefined;
    const fn =
      system === undefined || options.allowInternal !== true
        ? this.resolve(path, "query", options)
        : null;
    const tx =
      options.snapshot ??
      (options.ts === undefined
        ? this.options.db.begin({ readOnly: true })
        : await this.options.db.beginAt(options.ts));
    const started = Date.now();
    try {
      const value =
        fn === null
          ? await this.runSystemQuery(system!, args, tx)
          : await this.runOnce(fn, path, "query", args, tx, options);
      if (fn !== null) this.report("query", path, started, value.logs, null);
      return { value: value.value, logs: value.logs, ts: tx.beginTs, readSet: tx.readSet };
    } catch (e) {
      // A failure depends on what was read too: a subscription re-runs the query when that changes.
      if (e instanceof FunctionError) {
        e.readSet = tx.readSet;
        if (fn !== null) this.report("query", path, started, e.logs, e.message);
      }
      throw e;
    } finally {
      tx.abort();
    }
  }

  /**
   * Runs an action: in the actions runtime (its own isolates, so that long
   * actions never hold up queries and mutations), with real time, timers and
   * `fetch`; its `ctx.runQuery` / `runMutation` / `runAction` each run as
   * their own call, as the same identity, internal functions allowed.
   */
  async action(
    path: string,
    args: Value | undefined,
    options: CallOptions = {},
  ): Promise<CallResult> {
    const fn = this.resolve(path, "action", options);
    const started = Date.now();
    try {
      const argError = validateArgs(fn.args, args, this.catalogContext());
      if (argError !== null) throw new FunctionError(argError.message, "arguments");
      const environment = this.options.environment;
      const envValues =
        environment === undefined ? undefined : (environment.current ?? (await environment.load()));
      const env = this.actionEnvironment(options.identity ?? null, path, envValues);
      const argsJson = stringifyValue(args === undefined ? {} : args);
      const timeLimitMs = this.options.actionTimeLimitMs ?? ACTION_TIME_LIMIT_MS;
      const node = this.options.nodeExecutor;
      const outcome =
        node !== undefined && this.isNodeModule(fn.module)
          ? await node.run(
              {
                module: fn.module,
                exportName: fn.exportName,
                argsJson,
                requestId: executionSeed(),
              },
              actionSyscalls(env),
              timeLimitMs,
            )
          : await execute(
              this.options.actionRuntime ?? this.options.runtime,
              {
                kind: "action",
                module: fn.module,
                exportName: fn.exportName,
                argsJson,
                seed: executionSeed(),
                nowMs: Date.now(),
                timeLimitMs,
              },
              actionSyscalls(env),
            );
      if (!outcome.ok) throw this.userError(outcome.error, outcome.logs);
      const value = fromJson(outcome.value as JsonValue);
      const returnsError = validateReturns(fn.returns, value, this.catalogContext());
      if (returnsError !== null)
        throw new FunctionError(returnsError.message, "returns", outcome.logs);
      this.report("action", path, started, outcome.logs, null);
      return { value, logs: outcome.logs, ts: this.options.db.latestTs() };
    } catch (e) {
      if (e instanceof FunctionError) this.report("action", path, started, e.logs, e.message);
      throw e;
    }
  }

  /** Whether the app routes HTTP actions (has `convex/http.ts`). */
  get servesHttp(): boolean {
    return this.options.runtime.app.modulePaths.includes(HTTP_MODULE);
  }

  /**
   * Runs the HTTP action `http.ts` routes `request` to, as an action
   * (identity from the request's bearer token, resolved by the caller).
   * Resolves with the response, or null when no route matches. With an
   * `exchange`, a streamed request body is read from it and a response
   * body that is a stream goes to it as the action produces it.
   */
  async httpAction(
    request: HttpRequestMessage,
    options: CallOptions & { exchange?: HttpExchange } = {},
  ): Promise<{ response: HttpResponseMessage | null; logs: LogLine[] }> {
    const path = `${HTTP_MODULE.replace(/\.js$/, "")}:${request.method} ${request.path}`;
    const started = Date.now();
    const environment = this.options.environment;
    const envValues =
      environment === undefined ? undefined : (environment.current ?? (await environment.load()));
    const identity = options.identity ?? null;
    const env = this.actionEnvironment(identity, path, envValues);
    const outcome = await execute(
      this.options.actionRuntime ?? this.options.runtime,
      {
        kind: "httpAction",
        module: HTTP_MODULE,
        exportName: "default",
        argsJson: JSON.stringify(request),
        seed: executionSeed(),
        nowMs: Date.now(),
        timeLimitMs: this.options.actionTimeLimitMs ?? ACTION_TIME_LIMIT_MS,
      },
      options.exchange === undefined
        ? actionSyscalls(env)
        : httpActionSyscalls(actionSyscalls(env), options.exchange),
    );
    if (!outcome.ok) {
      const error = this.userError(outcome.error, outcome.logs);
      this.report("httpAction", path, started, outcome.logs, error.message);
      throw error;
    }
    const value = outcome.value as HttpResponseMessage | { notFound: true };
    if ("notFound" in value) return { response: null, logs: outcome.logs };
    this.report("httpAction", path, started, outcome.logs, null);
    return { response: value, logs: outcome.logs };
  }

  /** Runs a mutation and commits it, re-running it on conflicts. */
  async mutation(
    path: string,
    args: Value | undefined,
    options: CallOptions = {},
  ): Promise<CallResult> {
    const fn = this.resolve(path, "mutation", options);
    const lane = this.lanes.of(`${fn.module}:${fn.exportName}`);
    // A call holds its turn (when the function's calls are serialised) across its retries.
    const turn: { release: (() => void) | null } = {
      release: lane.serialised ? await lane.enter() : null,
    };
    try {
      return await this.mutationAttempts(fn, path, args, options, lane, turn);
    } finally {
      turn.release?.();
    }
  }

  private async mutationAttempts(
    fn: ResolvedFunction,
    path: string,
    args: Value | undefined,
    options: CallOptions,
    lane: ContentionLane,
    turn: { release: (() => void) | null },
  ): Promise<CallResult> {
    const maxAttempts = this.options.maxAttempts ?? 12;
    const started = Date.now();
    for (let attempt = 1; ; attempt++) {
      let tx: Transaction | null = null;
      try {
        const result = await this.runOnce(
          fn,
          path,
          "mutation",
          args,
          () => {
            tx = this.options.db.begin();
            return tx;
          },
          options,
        );
        if (tx === null) throw new Error("the mutation ran without its transaction");
        if (options.beforeCommit !== undefined) await options.beforeCommit(tx);
        const request = options.request;
        const ts = await this.options.db.commit(tx, {
          // The next call in a serialised lane may begin as soon as this commit
          // is written: it reads it then, so it need not wait for the sync.
          onWritten: () => {
            turn.release?.();
            turn.release = null;
          },
          ...(request === undefined
            ? {}
            : {
                answer: {
                  client: request.client,
                  requestId: request.requestId,
                  text: request.encode(result),
                },
              }),
        });
        lane.committed();
        if (this.options.counters) this.options.counters.committed++;
        this.report("mutation", path, started, result.logs, null);
        return { value: result.value, logs: result.logs, ts };
      } catch (e) {
        (tx as Transaction | null)?.abort();
        if (e instanceof StaleEnvironment) {
          // Ran with the values before an environment change its snapshot
          // holds: once that change is published, the next attempt loads it.
          await this.options.db.whenPublished(e.tx.beginTs);
          if (attempt < maxAttempts) continue;
          const error = new FunctionError(
            `The deployment's environment variables changed while the mutation ran, ${attempt} times in a row; it was not committed.`,
            "conflict",
          );
          this.report("mutation", path, started, [], error.message);
          throw error;
        }
        if (e instanceof ConflictError) {
          lane.conflicted();
          if (this.options.counters) this.options.counters.conflicts++;
          if (attempt < maxAttempts) {
            // Serialised meanwhile: retry in turn with the others, not against them.
            if (turn.release === null && lane.serialised) turn.release = await lane.enter();
            continue;
          }
          const error = new FunctionError(
            `${e.message} It conflicted ${attempt} times in a row; the documents it reads are changing too often.`,
            "conflict",
          );
          this.report("mutation", path, started, [], error.message);
          throw error;
        }
        // What it read may still be syncing: its error is not told before that is durable.
        if (tx !== null) await this.options.db.whenPublished((tx as Transaction).beginTs);
        if (e instanceof FunctionError) this.report("mutation", path, started, e.logs, e.message);
        throw e;
      }
    }
  }

  private async runSystemQuery(
    query: SystemQuery,
    args: Value | undefined,
    tx: Transaction,
  ): Promise<{ value: Value; logs: LogLine[] }> {
    const context = {
      modules: this.options.runtime.modules,
      deploymentUrl:
        typeof this.options.deploymentUrl === "function"
          ? this.options.deploymentUrl()
          : (this.options.deploymentUrl ?? ""),
    };
    try {
      return { value: await runSystemQuery(query, tx, args, context), logs: [] };
    } catch (e) {
      if (e instanceof SystemQueryError) throw new FunctionError(e.message, e.kind);
      throw e;
    }
  }

  /** What an action (or HTTP action) may do outside its isolate. */
  private actionEnvironment(
    identity: UserIdentity | null,
    path: string,
    envValues: Record<string, string> | undefined,
  ): ActionEnvironment {
    const nested: CallOptions = { identity, allowInternal: true };
    return {
      identity,
      functionName: path.includes(":") ? path : `${path}:default`,
      runFunction: async (kind, p, argsJson) => {
        let a: Value;
        try {
          a = fromJson(argsJson);
        } catch (e) {
          // Arguments that are no Convex value: the calling action's mistake, said as such.
          if (e instanceof ValueError)
            throw new SyscallError(`Invalid arguments for ${p}: ${e.message}`);
          throw e;
        }
        try {
          const r =
            kind === "query"
              ? await this.query(p, a, nested)
              : kind === "mutation"
                ? await this.mutation(p, a, nested)
                : await this.action(p, a, nested);
          return toJson(r.value);
        } catch (e) {
          if (e instanceof FunctionError) {
            // A ConvexError reaches the action as one, with its data.
            throw new SyscallError(
              e.message,
              e.data === undefined ? undefined : JSON.stringify(toJson(e.data)),
            );
          }
          throw e;
        }
      },
      ...(envValues !== undefined ? { environmentVariables: () => envValues } : {}),
      // Each scheduling call of an action commits on its own.
      scheduler: new SchedulerHooks(this, this.options.db, null),
      ...(this.options.storage !== undefined ? { storage: this.storageHooks(null)! } : {}),
    };
  }

  /**
   * `ctx.storage` in `tx` (a query's or mutation's), or for an action (null:
   * each call on its own, reads at the latest snapshot).
   */
  private storageHooks(tx: Transaction | null): StorageHooks | undefined {
    const storage = this.options.storage;
    if (storage === undefined) return undefined;
    return new StorageCalls(storage, tx, this.options.deploymentUrl);
  }

  private report(
    kind: FunctionKind,
    path: string,
    startedAtMs: number,
    logs: LogLine[],
    error: string | null,
  ): void {
    const listener = this.options.onExecution;
    if (listener === undefined) return;
    try {
      listener({ kind, path, startedAtMs, durationMs: Date.now() - startedAtMs, logs, error });
    } catch {
      // A log listener's failure never fails the call.
    }
  }

  /**
   * Runs one execution. A mutation's transaction is begun only once an
   * isolate is ready for it (`tx` as a function): begun earlier, it would
   * read a snapshot that grows stale while the mutation waits, and conflict.
   */
  private async runOnce(
    fn: ResolvedFunction,
    path: string,
    kind: "query" | "mutation",
    args: Value | undefined,
    tx: Transaction | (() => Transaction),
    options: CallOptions,
  ): Promise<{ value: Value; logs: LogLine[] }> {
    const ctx = typeof tx === "function" ? this.catalogContext() : this.validationContext(tx);
    const argError = validateArgs(fn.args, args, ctx);
    if (argError !== null) throw new FunctionError(argError.message, "arguments");
    const schema = this.options.schema ?? null;
    const environment = this.options.environment;
    const envVersion = environment?.version ?? 0;
    // The mutation's environment, when the values it was handed may be older than its snapshot.
    const stale: { env: ExecutionEnvironment | null } = { env: null };
    const envValues =
      environment === undefined
        ? undefined
        : typeof tx === "function"
          ? (environment.current ?? (await environment.load()))
          : await environment.valuesAt(tx.beginTs);
    let t: Transaction | undefined;
    const outcome = await execute(
      this.options.runtime,
      {
        kind,
        module: fn.module,
        exportName: fn.exportName,
        argsJson: stringifyValue(args === undefined ? {} : args),
        seed: executionSeed(),
        nowMs: Date.now(),
        timeLimitMs: this.options.timeLimitMs,
      },
      () => {
        // Called again when the execution runs again in the background
        // (runtime/execution.ts): the same snapshot, with what the stopped
        // attempt read and wrote forgotten.
        if (t === undefined) t = typeof tx === "function" ? tx() : tx;
        else t.restart();
        if (schema !== null) t.declaredIndexes = schema.declaredIndexes;
        if (kind === "mutation" && schema !== null) {
          t.checkWrite = schemaCheck(schema.validators, this.validationContext(t));
          t.writesCheckedAgainst = schema.validators;
        }
        const env = new ExecutionEnvironment(
          t,
          kind,
          options.identity ?? null,
          path.includes(":") ? path : `${path}:default`,
          fn.spec.visibility,
          this.options.deploymentName ?? "tessera",
          envValues,
          kind === "mutation" ? new SchedulerHooks(this, this.options.db, t) : undefined,
          this.storageHooks(t),
        );
        // A mutation's snapshot is taken only now, after its values were.
        if (typeof tx === "function" && environment?.staleFor(envVersion, t.beginTs)) {
          stale.env = env;
        }
        return udfSyscalls(env);
      },
    );
    // Only if it read them: a mutation that never touched process.env need not run again.
    if (stale.env?.variablesRead) throw new StaleEnvironment(stale.env.tx);
    if (!outcome.ok) throw this.userError(outcome.error, outcome.logs);
    const value = fromJson(outcome.value as JsonValue);
    const returnsError = validateReturns(fn.returns, value, ctx);
    if (returnsError !== null)
      throw new FunctionError(returnsError.message, "returns", outcome.logs);
    return { value, logs: outcome.logs };
  }

  private userError(error: ExecutionError, logs: LogLine[]): FunctionError {
    if (error.kind === "timeout" || error.kind === "memory" || error.kind === "internal") {
      return new FunctionError(error.message, error.kind, logs);
    }
    const stack = error.stack ? this.stacks.mapStack(error.stack) : "";
    if (error.data !== undefined) {
      return new FunctionError(
        error.message,
        "user",
        logs,
        fromJson(JSON.parse(error.data) as JsonValue),
        stack,
      );
    }
    // What Convex shows for an uncaught error: "Uncaught Error: message" and the mapped frames.
    const frames = stack.split("\n").filter((l) => /^\s+at /.test(l));
    const head = `Uncaught ${error.name}: ${error.message}`;
    return new FunctionError(
      frames.length > 0 ? `${head}\n${frames.join("\n")}` : head,
      "user",
      logs,
      undefined,
      stack,
    );
  }
}

// Per-execution helpers are classes rather than objects of closures: their
// methods are made once, not for every execution.

/** Table names and numbers of a catalog (before a transaction exists). */
class CatalogNames implements ValidationContext {
  constructor(private readonly catalog: Catalog) {}
  tableNumberForName(name: string): number | undefined {
    return this.catalog.table(name)?.number;
  }
  tableNameForNumber(n: number): string | undefined {
    return this.catalog.tableByNumber(n)?.name;
  }
}

/** `Transaction.checkWrite` enforcing the schema. */
function schemaCheck(
  validators: SchemaValidators,
  ctx: ValidationContext,
): (table: string, doc: Document) => void {
  return (table, doc) => {
    const e = validateWrite(validators, table, doc, ctx);
    // Reaches user code as the error of the db call that wrote the document.
    if (e !== null) throw new DatabaseError(e.message);
  };
}

/** What a query or mutation may do outside its isolate (`UdfEnvironment`). */
class ExecutionEnvironment implements UdfEnvironment {
  readonly deployment: UdfEnvironment["deployment"];
  constructor(
    readonly tx: Transaction,
    readonly kind: "query" | "mutation",
    readonly identity: UserIdentity | null,
    readonly functionName: string,
    readonly visibility: "public" | "internal",
    deploymentName: string,
    private readonly variables: Record<string, string> | undefined,
    readonly scheduler: UdfEnvironment["scheduler"],
    readonly storage: StorageHooks | undefined,
  ) {
    this.deployment = { name: deploymentName, region: null, class: "s16" };
  }

  /** Whether user code touched `process.env`. */
  variablesRead = false;

  /** The variables, read the first time user code touches `process.env` (the whole table joins the read set). */
  environmentVariables(): Record<string, string> {
    if (this.variables === undefined) return {};
    this.variablesRead = true;
    this.tx.recordTableRead(ENVIRONMENT_TABLE);
    return this.variables;
  }
}

function asSyscallError(e: unknown): never {
  if (e instanceof SchedulerError || e instanceof DatabaseError) throw new SyscallError(e.message);
  throw e;
}

/**
 * `ctx.scheduler` in `tx` (a mutation's: jobs are written in its
 * transaction), or for an action (null: each call commits on its own);
 * within one call's budget.
 */
class SchedulerHooks {
  private readonly budget = new ScheduleBudget();
  constructor(
    private readonly runner: FunctionRunner,
    private readonly db: Database,
    private readonly tx: Transaction | null,
  ) {}

  private async inTx<T>(f: (tx: Transaction) => Promise<T>): Promise<T> {
    return this.tx !== null ? f(this.tx) : (await this.db.run(f)).value;
  }

  async schedule(name: string, args: JsonValue, atSeconds: number): Promise<string> {
    const kind = this.runner.kindOf(name);
    if (kind === undefined)
      throw new SyscallError(`Could not find function for '${name}' to schedule`);
    if (kind !== "mutation" && kind !== "action")
      throw new SyscallError(`Only mutations and actions can be scheduled; '${name}' is a ${kind}`);
    try {
      this.budget.charge(JSON.stringify(args));
      return await this.inTx((tx) => scheduleJob(tx, name, args, atSeconds));
    } catch (e) {
      return asSyscallError(e);
    }
  }

  usage(): SchedulerUsage {
    return this.budget.usage;
  }

  async cancel(id: string): Promise<void> {
    try {
      await this.inTx((tx) => cancelJob(tx, id));
    } catch (e) {
      asSyscallError(e);
    }
  }
}

/**
 * `ctx.storage` in `tx` (a query's or mutation's), or for an action (null:
 * each call on its own, reads at the latest snapshot).
 */
class StorageCalls implements StorageHooks {
  constructor(
    private readonly storage: FileStorage,
    private readonly tx: Transaction | null,
    private readonly deploymentUrl: string | (() => string) | undefined,
  ) {}

  private url(): string {
    return typeof this.deploymentUrl === "function"
      ? this.deploymentUrl()
      : (this.deploymentUrl ?? "");
  }

  private inTx<T>(f: (t: Transaction) => Promise<T>): Promise<T> {
    return this.tx !== null ? f(this.tx) : this.storage.inTransaction(f);
  }

  async generateUploadUrl(): Promise<string> {
    return this.storage.uploadUrl(this.url());
  }
  getUrl(id: string): Promise<string | null> {
    return refused(this.inTx((t) => this.storage.getUrl(t, id, this.url())));
  }
  getMetadata(id: string) {
    return refused(this.inTx((t) => this.storage.getMetadata(t, id)));
  }
  delete(id: string): Promise<void> {
    return refused(this.inTx((t) => this.storage.delete(t, id)));
  }
  store(bytes: Buffer, type: string | null, sha256?: string): Promise<string> {
    return refused(
      this.tx !== null
        ? this.storage.storeIn(this.tx, bytes, type, sha256)
        : this.storage.store(bytes, type, sha256),
    );
  }
  get(id: string) {
    return refused(this.tx !== null ? this.storage.readIn(this.tx, id) : this.storage.read(id));
  }
}

/** A storage refusal reaches user code as a `SyscallError`. */
function refused<T>(p: Promise<T>): Promise<T> {
  return p.catch((e: unknown) => {
    throw isStorageRefusal(e) ? new SyscallError(e.message) : e;
  });
}
