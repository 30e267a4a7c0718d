/**
 * Runs INSIDE the isolate, after the prelude and before the app's modules.
 * It provides the `Convex` global the official `convex/server` library calls
 * (`syscall`, `asyncSyscall`, `jsSyscall`) and the entry points the host uses
 * (`__tessera_runtime.invoke`, `settle`, `analyze`).
 *
 * The host's callbacks arrive as globals, which connect() takes out of the
 * global object; the host then takes `__tessera_runtime` out too (see
 * appRuntime.ts): user code reaches neither. Async syscalls are queued on the
 * host, which answers them one at a time in the order they were made, so
 * `Promise.race` and friends give the same result on every run (query
 * streams' next documents may arrive ahead of their calls: see below).
 *
 * The app's import code may change any built-in: what this script uses after
 * it ran was captured when this script was evaluated.
 */

import { type FunctionSpec, functionSpecs } from "../functionSpecs.mjs";

const JSONParse = JSON.parse;
const JSONStringify = JSON.stringify;
const OriginalPromise = Promise;
const OriginalError = Error;
const getPrototypeOf = Object.getPrototypeOf;
const promiseThen = Promise.prototype.then;
const mapGet = Map.prototype.get;
const mapSet = Map.prototype.set;
const mapDelete = Map.prototype.delete;
const mapClear = Map.prototype.clear;
const symbolFor = Symbol.for;
const ReflectApply = Reflect.apply;
const defineProperty = Object.defineProperty;
const freeze = Object.freeze;
const create = Object.create;
const objectKeys = Object.keys;
const OriginalProxy = Proxy;
const parse = (text: string): unknown => ReflectApply(JSONParse, JSON, [text]);
const stringify = (value: unknown): string => ReflectApply(JSONStringify, JSON, [value]) as string;

/** Host functions installed in each context (plain globals: host callbacks cannot be object members). */
type SyncSyscall = (op: string, argsJson: string) => string;
/**
 * Starts an async syscall. Returns its answer when the host gives it at once
 * ("o" or "e" for a result or an error, the JSON payload, then for a stream
 * a newline and the answers ahead), else undefined and `settle` follows.
 */
type AsyncSyscall = (id: number, op: string, argsJson: string) => string | undefined;
/** Receives the outcome of `invoke` (the host calls into the isolate synchronously and cannot await). */
type Done = (outcomeJson: string) => void;

interface HttpMessage {
  method?: string;
  url?: string;
  path?: string;
  headers: [string, string][];
  body: string | null;
  /** A request whose body the prelude reads from the host as its stream is pulled. */
  streamed?: boolean;
}

interface Env {
  begin(options: { mode: string; seed: string; nowMs: number }): void;
  httpRequest(message: HttpMessage): unknown;
  httpResponse(response: unknown): HttpMessage | Promise<HttpMessage>;
  blobToHost(blob: unknown): { base64: string; type: string };
  blobFromHost(base64: string, type: string): unknown;
  takeLogs(): Array<{ level: string; message: string }>;
  seal(): { reusable: boolean; reason?: string };
  end(): string;
}

interface Registered {
  isRegistered?: boolean;
  isQuery?: boolean;
  isMutation?: boolean;
  isAction?: boolean;
  isHttp?: boolean;
  isPublic?: boolean;
  isInternal?: boolean;
  invokeQuery?: (args: string) => Promise<string>;
  invokeMutation?: (args: string) => Promise<string>;
  invokeAction?: (requestId: string, args: string) => Promise<string>;
  exportArgs?: () => string;
  exportReturns?: () => string;
}

type Namespace = Record<string, unknown>;

const g = globalThis as unknown as {
  /** A synchronous syscall: returns the JSON result, throws on error. */
  __tessera_syscall?: SyncSyscall;
  /** Starts an async syscall; the host later calls `settle(id, …)`. */
  __tessera_async_syscall?: AsyncSyscall;
  __tessera_done?: Done;
  __tessera_env?: Env;
  __tessera_app?: { modules: Record<string, Namespace> };
};

// The prelude's controls, out of user code's reach from here on.
const env = g.__tessera_env!;
delete g.__tessera_env;

