/**
 * Runs one query or mutation in a fresh context: installs the syscall bridge,
 * calls the function through the official library's `invokeQuery` /
 * `invokeMutation`, answers its async syscalls one at a time in the order
 * they were made (so racing promises always settle the same way), and
 * enforces the user-code time limit on the isolate's time (isolated-vm's
 * `cpuTime`, which counts a descheduled thread's waits too; README.md,
 * "Limits and determinism") — time spent answering syscalls on the host
 * does not count (the isolate's time leaves out its calls to the host).
 *
 * An async syscall of a query or mutation that the host can answer at once
 * (a read storage answers synchronously, a write) is answered within the
 * call, while the isolate is still entered: the bootstrap resolves its
 * promise there and then, and the execution goes on without returning to
 * the host. A point-read query then enters its isolate once instead of
 * twice. Only when nothing asked earlier is still waiting, so effects keep
 * the order of the calls.
 */
import type ivm from "isolated-vm";
import { MAX_JSON_DEPTH, type MaybePromise, nestedDeeperThan } from "../values/index.js";
import type { AppRuntime, ExecutionHooks, LiveContext } from "./appRuntime.js";

/** The host side of syscalls for one execution. */
export interface SyscallHandler {
  /** A synchronous syscall (`1.0/queryStream`, `1.0/db/normalizeId`, …): returns a JSON-serialisable result. */
  sync(op: string, args: unknown): unknown;
  /**
   * An asynchronous syscall (`1.0/get`, `1.0/insert`, …): its result, or a
   * promise of it when it cannot be answered at once.
   */
  async(op: string, args: unknown): MaybePromise<unknown>;
  /**
   * Actions: true for an op that waits for something outside the action (an
   * HTTP client going away) and so does not keep it alive: an action waiting
   * only on such calls never finishes.
   */
  passive?(op: string): boolean;
}

/**
 * An async syscall's answer together with the answers of the calls that will
 * follow it (`1.0/queryStreamNext`: the next documents of the same query).
 * The bootstrap keeps them and answers those calls without a round trip.
 */
export class AnswerWithAhead {
  constructor(
    readonly value: unknown,
    readonly ahead: readonly unknown[],
  ) {}
}

/**
 * A syscall's result that is already JSON text (a shared document's, made
 * once): sent as it is instead of being encoded again.
 */
export class JsonText {
  constructor(readonly text: string) {}
}

const encode = (value: unknown): string =>
  value instanceof JsonText ? value.text : JSON.stringify(value ?? null);

/**
 * An async syscall's result as the bootstrap's `settle` takes it: JSON text,
 * and the answers ahead as JSON texts joined by newlines (JSON.stringify
 * never writes a raw newline, and one string crosses into the isolate
 * without a structured copy).
 */
function encodeAnswer(result: unknown): { answer: string; ahead: string | undefined } {
  if (result instanceof AnswerWithAhead) {
    return {
      answer: encode(result.value),
      ahead: result.ahead.length > 0 ? result.ahead.map(encode).join("\n") : undefined,
    };
  }
  return { answer: encode(result), ahead: undefined };
}

/**
 * An error a syscall reports to user code. With `convexErrorData` (the JSON
 * text of a value) it reaches user code as a `ConvexError` carrying that data.
 * Errors that are not `SyscallError`s are internal: user code sees a generic
 * message, and the execution fails even if the code catches it.
 */
export class SyscallError extends Error {
  override name = "SyscallError";
  constructor(
    message: string,
    readonly convexErrorData?: string,
    /** The execution fails even if user code catches it (limits, snapshot too old). */
    readonly fatal = false,
  ) {
    super(message);
  }
}

export interface ExecutionRequest {
  kind: "query" | "mutation" | "action" | "httpAction";
  module: string;
  exportName: string;
  /** JSON text of the arguments object in the wire form. */
  argsJson: string;
  /** Seed of `Math.random` and `crypto.getRandomValues` for this execution. */
  seed: string;
  /** What `Date.now()` returns throughout the execution. */
  nowMs: number;
  /** Limit on user-code time in the isolate (default 1000 ms, as the Convex docs give for queries and mutations). */
  timeLimitMs?: number;
}

export interface LogLine {
  level: string;
  message: string;
}

export interface ExecutionError {
  message: string;
  name: string;
  /** Stack trace as V8 reported it (positions in the linked app script; see sourceMaps.ts). */
  stack: string;
  /** For a `ConvexError`: JSON text of its data. */
  data?: string;
  /** Why the runtime stopped the execution, when it did. */
  kind?: "timeout" | "memory" | "internal";
}

export type ExecutionOutcome =
  | { ok: true; value: unknown; logs: LogLine[]; userTimeMs: number }
  | { ok: false; error: ExecutionError; logs: LogLine[]; userTimeMs: number };

interface QueuedSyscall {
  id: number;
  op: string;
  argsJson: string;
  /** Its answer, when the handler was already asked (it could not answer at once). */
  started?: Promise<unknown>;
}

function errorPayload(e: unknown): string {
  if (e instanceof SyscallError) {
    return JSON.stringify({
      message: e.message,
      ...(e.convexErrorData !== undefined ? { data: e.convexErrorData } : {}),
    });
  }
  return JSON.stringify({ message: "Internal error while running a syscall" });
}

/**
 * A syscall's arguments as user code sent them. The official library sends
 * JSON text, but user code can call the `Convex` global with anything: text
 * that is not JSON, or values nested deeper than the host's recursive code
 * can take, are refused with an error that says so.
 */
export function parseSyscallArgs(op: string, argsJson: string): unknown {
  let args: unknown;
  try {
    args = JSON.parse(argsJson);
  } catch {
    throw new SyscallError(`Invalid arguments for ${op}: not JSON`);
  }
  if (nestedDeeperThan(args, MAX_JSON_DEPTH))
    throw new SyscallError(
      `Invalid arguments for ${op}: arrays and objects nested more than ${MAX_JSON_DEPTH} levels deep`,
    );
  return args;
}

function isFatal(e: unknown): boolean {
  return !(e instanceof SyscallError) || e.fatal;
}

interface Bridge {
  queue: QueuedSyscall[];
  /** The invocation's outcome (JSON), once it has finished. */
  outcome: string | null;
  /** The first error that must fail the execution whatever user code does with it. */
  fatal: unknown;
  /** When the current entry into the isolate began (`performance.now()`). */
  enteredAt: number;
  /** An async syscall was left for later because the entry had run long: yield before going on. */
  yieldDue: boolean;
}

/** An async syscall's answer as the bootstrap's `settle` takes it. */
interface Reply {
  ok: boolean;
  answer: string;
  ahead: string | undefined;
}

function replyOf(result: unknown): Reply {
  return { ok: true, ...encodeAnswer(result) };
}

/** The reply to a failed syscall; a fatal failure fails the execution whatever user code does. */
function failureReply(bridge: Bridge, e: unknown): Reply {
  if (isFatal(e)) bridge.fatal ??= e;
  return { ok: false, answer: errorPayload(e), ahead: undefined };
}

/**
 * What the context's host callbacks do during this execution (see
 * appRuntime.ts). With `counts` (queries and mutations; an action's run
 * concurrently), async syscalls are answered within the call when they can be.
 */
function executionHooks(
  handler: SyscallHandler,
  bridge: Bridge,
  counts: AppRuntime["asyncSyscalls"] | null,
  yieldAfterMs: number,
): ExecutionHooks {
  return {
    sync(op, argsJson) {
      try {
        return JSON.stringify(handler.sync(op, parseSyscallArgs(op, argsJson)) ?? null);
      } catch (e) {
        if (isFatal(e)) bridge.fatal ??= e;
        throw new Error(
          e instanceof SyscallError ? e.message : "Internal error while running a syscall",
        );
      }
    },
    async(id, op, argsJson) {
      if (counts === null || bridge.queue.length > 0) {
        if (counts !== null) {
          if (bridge.yieldDue) counts.yielded++;
          else counts.later++;
        }
        bridge.queue.push({ id, op, argsJson });
        return undefined;
      }
      // An entry that has held the server's thread for a while ends at its
      // next async syscall: the call is answered after the others waiting
      // have had a turn (a long mutation then holds the thread for a few ms
      // at a time, without the thread hops of the background).
      if (performance.now() - bridge.enteredAt > yieldAfterMs) {
        counts.yielded++;
        bridge.yieldDue = true;
        bridge.queue.push({ id, op, argsJson });
        return undefined;
      }
      let reply: Reply;
      try {
        const result = handler.async(op, parseSyscallArgs(op, argsJson));
        if (result instanceof Promise) {
          counts.later++;
          // Awaited in turn, unless the execution stops first (time, memory):
          // a failure then is nobody's, and must not surface as unhandled.
          result.catch(() => {});
          bridge.queue.push({ id, op, argsJson, started: result });
          return undefined;
        }
        counts.atOnce++;
        reply = replyOf(result);
      } catch (e) {
        reply = failureReply(bridge, e);
      }
      // What the bootstrap takes as an answer given at once (see hostAsync there).
      const { ok, answer, ahead } = reply;
      return `${ok ? "o" : "e"}${answer}${ahead === undefined ? "" : `\n${ahead}`}`;
    },
    done(outcomeJson) {
      bridge.outcome = outcomeJson;
    },
  };
}