function notAvailable(): never {
  throw new OriginalError("Convex syscalls are not available while modules are being imported");
}

// The host's callbacks, taken from the globals the host sets (connect()).
let syscallHost: SyncSyscall = notAvailable;
let asyncSyscallHost: AsyncSyscall = notAvailable;
let doneHost: Done = notAvailable;

/** Takes the host's callbacks out of the global object, out of user code's reach. */
function connect(): void {
  syscallHost = g.__tessera_syscall ?? notAvailable;
  asyncSyscallHost = g.__tessera_async_syscall ?? notAvailable;
  doneHost = g.__tessera_done ?? notAvailable;
  delete g.__tessera_syscall;
  delete g.__tessera_async_syscall;
  delete g.__tessera_done;
}

// The host starts V8 with --expose-gc so that it can collect discarded contexts
// on time (see appRuntime.ts); user code must not get the function.
// V8 installs it writable but not configurable: overwrite rather than delete.
const collectGarbage = (globalThis as { gc?: () => void }).gc;
(globalThis as { gc?: () => void }).gc = undefined;

interface Pending {
  resolve: (v: string) => void;
  reject: (e: unknown) => void;
  /** For `1.0/queryStreamNext`: the query whose next answers may come with this one. */
  queryId?: number;
}
const pending = new Map<number, Pending>();
let nextId = 1;

/**
 * Answers of `1.0/queryStreamNext` the host sent ahead, by query id, and
 * the host call under way for that query: a call finds its answer here
 * without a round trip, or waits for the call under way and looks again
 * (so each call gets the query's next answer, in the order made). Query ids
 * are per execution: cleared at each start.
 */
interface StreamAhead {
  answers: string[];
  read: number;
  inflight: Promise<string> | null;
}
const streamsAhead = new Map<number, StreamAhead>();
const stringIndexOf = String.prototype.indexOf;
const stringSlice = String.prototype.slice;

/** `text.split("\n")` with built-ins captured before user code ran (split would look up `Symbol.split`). */
function lines(text: string): string[] {
  const out: string[] = [];
  let start = 0;
  for (;;) {
    const end = ReflectApply(stringIndexOf, text, ["\n", start]) as number;
    if (end === -1) {
      out[out.length] = ReflectApply(stringSlice, text, [start]) as string;
      return out;
    }
    out[out.length] = ReflectApply(stringSlice, text, [start, end]) as string;
    start = end + 1;
  }
}

/** Rebuilds an error thrown by the host; `data` marks a ConvexError's JSON-encoded data. */
function hostError(payload: string): Error {
  const { message, data } = parse(payload) as { message: string; data?: string };
  const e = new OriginalError(message) as Error & { data?: unknown };
  // The library turns an error with `data` (Convex JSON) into a ConvexError.
  if (data !== undefined) e.data = parse(data);
  return e;
}

/** Whether the last `hostAsync` call was answered at once (its promise is settled). */
let answeredAtOnce = false;

/** Starts an async syscall on the host; `queryId` marks a `queryStreamNext` (answers ahead). */
function hostAsync(op: string, argsJson: string, queryId?: number): Promise<string> {
  answeredAtOnce = false;
  return new OriginalPromise((resolve, reject) => {
    const id = nextId++;
    const call: Pending = { resolve, reject, queryId };
    const now = asyncSyscallHost(id, op, argsJson);
    if (now === undefined) {
      ReflectApply(mapSet, pending, [id, call]);
      return;
    }
    answeredAtOnce = true;
    const newline = ReflectApply(stringIndexOf, now, ["\n", 1]) as number;
    const payload = ReflectApply(stringSlice, now, newline === -1 ? [1] : [1, newline]) as string;
    const ahead =
      newline === -1 ? undefined : (ReflectApply(stringSlice, now, [newline + 1]) as string);
    deliver(call, now[0] === "o", payload, ahead);
  });
}

/**
 * The query id of a `queryStreamNext`/`queryCleanup` call, or undefined if it
 * has none (arguments that are not JSON go to the host, which refuses them).
 */
function queryIdOf(argsJson: string): number | undefined {
  let args: unknown;
  try {
    args = parse(argsJson);
  } catch {
    return undefined;
  }
  const id = (args as { queryId?: unknown } | null)?.queryId;
  return typeof id === "number" ? id : undefined;
}

function queryStreamNext(argsJson: string, queryId: number): Promise<string> {
  const ahead = ReflectApply(mapGet, streamsAhead, [queryId]) as StreamAhead | undefined;
  if (ahead === undefined) {
    const state: StreamAhead = { answers: [], read: 0, inflight: null };
    ReflectApply(mapSet, streamsAhead, [queryId, state]);
    return startStreamCall(state, argsJson, queryId);
  }
  if (ahead.read < ahead.answers.length) {
    const answer = ahead.answers[ahead.read++]!;
    return new OriginalPromise((resolve) => resolve(answer));
  }
  if (ahead.inflight !== null) {
    const retry = () => queryStreamNext(argsJson, queryId);
    return ReflectApply(promiseThen, ahead.inflight, [retry, retry]) as Promise<string>;
  }
  return startStreamCall(ahead, argsJson, queryId);
}

function startStreamCall(state: StreamAhead, argsJson: string, queryId: number): Promise<string> {
  const call = hostAsync("1.0/queryStreamNext", argsJson, queryId);
  // Answered at once, the answers ahead are already in `state`.
  if (!answeredAtOnce) state.inflight = call;
  return call;
}

const Convex = {
  syscall(op: string, argsJson: string): string {
    if (op === "1.0/queryCleanup") {
      const queryId = queryIdOf(argsJson);
      if (queryId !== undefined) ReflectApply(mapDelete, streamsAhead, [queryId]);
    }
    try {
      return syscallHost(op, argsJson);
    } catch (e) {
      // The host's errors are plain Errors carrying the host's stack (its
      // files and paths), which must not reach the caller: made again here,
      // with the isolate's. Others (a stack overflow met on the way) go on as they are.
      if (e === null || typeof e !== "object" || getPrototypeOf(e) !== OriginalError.prototype)
        throw e;
      throw new OriginalError((e as { message?: unknown }).message as string);
    }
  },
  asyncSyscall(op: string, argsJson: string): Promise<string> {
    if (op === "1.0/queryStreamNext") {
      const queryId = queryIdOf(argsJson);
      if (queryId !== undefined) return queryStreamNext(argsJson, queryId);
    }
    return hostAsync(op, argsJson);
  },
  jsSyscall(op: string, args: Record<string, unknown>): unknown {
    // Storage in actions: the Blob crosses to the host as base64 (what the
    // library sends for `store` in mutations), so it goes through memory.
    if (op === "storage/storeBlob") {
      const { base64, type } = env.blobToHost(args.blob);
      const options = args.options as { sha256?: unknown } | undefined | null;
      const argsJson = stringify({
        requestId: args.requestId,
        version: args.version,
        blob: base64,
        contentType: type,
        sha256: options?.sha256,
      });
      return ReflectApply(promiseThen, Convex.asyncSyscall("1.0/storageStore", argsJson), [
        (result: string) => parse(result),
      ]);
    }
    if (op === "storage/getBlob") {
      const argsJson = stringify({
        requestId: args.requestId,
        version: args.version,
        storageId: args.storageId,
      });
      return ReflectApply(promiseThen, Convex.asyncSyscall("1.0/storageGet", argsJson), [
        (result: string) => {
          const file = parse(result) as { blob: string; contentType: string | null } | null;
          return file === null ? null : env.blobFromHost(file.blob, file.contentType ?? "");
        },
      ]);
    }
    throw new OriginalError(`not supported yet: ${op}`);
  },
};
defineProperty(globalThis, "Convex", { value: Convex, enumerable: false });