/** Describes the guard's verdict ("tainted:" and a site id or a description). */
function describeVerdict(runtime: AppRuntime, verdict: string): string {
  const reason = verdict.startsWith("tainted:") ? verdict.slice("tainted:".length) : verdict;
  return runtime.app.describeTaint(/^\d+$/.test(reason) ? Number(reason) : reason);
}

/** What an attempt on the server's thread returns when it has to run again in the background. */
const MOVED: unique symbol = Symbol("moved to the background");

/** How an attempt enters its isolate. */
type Mode =
  /** On the server's thread, each entry stopped after `syncSliceMs` (it then runs again in the background). */
  | "slice"
  /** On the server's thread, each entry with the whole remaining budget (it cannot run again). */
  | "whole"
  /** On the isolate's own thread: slower per syscall, but the server's thread stays free. */
  | "background";

/**
 * Runs one function execution in a context of `runtime`. `handler` may be
 * made only once a context is ready (a function), for callers whose state
 * must not start earlier (a mutation's snapshot). A query or mutation given
 * such a factory may run twice: the factory is then called again, and the
 * handler it makes must start from the same state as the first (the same
 * snapshot, nothing read or written).
 */
export async function execute(
  runtime: AppRuntime,
  request: ExecutionRequest,
  handlerOrFactory: SyscallHandler | (() => SyscallHandler),
): Promise<ExecutionOutcome> {
  const fn = `${request.module}:${request.exportName}`;
  const udf = request.kind === "query" || request.kind === "mutation";
  let mode: Mode =
    !udf || typeof handlerOrFactory !== "function"
      ? "whole"
      : runtime.background.startsThere(fn)
        ? "background"
        : "slice";
  for (;;) {
    const attemptMode = mode;
    const outcome = await runtime.withContext<ExecutionOutcome | typeof MOVED>(
      (live) => attempt(runtime, live, request, handlerOrFactory, attemptMode),
      fn,
    );
    if (outcome !== MOVED) {
      if (attemptMode === "background") runtime.background.noteRan(fn, outcome.userTimeMs);
      return outcome;
    }
    runtime.background.noteMoved(fn);
    mode = "background";
  }
}

async function attempt(
  runtime: AppRuntime,
  live: LiveContext,
  request: ExecutionRequest,
  handlerOrFactory: SyscallHandler | (() => SyscallHandler),
  mode: Mode,
): Promise<{ value: ExecutionOutcome | typeof MOVED; clean: boolean } | { stale: string }> {
  const handler = typeof handlerOrFactory === "function" ? handlerOrFactory() : handlerOrFactory;
  const { isolate } = live;
  const bridge: Bridge = {
    queue: [],
    outcome: null,
    fatal: null,
    // Set by each entry before the hooks can read it.
    enteredAt: 0,
    yieldDue: false,
  };
  // Except in the background, everything below enters the isolate
  // synchronously, on this thread: an async call hops to the isolate's
  // thread and back for every syscall (measured ~1 ms per hop under load,
  // 100 ms for a 100-document scan). Contexts are still prepared ahead of
  // time on the isolate threads.
  live.slot.current = executionHooks(
    handler,
    bridge,
    request.kind === "query" || request.kind === "mutation" ? runtime.asyncSyscalls : null,
    runtime.yieldAfterMs,
  );

  const limitNs = BigInt(request.timeLimitMs ?? 1000) * 1_000_000n;
  const cpuStart = isolate.cpuTime;
  // A disposed isolate (memory limit) no longer reports its time: keep the last reading.
  let lastUsed = 0n;
  const used = () => {
    if (!isolate.isDisposed) lastUsed = isolate.cpuTime - cpuStart;
    return lastUsed;
  };
  // Whether the latest entry's timeout was the slice rather than the budget.
  let sliced = false;
  const timeoutMs = () => {
    const remaining = Math.max(1, Math.ceil(Number(limitNs - used()) / 1e6));
    if (mode === "slice") {
      const slice = sharedDeadline(runtime.syncSliceMs);
      sliced = slice < remaining;
      if (sliced) return slice;
    }
    return sharedDeadline(remaining);
  };
  const userTimeMs = () => Number(used()) / 1e6;
  // Arguments are primitives: both ways copy them into the isolate.
  const enter = (ref: ivm.Reference, args: unknown[]): unknown => {
    bridge.enteredAt = performance.now();
    return mode === "background"
      ? ref.apply(undefined, args as never, { timeout: timeoutMs() })
      : ref.applySync(undefined, args as never, { timeout: timeoutMs() });
  };

  const { queue } = bridge;
  const payload = JSON.stringify({
    kind: request.kind,
    module: request.module,
    exportName: request.exportName,
    args: `[${request.argsJson}]`,
    seed: request.seed,
    nowMs: request.nowMs,
  });

  try {
    if (request.kind === "action" || request.kind === "httpAction") {
      const previous = await driveAction(
        live,
        bridge,
        handler,
        payload,
        request.timeLimitMs ?? ACTION_TIME_LIMIT_MS,
      );
      if (previous !== "clean") return { stale: describeVerdict(runtime, previous) };
      return actionOutcome(bridge, userTimeMs());
    }
    const previous = (await enter(live.start, [payload, live.verdictDue !== null])) as string;
    if (previous !== "clean") return { stale: describeVerdict(runtime, previous) };
    while (bridge.outcome === null) {
      const call = queue.shift();
      if (call === undefined) {
        // Nothing to answer and no outcome: the function awaits something that never settles.
        throw new NeverSettledError();
      }
      if (bridge.yieldDue) {
        bridge.yieldDue = false;
        await new Promise((resolve) => setImmediate(resolve));
      }
      let reply: Reply;
      try {
        reply = replyOf(
          await (call.started ?? handler.async(call.op, parseSyscallArgs(call.op, call.argsJson))),
        );
      } catch (e) {
        reply = failureReply(bridge, e);
      }
      if (used() >= limitNs) throw timeoutError();
      await enter(live.settle, [call.id, reply.ok, reply.answer, reply.ahead]);
    }
    const outcome = JSON.parse(bridge.outcome) as
      | { ok: true; value: unknown; logs: LogLine[] }
      | { ok: false; error: ExecutionError; logs: LogLine[] };
    // Whether it left pre-existing state changed is asked when the context
    // next starts an execution, once every microtask this one left has run
    // (the last call into the isolate ran them): code that runs after the
    // outcome counts too.
    if (used() >= limitNs) throw timeoutError();
    if (bridge.fatal !== null) {
      return {
        value: {
          ok: false,
          error: fatalError(bridge.fatal),
          logs: outcome.logs,
          userTimeMs: userTimeMs(),
        },
        clean: false,
      };
    }
    // Built field by field: spreading the parsed outcome costs a few µs per execution (measured).
    const value: ExecutionOutcome = outcome.ok
      ? { ok: true, value: outcome.value, logs: outcome.logs, userTimeMs: userTimeMs() }
      : { ok: false, error: outcome.error, logs: outcome.logs, userTimeMs: userTimeMs() };
    return { value, clean: true };
  } catch (e) {
    // Stopped midway (time, memory, a function that never finishes): the
    // context's state is whatever it was then. Stopped by the slice, it
    // runs again from the start in the background.
    if (sliced && !isolate.isDisposed && isTimeout(e) && used() < limitNs) {
      // A call it handed to storage may still be running: it must be done
      // before the transaction restarts, or it would land in the next run.
      await Promise.allSettled(queue.map((c) => c.started));
      return { value: MOVED, clean: false };
    }
    return {
      value: {
        ok: false,
        error: runtimeError(e, isolate, request),
        logs: [],
        userTimeMs: userTimeMs(),
      },
      clean: false,
    };
  } finally {
    live.slot.current = null;
  }

  function timeoutError(): Error {
    return Object.assign(new Error("Script execution timed out."), { tesseraTimeout: true });
  }
}