// `process.env`: the deployment's environment variables, fetched from the
// host the first time an execution reads them (the host records the read, so
// cached query results that read a variable are re-run when it changes).
// While modules are imported there are none. Writes stay in the execution.
let environment: Record<string, string> | null = null;
let executing = false;
function environmentNow(): Record<string, string> {
  if (!executing) {
    if (environment === null) environment = create(null) as Record<string, string>;
    return environment;
  }
  if (environment === null) {
    const values = parse(syscallHost("tessera/env", "{}")) as Record<string, string>;
    environment = create(null) as Record<string, string>;
    for (const name of objectKeys(values)) environment[name] = values[name]!;
  }
  return environment;
}
const envProxy = new OriginalProxy(create(null) as object, {
  get: (_t, name) => (typeof name === "string" ? environmentNow()[name] : undefined),
  has: (_t, name) => typeof name === "string" && name in environmentNow(),
  ownKeys: () => objectKeys(environmentNow()),
  getOwnPropertyDescriptor: (_t, name) => {
    const values = environmentNow();
    if (typeof name !== "string" || !(name in values)) return undefined;
    return { value: values[name], writable: true, enumerable: true, configurable: true };
  },
  set: (_t, name, value) => {
    if (typeof name === "string") environmentNow()[name] = `${value}`;
    return true;
  },
  deleteProperty: (_t, name) => {
    if (typeof name === "string") delete environmentNow()[name];
    return true;
  },
  defineProperty: () => false,
});
defineProperty(globalThis, "process", {
  value: freeze({ env: envProxy }),
  writable: true,
  enumerable: false,
  configurable: true,
});

function serializeError(e: unknown): {
  message: string;
  name: string;
  stack: string;
  data?: string;
} {
  if (e instanceof Error || (typeof e === "object" && e !== null && "message" in e)) {
    const err = e as Error & { data?: unknown; ConvexErrorSymbol?: symbol };
    const isConvexError =
      err.ConvexErrorSymbol === symbolFor("ConvexError") && typeof err.data === "string";
    return {
      message: String(err.message),
      name: String(err.name ?? "Error"),
      stack: String(err.stack ?? ""),
      ...(isConvexError ? { data: err.data as string } : {}),
    };
  }
  return { message: `Uncaught ${String(e)}`, name: "Error", stack: "" };
}

function lookup(module: string, exportName: string): Registered {
  const ns = g.__tessera_app?.modules[module];
  if (ns === undefined) throw new OriginalError(`Could not find module "${module}"`);
  const fn = ns[exportName] as Registered | undefined;
  if (fn === undefined || fn === null)
    throw new OriginalError(`Could not find function "${exportName}" in module "${module}"`);
  return fn;
}

interface Invocation {
  kind: "query" | "mutation" | "action" | "httpAction";
  module: string;
  exportName: string;
  args: string;
  seed: string;
  nowMs: number;
}

interface Router {
  isRouter?: boolean;
  lookup?: (path: string, method: string) => [Registered, string, string] | null;
}

/** Routes a request through `http.js`'s router to its HTTP action; JSON of the response, or `{"notFound":true}`. */
async function invokeHttp(req: Invocation): Promise<string> {
  const router = g.__tessera_app?.modules[req.module]?.default as Router | undefined;
  if (
    router === undefined ||
    router === null ||
    router.isRouter !== true ||
    typeof router.lookup !== "function"
  )
    throw new OriginalError("convex/http.ts must export default httpRouter() (from convex/server)");
  // The host sends arguments as a one-element array; here the element is the request.
  const message = (parse(req.args) as HttpMessage[])[0]!;
  const match = router.lookup(message.path!, message.method!);
  if (match === null || match === undefined) return '{"notFound":true}';
  const handler = match[0] as Registered & { invokeHttpAction?: (r: unknown) => Promise<unknown> };
  if (typeof handler.invokeHttpAction !== "function")
    throw new OriginalError(`The route ${match[1]} ${match[2]} is not an httpAction`);
  const response = await handler.invokeHttpAction(env.httpRequest(message));
  // A stream body goes to the host as it is produced: this waits for its end.
  return stringify(await env.httpResponse(response));
}

/**
 * Starts an execution; its outcome goes to the host's `__tessera_done`
 * callback. With `afterAnother`, first ends the context's
 * previous execution, whose microtasks have all run since (the host's last
 * call into the context drained them): if that left pre-existing state
 * changed, returns the guard's verdict ("tainted:" and why) and starts
 * nothing, for the host to run the execution in another context. Asking
 * here instead of in a call of its own after every execution saves a call
 * into the isolate per execution.
 */