/** Whether `e` says an execution ran out of time (an entry's timeout, or the budget checked between entries). */
function timedOut(e: unknown): boolean {
  return /timed out/i.test(e instanceof Error ? e.message : String(e));
}

/** isolated-vm's error for an entry that reached its timeout (not the budget checked between entries). */
function isTimeout(e: unknown): boolean {
  return timedOut(e) && (e as { tesseraTimeout?: boolean } | null)?.tesseraTimeout !== true;
}

/** Width of the windows call deadlines are rounded up to (see sharedDeadline). */
export const DEADLINE_WINDOW_MS = 50;

/**
 * A call's timeout, lengthened so that its deadline falls on the next multiple
 * of DEADLINE_WINDOW_MS. isolated-vm arms a timer for every timed call into an
 * isolate, and its timer thread wakes at each deadline even though the call
 * returned long before: with deadlines a second out and a thousand calls a
 * second, that thread woke about a thousand times a second, each time taking
 * the CPU from the event loop on a busy two-core machine. Calls whose
 * deadlines share a window expire together, in one or two wakes. A runaway
 * execution is stopped up to DEADLINE_WINDOW_MS later than its budget; the
 * budget itself is still checked after every call.
 */
export function sharedDeadline(timeoutMs: number): number {
  const deadline = performance.now() + timeoutMs;
  const rest = DEADLINE_WINDOW_MS - (deadline % DEADLINE_WINDOW_MS);
  return Math.ceil(timeoutMs + (rest === DEADLINE_WINDOW_MS ? 0 : rest));
}

/** Wall-clock limit of an action (the Convex docs: 10 minutes). */
export const ACTION_TIME_LIMIT_MS = 10 * 60_000;
class ActionTimeoutError extends Error {}

/**
 * Runs an action: unlike queries and mutations, its async syscalls (nested
 * function calls, fetches, timers) run concurrently and are answered as
 * they finish. It ends when the handler's promise settles; anything still
 * pending then is abandoned with the context. Returns the verdict on the
 * context's previous execution: unless "clean", the action did not start.
 *
 * The action's code runs on its isolate's own thread (isolated-vm's async
 * `apply`), never on the server's: an action may compute as long as its
 * time limit allows without holding up anyone else. Its syscalls are
 * answered on the server's thread, a hop each, which actions (waiting on
 * fetches, timers and nested calls) can afford.
 */
async function driveAction(
  live: LiveContext,
  bridge: Bridge,
  handler: SyscallHandler,
  payload: string,
  limitMs: number,
): Promise<string> {
  const { queue } = bridge;
  const deadline = performance.now() + limitMs;
  let inflight = 0;
  /** Entries into the isolate under way (each may make calls or finish the action). */
  let entering = 0;
  /** Called when no entry is under way any more. */
  let drained: (() => void) | null = null;
  const left = () => {
    entering--;
    if (entering === 0) drained?.();
  };
  let over = false;
  let finish: (e?: unknown) => void = () => {};
  const finished = new Promise<void>((resolve, reject) => {
    finish = (e) => (e === undefined ? resolve() : reject(e));
  });
  const timer = setTimeout(() => end(new ActionTimeoutError()), limitMs);
  function end(e?: unknown): void {
    if (over) return;
    over = true;
    clearTimeout(timer);
    finish(e);
  }
  /** Enters the isolate; the entry is stopped with the action's time limit at the latest. */
  function enter(ref: ivm.Reference, args: unknown[], then?: (result: unknown) => void): void {
    entering++;
    const timeout = Math.max(1, Math.ceil(deadline - performance.now()));
    (ref.apply(undefined, args as never, { timeout }) as Promise<unknown>).then(
      (result) => {
        left();
        then?.(result);
        pump();
      },
      (e: unknown) => {
        left();
        end(e);
      },
    );
  }
  function pump(): void {
    if (over) return;
    while (queue.length > 0) {
      const call = queue.shift()!;
      const active = handler.passive?.(call.op) !== true;
      if (active) inflight++;
      Promise.resolve()
        .then(() => handler.async(call.op, parseSyscallArgs(call.op, call.argsJson)))
        .then(replyOf, (e: unknown) => failureReply(bridge, e))
        .then(({ ok, answer, ahead }) => {
          if (active) inflight--;
          if (over) return;
          enter(live.settle, [call.id, ok, answer, ahead]);
        });
    }
    if (bridge.outcome !== null) end();
    else if (inflight === 0 && entering === 0) end(new NeverSettledError("action"));
  }
  let previous = "clean";
  enter(live.start, [payload, live.verdictDue !== null], (verdict) => {
    previous = verdict as string;
    // The context's previous execution left it changed: nothing started.
    if (previous !== "clean") end();
  });
  try {
    await finished;
  } finally {
    // Entries still under way (another answer settling, a timer's callback,
    // a loop the time limit stopped waiting for) must not outlive the action
    // on its isolate: the next execution there would wait behind them.
    if (entering > 0) {
      await new Promise<void>((resolve) => {
        const grace = setTimeout(resolve, ACTION_DRAIN_MS);
        drained = () => {
          clearTimeout(grace);
          resolve();
        };
      });
      if (entering > 0) live.isolate.dispose();
    }
  }
  return previous;
}

/** How long an ended action's entries still under way may take before its isolate is disposed. */
const ACTION_DRAIN_MS = 100;

function actionOutcome(
  bridge: Bridge,
  userTimeMs: number,
): { value: ExecutionOutcome; clean: false } {
  const outcome = JSON.parse(bridge.outcome!) as
    | { ok: true; value: unknown; logs: LogLine[] }
    | { ok: false; error: ExecutionError; logs: LogLine[] };
  // Actions never leave a context to reuse (they may change anything, at any time).
  if (bridge.fatal !== null)
    return {
      value: { ok: false, error: fatalError(bridge.fatal), logs: outcome.logs, userTimeMs },
      clean: false,
    };
  return { value: { ...outcome, userTimeMs }, clean: false };
}

function fatalError(e: unknown): ExecutionError {
  if (e instanceof SyscallError) return { message: e.message, name: "Error", stack: "" };
  return {
    message: "Internal error while running a syscall",
    name: "Error",
    stack: e instanceof Error ? (e.stack ?? "") : String(e),
    kind: "internal",
  };
}

class NeverSettledError extends Error {
  constructor(kind: "action" | "udf" = "udf") {
    super(
      kind === "action"
        ? "Your action never finished: it is awaiting a promise that nothing can settle (no call, fetch or timer of it is pending)"
        : "Your function never finished: it is awaiting a promise that nothing can settle (only Convex's own async operations complete in queries and mutations)",
    );
  }
}

/** Maps a failure of the isolate itself (timeout, memory, disposal) to a message for the caller. */
function runtimeError(e: unknown, isolate: ivm.Isolate, request: ExecutionRequest): ExecutionError {
  if (e instanceof NeverSettledError) return { message: e.message, name: "Error", stack: "" };
  if (
    e instanceof ActionTimeoutError ||
    ((request.kind === "action" || request.kind === "httpAction") && timedOut(e))
  ) {
    const limit = request.timeLimitMs ?? ACTION_TIME_LIMIT_MS;
    return {
      message: `Function execution timed out: your action ran for more than ${limit / 1000} s (the limit for actions)`,
      name: "Error",
      stack: "",
      kind: "timeout",
    };
  }
  const message = e instanceof Error ? e.message : String(e);
  const limit = request.timeLimitMs ?? 1000;
  if (timedOut(e)) {
    return {
      message: `Function execution timed out: your ${request.kind} used more than ${limit / 1000} s of JavaScript execution time (the limit for queries and mutations)`,
      name: "Error",
      stack: "",
      kind: "timeout",
    };
  }
  if (isolate.isDisposed || /memory limit|disposed/i.test(message)) {
    return {
      message:
        "JavaScript execution ran out of memory: your function used more memory than the limit of its isolate",
      name: "Error",
      stack: "",
      kind: "memory",
    };
  }
  return {
    message,
    name: "Error",
    stack: e instanceof Error ? (e.stack ?? "") : "",
    kind: "internal",
  };
}