function start(requestJson: string, afterAnother: boolean): string {
  if (afterAnother) {
    const verdict = env.end();
    if (verdict !== "clean") return verdict;
  }
  ReflectApply(promiseThen, invoke(requestJson), [(outcome: string) => doneHost(outcome)]);
  return "clean";
}

async function invoke(requestJson: string): Promise<string> {
  const req = parse(requestJson) as Invocation;
  // Promises of an earlier execution that were never settled stay so.
  ReflectApply(mapClear, pending, []);
  ReflectApply(mapClear, streamsAhead, []);
  env.begin({
    mode: req.kind === "httpAction" ? "action" : req.kind,
    seed: req.seed,
    nowMs: req.nowMs,
  });
  environment = null;
  executing = true;
  try {
    if (req.kind === "httpAction") {
      const result = await invokeHttp(req);
      return `{"ok":true,"logs":${stringify(env.takeLogs())},"value":${result}}`;
    }
    const fn = lookup(req.module, req.exportName);
    let result: string;
    if (req.kind === "query") {
      if (typeof fn.invokeQuery !== "function")
        throw new OriginalError(`${req.module}:${req.exportName} is not a query`);
      result = await fn.invokeQuery(req.args);
    } else if (req.kind === "mutation") {
      if (typeof fn.invokeMutation !== "function") {
        throw new OriginalError(`${req.module}:${req.exportName} is not a mutation`);
      }
      result = await fn.invokeMutation(req.args);
    } else {
      if (typeof fn.invokeAction !== "function") {
        throw new OriginalError(`${req.module}:${req.exportName} is not an action`);
      }
      // The request id only labels the action's syscalls; one action runs per context.
      result = await fn.invokeAction(req.seed, req.args);
    }
    // `result` is already JSON text: splice it in rather than encoding it twice.
    return `{"ok":true,"logs":${stringify(env.takeLogs())},"value":${result}}`;
  } catch (e) {
    return stringify({ ok: false, error: serializeError(e), logs: env.takeLogs() });
  }
}

/**
 * Completes an async syscall: `ok` with the JSON result, or an error payload
 * from `hostError`. `ahead`: the answers of the same query's next calls
 * (JSON texts joined by newlines; see execution.ts).
 */
function settle(id: number, ok: boolean, payload: string, ahead?: string): void {
  const p = ReflectApply(mapGet, pending, [id]) as Pending | undefined;
  if (p === undefined) return;
  ReflectApply(mapDelete, pending, [id]);
  deliver(p, ok, payload, ahead);
}

/** Settles a call's promise with its answer (and keeps a stream's answers ahead). */
function deliver(p: Pending, ok: boolean, payload: string, ahead: string | undefined): void {
  if (p.queryId !== undefined) {
    const state = ReflectApply(mapGet, streamsAhead, [p.queryId]) as StreamAhead | undefined;
    if (state !== undefined) {
      state.inflight = null;
      state.answers = typeof ahead === "string" ? lines(ahead) : [];
      state.read = 0;
    }
  }
  if (ok) p.resolve(payload);
  else p.reject(hostError(payload));
}

/** Every registered function of every module, with its kind, visibility and validators (JSON text). */
function analyze(): string {
  const out: Array<{ path: string; functions: FunctionSpec[] }> = [];
  for (const [path, ns] of Object.entries(g.__tessera_app?.modules ?? {})) {
    const functions = functionSpecs(ns, (e) => serializeError(e).message);
    out.push({ path, functions });
  }
  return JSON.stringify(out);
}

defineProperty(globalThis, "__tessera_runtime", {
  value: freeze({
    invoke,
    start,
    settle,
    analyze,
    collect: () => collectGarbage?.(),
    /** Freezes time and seeds randomness for the app's import code. */
    beginImport: (seed: string, nowMs: number) => env.begin({ mode: "import", seed, nowMs }),
    /**
     * Once the app is imported: takes the host's callbacks, and when `seal`,
     * registers the imported state so that the context may serve several
     * executions (the guard's verdict, as JSON).
     */
    prepare: (seal: boolean): string => {
      connect();
      return seal ? stringify(env.seal()) : "";
    },
  }),
  enumerable: false,
  configurable: true,
});
