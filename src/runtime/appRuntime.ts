/**
 * The runtime of one deployed app version: a pool of isolates, each with the
 * prelude (Web globals), the bootstrap (syscall bridge) and the app's linked
 * modules compiled once, and contexts into which those scripts have been run.
 * Module import code runs in each context with the deployment's frozen time
 * and seed, so every context starts from the same imported state.
 *
 * A context serves executions one at a time for as long as none of them
 * changes state that existed before it began: once the app is imported the
 * context is *sealed* (prelude/guard.ts registers everything that exists) and
 * each execution reports whether it touched any of it. A context that was
 * touched is discarded and the next execution gets a fresh one. Apps the
 * guard cannot follow (instrument.ts, guard.ts) get a fresh context for every
 * execution. See README.md, "Context reuse".
 *
 * V8 snapshots would skip re-running import code, but isolated-vm documents
 * its snapshot support as unstable ("You should not use this feature"), and
 * on this Node/V8 contexts made from a snapshot lost the snapshot's globals.
 */
import { randomBytes } from "node:crypto";
import v8 from "node:v8";
import ivm from "isolated-vm";
import { BackgroundPolicy, SYNC_SLICE_MS, YIELD_AFTER_MS } from "./backgroundPolicy.js";
import type { FunctionSpec } from "./functionSpecs.mjs";
import { APP_SCRIPT_NAME, type LinkedApp } from "./loader.js";
import { buildPrelude } from "./prelude/build.js";
import { buildBootstrap } from "./scripts.js";

export interface RuntimeOptions {
  /** Heap limit of each isolate, in MiB (default 64). */
  memoryLimitMb?: number;
  /** Isolates in the pool (default 4). Each runs one execution at a time. */
  isolates?: number;
  /** Contexts kept ready per isolate besides the one in use (default 2, or 1 when contexts are reused). */
  warmContexts?: number;
  /** Deployment time (ms since the epoch) that module import code sees (default: now). */
  importTimeMs?: number;
  /** Seed of `Math.random` during module import (default: random, fixed for this deployment). */
  importSeed?: string;
  /** Let a context serve several executions while none changes pre-existing state (default true). */
  contextReuse?: boolean;
  /**
   * How long an entry of a query or mutation may answer its async syscalls
   * within the call before the next one waits for a turn of the event loop
   * (default YIELD_AFTER_MS; tests of the pool alone turn it off with Infinity).
   */
  yieldAfterMs?: number;
  /**
   * How long one entry of a query or mutation may run on the server's thread
   * before it is stopped and the execution runs again in the background, on
   * its isolate's thread (default SYNC_SLICE_MS; tests that count the pool's
   * isolates raise it, as a loaded machine may otherwise move executions).
   */
  syncSliceMs?: number;
}

/** Hooks of the execution a context is serving (execution.ts); its host callbacks call them. */
export interface ExecutionHooks {
  sync(op: string, argsJson: string): string;
  /** Starts an async syscall: its answer if given at once ("o"/"e", payload, answers ahead), else undefined (`settle` follows). */
  async(id: number, op: string, argsJson: string): string | undefined;
  done(outcomeJson: string): void;
}

/** A context with the runtime and the app imported, and the host's handles on it. */
export interface LiveContext {
  readonly context: ivm.Context;
  readonly isolate: ivm.Isolate;
  /**
   * `__tessera_runtime.start(requestJson, afterAnother)`: "clean" once
   * started; with `afterAnother`, the verdict on the previous execution
   * ("tainted:" and why) when it left the context changed, and nothing
   * started.
   */
  readonly start: ivm.Reference<(requestJson: string, afterAnother: boolean) => string>;
  /** `__tessera_runtime.settle(id, ok, payload, ahead?)`. */
  readonly settle: ivm.Reference<
    (id: number, ok: boolean, payload: string, ahead?: string) => void
  >;
  /** `__tessera_runtime.analyze()`: the app's functions (JSON). */
  readonly analyze: ivm.Reference<() => string>;
  /** The execution being served, if any. */
  readonly slot: { current: ExecutionHooks | null };
  /** Sealed: may serve another execution if this one leaves it clean. */
  readonly sealed: boolean;
  /** Executions served so far. */
  uses: number;
  /**
   * The function (`module:export`) whose execution this context served last
   * and whose verdict is still due: the next `start` asks for it.
   */
  verdictDue: string | null;
}

/** How contexts have been used (diagnostics, tests and the benchmark). */
export interface ReuseStats {
  /** Whether contexts are reused, and if not, why. */
  enabled: boolean;
  reason?: string;
  executions: number;
  /** Executions that ran in a context that had served another before. */
  reused: number;
  /**
   * Executions after which the context was discarded because they changed
   * pre-existing state (counted when found: at the context's next use).
   */
  tainted: number;
  /**
   * Executions run in a context used only for them because their function
   * tainted its context in a row (a module-level cache filled on every call,
   * say): a sealed context costs more to make than a throwaway one.
   */
  throwaway: number;
  /** The latest taint, described (file and line where known). */
  lastTaint?: string;
}

export type { FunctionSpec };

export interface ModuleSpec {
  path: string;
  functions: FunctionSpec[];
}

/** What the app's modules did at import time went wrong. */
export class AppLoadError extends Error {
  override name = "AppLoadError";
}

interface PooledIsolate {
  isolate: ivm.Isolate;
  /** The scripts, compiled for this isolate, run into every new context. */
  scripts: Promise<ivm.Script[]>;
  busy: boolean;
  /** Contexts ready for use: sealed when contexts are reused. */
  warm: Array<Promise<LiveContext>>;
  /** Unsealed contexts ready for functions that run in throwaway contexts. */
  warmThrowaway: Array<Promise<LiveContext>>;
  /** A sealed context that served executions and is still clean. */
  current: LiveContext | null;
}

interface ScriptSource {
  code: string;
  filename: string;
}

// Contexts are discarded after one execution, and V8 is slow to reclaim them:
// under a small heap limit isolated-vm would kill the isolate first. With
// --expose-gc the bootstrap keeps a private handle to collect them on time.
// (Flags must be set before the first isolate exists.)
v8.setFlagsFromString("--expose-gc");

/** Collect garbage in an isolate once its heap passes this share of the limit. */
const COLLECT_AT = 0.3;

/** Throwaway executions after a function's first streak of taints, and at most. */
const FIRST_BACKOFF = 16;
const MAX_BACKOFF = 4096;

interface FunctionPolicy {
  /** Consecutive executions in a sealed context that tainted it. */
  streak: number;
  /** Executions still to run in throwaway contexts. */
  throwawayLeft: number;
  /** Throwaway executions after the next streak. */
  backoff: number;
}

const importEnv = (seed: string, nowMs: number) =>
  `globalThis.__tessera_runtime.beginImport(${JSON.stringify(seed)}, ${nowMs});`;

export class AppRuntime {
  private readonly pool: PooledIsolate[] = [];
  /** Callers in line for an isolate; handed an error when none can be had (disposed, failed to start). */
  private readonly waiting: Array<(p: PooledIsolate | Error) => void> = [];
  private disposed = false;
  /** When the executions handed on since the event loop last turned began (see `handOff`). */
  private stretchFrom: number | null = null;
  /** Isolates handed on at the next turn of the event loop (see `handOff`). */
  private deferredHandOffs = 0;
  private readonly reuseStats: ReuseStats;

  private constructor(
    private readonly scripts: ScriptSource[],
    private readonly options: Required<
      Pick<
        RuntimeOptions,
        "memoryLimitMb" | "isolates" | "warmContexts" | "yieldAfterMs" | "syncSliceMs"
      >
    >,
    readonly modules: ModuleSpec[],
    readonly app: LinkedApp,
    reuse: boolean,
  ) {
    const off = !reuse
      ? "context reuse is turned off"
      : app.reuse.possible
        ? undefined
        : app.reuse.reason;
    this.reuseStats = {
      enabled: off === undefined,
      ...(off !== undefined ? { reason: off } : {}),
      executions: 0,
      reused: 0,
      tainted: 0,
      throwaway: 0,
    };
  }

  /**
   * Imports the app's modules (in a first context) and analyses them.
   * Throws `AppLoadError` when module import code throws.
   */
  static async create(app: LinkedApp, options: RuntimeOptions = {}): Promise<AppRuntime> {
    const [prelude, bootstrap] = await Promise.all([buildPrelude(), buildBootstrap()]);
    const seed = options.importSeed ?? randomBytes(16).toString("hex");
    const nowMs = options.importTimeMs ?? Date.now();
    // Two scripts per context: each run is a round trip to the isolate's thread.
    const scripts = [
      {
        code: `${prelude}\n;${bootstrap}\n;${importEnv(seed, nowMs)}\n`,
        filename: "tessera:runtime.js",
      },
      { code: app.script, filename: APP_SCRIPT_NAME },
    ];
    const reuse = options.contextReuse ?? true;
    const runtime = new AppRuntime(
      scripts,
      {
        memoryLimitMb: options.memoryLimitMb ?? 64,
        isolates: options.isolates ?? 4,
        warmContexts: options.warmContexts ?? (reuse ? 1 : 2),
        yieldAfterMs: options.yieldAfterMs ?? YIELD_AFTER_MS,
        syncSliceMs: options.syncSliceMs ?? SYNC_SLICE_MS,
      },
      [],
      app,
      reuse,
    );
    try {
      const analysis = await runtime.withContext(async (live) => ({
        value: (await live.analyze.apply(undefined, [], { timeout: 10_000 })) as string,
        clean: false,
      }));
      runtime.modules.push(...(JSON.parse(analysis) as ModuleSpec[]));
    } catch (e) {
      runtime.dispose();
      throw e instanceof AppLoadError
        ? e
        : new AppLoadError(`Failed to analyze the app's modules: ${(e as Error).message}`);
    }
    return runtime;
  }

  /**
   * Async syscalls of queries and mutations: answered within the call, after
   * it because storage answered later (or behind one that did), or after it
   * because the entry had held the thread long enough (`yieldAfterMs`).
   */
  readonly asyncSyscalls = { atOnce: 0, later: 0, yielded: 0 };
  /** Which functions run on their isolate's thread, and how often (execution.ts, SYNC_SLICE_MS). */
  readonly background = new BackgroundPolicy();

  /** See `RuntimeOptions.yieldAfterMs`. */
  get yieldAfterMs(): number {
    return this.options.yieldAfterMs;
  }

  /** See `RuntimeOptions.syncSliceMs`. */
  get syncSliceMs(): number {
    return this.options.syncSliceMs;
  }

  /** Whether contexts are reused, and how often executions found one ready. */
  get reuse(): Readonly<ReuseStats> {
    return this.reuseStats;
  }

  /** Isolates alive in the pool: one while executions never overlap across a turn of the event loop. */
  get isolateCount(): number {
    return this.pool.filter((x) => !x.isolate.isDisposed).length;
  }

  private newIsolate(): PooledIsolate {
    const isolate = new ivm.Isolate({ memoryLimit: this.options.memoryLimitMb });
    const scripts = Promise.all(
      this.scripts.map((s) => isolate.compileScript(s.code, { filename: s.filename })),
    );
    scripts.catch(() => {});
    const p: PooledIsolate = {
      isolate,
      scripts,
      busy: false,
      warm: [],
      warmThrowaway: [],
      current: null,
    };
    this.pool.push(p);
    return p;
  }

  /**
   * A new context with the prelude, bootstrap and app imported, its host
   * callbacks installed, and (when contexts are reused) sealed.
   */
  private async prepare(p: PooledIsolate, seal = this.reuseStats.enabled): Promise<LiveContext> {
    const context = await p.isolate.createContext();
    const refs: ivm.Reference[] = [];
    const ref = async (from: ivm.Reference, name: string) => {
      const r = await from.get(name, { reference: true });
      refs.push(r);
      return r;
    };
    try {
      const [runtimeScript, appScript] = await p.scripts;
      await runtimeScript!.run(context, { timeout: 10_000 });
      // The host takes the runtime's entry points before the app's code runs:
      // user code never reaches them.
      const runtimeRef = await ref(context.global, "__tessera_runtime");
      const start = await ref(runtimeRef, "start");
      const settle = await ref(runtimeRef, "settle");
      const analyze = await ref(runtimeRef, "analyze");
      const prepare = await ref(runtimeRef, "prepare");
      const collect = await ref(runtimeRef, "collect");
      await context.eval("delete globalThis.__tessera_runtime");
      try {
        await appScript!.run(context, { timeout: 10_000 });
      } catch (e) {
        const err = e as Error;
        throw new AppLoadError(`Failed to import the app's modules: ${err.stack ?? err.message}`);
      }
      const heap = p.isolate.getHeapStatisticsSync().used_heap_size;
      if (heap > this.options.memoryLimitMb * 1024 * 1024 * COLLECT_AT) {
        await collect.apply(undefined, []);
      }
      // Callbacks after the app's import code: prepare() takes them off the global object.
      const slot: LiveContext["slot"] = { current: null };
      const jail = context.global;
      await jail.set("__tessera_syscall", new ivm.Callback(syncCallback(slot)));
      await jail.set("__tessera_async_syscall", new ivm.Callback(asyncCallback(slot)));
      await jail.set("__tessera_done", new ivm.Callback(doneCallback(slot)));
      const sealJson = (await prepare.apply(undefined, [seal], { timeout: 10_000 })) as string;
      let sealed = false;
      if (seal) {
        const result = JSON.parse(sealJson) as { reusable: boolean; reason?: string };
        if (result.reusable) sealed = true;
        else this.turnReuseOff(result.reason ?? "the app's imported state cannot be watched");
      }
      for (const r of [runtimeRef, prepare, collect]) r.release();
      return {
        context,
        isolate: p.isolate,
        start: start as LiveContext["start"],
        settle: settle as LiveContext["settle"],
        analyze: analyze as LiveContext["analyze"],
        slot,
        sealed,
        uses: 0,
        verdictDue: null,
      };
    } catch (e) {
      for (const r of refs) r.release();
      context.release();
      throw e;
    }
  }

  private turnReuseOff(reason: string): void {
    if (!this.reuseStats.enabled) return;
    this.reuseStats.enabled = false;
    this.reuseStats.reason = reason;
    for (const p of this.pool) {
      if (p.current) {
        this.discard(p.current);
        p.current = null;
      }
    }
  }

  private warmUp(p: PooledIsolate): void {
    if (p.isolate.isDisposed || this.disposed) return;
    const wanted = this.reuseStats.enabled && p.current ? 1 : this.options.warmContexts;
    while (p.warm.length < wanted) {
      const context = this.prepare(p);
      context.catch(() => {});
      p.warm.push(context);
    }
    if (this.reuseStats.enabled && this.throwawayDemand > 0) {
      while (p.warmThrowaway.length < 1) {
        const context = this.prepare(p, false);
        context.catch(() => {});
        p.warmThrowaway.push(context);
      }
    }
  }

  private discard(live: LiveContext): void {
    if (live.isolate.isDisposed) return;
    live.start.release();
    live.settle.release();
    live.analyze.release();
    live.context.release();
  }

  private async acquire(): Promise<PooledIsolate> {
    if (this.disposed) throw new Error("This app runtime was disposed");
    let p = this.pool.find((x) => !x.busy && !x.isolate.isDisposed);
    if (!p && this.isolateCount === 0) p = this.newIsolate();
    if (!p) return this.waitForIsolate();
    p.busy = true;
    return p;
  }

  /**
   * Waits in line for a busy isolate, which is usually handed on within
   * this turn of the event loop; a waiter still in line a turn later starts
   * another isolate while the pool has room (README.md, "Isolate pool":
   * why one warm isolate beats several).
   */
  private waitForIsolate(): Promise<PooledIsolate> {
    return new Promise((resolve, reject) => {
      let served = false;
      const waiter = (p: PooledIsolate | Error) => {
        served = true;
        if (spill !== undefined) clearImmediate(spill);
        if (p instanceof Error) reject(p);
        else resolve(p);
      };
      this.waiting.push(waiter);
      const check = () => {
        spill = undefined;
        if (served || this.disposed || this.isolateCount >= this.options.isolates) return;
        // The line is moving, a turn at a time (`handOff`): not a reason for another isolate.
        if (this.deferredHandOffs > 0) {
          spill = setImmediate(check);
          return;
        }
        // Not in line: an isolate is being handed to it.
        const at = this.waiting.indexOf(waiter);
        if (at < 0) return;
        this.waiting.splice(at, 1);
        waiter(this.busyNewIsolate());
      };
      let spill = this.isolateCount < this.options.isolates ? setImmediate(check) : undefined;
    });
  }

  /**
   * A new isolate, already taken, for a caller in line, or the error that
   * stopped it (handed to that caller: thrown from a timer or a release it
   * would end the process or fail another caller).
   */
  private busyNewIsolate(): PooledIsolate | Error {
    try {
      const p = this.newIsolate();
      p.busy = true;
      return p;
    } catch (e) {
      return e instanceof Error ? e : new Error(String(e));
    }
  }

  private release(p: PooledIsolate): void {
    if (p.isolate.isDisposed) {
      // Killed (memory limit): replace it.
      this.pool.splice(this.pool.indexOf(p), 1);
      if (!this.disposed && this.waiting.length > 0) this.waiting.shift()!(this.busyNewIsolate());
      return;
    }
    const next = this.waiting.shift();
    if (next) this.handOff(next, p);
    else p.busy = false;
    this.warmUp(p);
  }

  /**
   * Gives a released isolate to the next waiter: at once, unless the
   * executions handed on since the event loop last turned have held it
   * `yieldAfterMs` already. Each waiter resumes in a microtask, so a burst of
   * executions (a query set of thousands, or a commit changing thousands of
   * results) would otherwise run as one stretch: 2,000 queries held the loop
   * 343-635 ms with no timer firing, measured.
   */
  private handOff(next: (p: PooledIsolate | Error) => void, p: PooledIsolate): void {
    const now = performance.now();
    if (this.stretchFrom === null) {
      this.stretchFrom = now;
      setImmediate(() => {
        this.stretchFrom = null;
      });
    } else if (now - this.stretchFrom >= this.options.yieldAfterMs) {
      this.deferredHandOffs++;
      setImmediate(() => {
        this.deferredHandOffs--;
        if (this.disposed) next(new Error("This app runtime was disposed"));
        else if (p.isolate.isDisposed) {
          // Killed meanwhile (the context prepared ahead ran out of memory): replace it, as release() does.
          this.pool.splice(this.pool.indexOf(p), 1);
          next(this.busyNewIsolate());
        } else next(p);
      });
      return;
    }
    next(p);
  }

  /**
   * Runs an execution in a context of a pooled isolate: the context the
   * previous execution left, or a new one. `f` says whether the context may
   * serve again (nothing went wrong); otherwise it is discarded. Whether the
   * execution left pre-existing state unchanged is asked when the context
   * next starts one (`LiveContext.verdictDue`): if it did not, `f` reports
   * `stale` without having run anything, the context is discarded and `f`
   * runs again in another.
   */
  async withContext<T>(
    f: (live: LiveContext) => Promise<{ value: T; clean: boolean } | { stale: string }>,
    /** The function being run (`module:export`), for the choice between reuse and a throwaway context. */
    fn?: string,
  ): Promise<T> {
    const policy = fn === undefined ? undefined : this.policyOf(fn);
    const p = await this.acquire();
    let live: LiveContext | undefined;
    try {
      for (;;) {
        // Decided again after a stale context: its verdict may have just changed this policy.
        const throwaway =
          policy === undefined || (policy.throwawayLeft > 0 && this.reuseStats.enabled);
        if (policy !== undefined && throwaway) {
          policy.throwawayLeft--;
          if (policy.throwawayLeft === 0) this.throwawayDemand--;
          this.reuseStats.throwaway++;
        }
        if (throwaway && this.reuseStats.enabled) {
          live = await (p.warmThrowaway.shift() ?? this.prepare(p, false));
        } else {
          live = p.current ?? (await (p.warm.shift() ?? this.prepare(p)));
          p.current = null;
        }
        const result = await f(live);
        const due = live.verdictDue;
        live.verdictDue = null;
        if ("stale" in result) {
          // The previous execution changed pre-existing state: nothing ran here.
          this.reuseStats.tainted++;
          this.reuseStats.lastTaint = result.stale;
          if (due !== null) this.observe(this.policyOf(due), true);
          this.discard(live);
          live = undefined;
          continue;
        }
        if (due !== null) this.observe(this.policyOf(due), false);
        if (policy !== undefined) this.reuseStats.executions++;
        if (live.uses > 0) this.reuseStats.reused++;
        live.uses++;
        if (
          result.clean &&
          live.sealed &&
          fn !== undefined &&
          this.reuseStats.enabled &&
          !p.isolate.isDisposed
        ) {
          live.verdictDue = fn;
          p.current = live;
          live = undefined;
        }
        return result.value;
      }
    } finally {
      if (live) this.discard(live);
      this.release(p);
    }
  }

  private readonly policies = new Map<string, FunctionPolicy>();
  /** Functions currently running in throwaway contexts (keeps a throwaway context warm). */
  private throwawayDemand = 0;

  private policyOf(fn: string): FunctionPolicy {
    let policy = this.policies.get(fn);
    if (policy === undefined) {
      policy = { streak: 0, throwawayLeft: 0, backoff: FIRST_BACKOFF };
      this.policies.set(fn, policy);
    }
    return policy;
  }

  /**
   * A function whose executions taint their context twice in a row runs in
   * throwaway contexts for its next `backoff` executions, then tries a
   * sealed one again; each further streak doubles the backoff.
   */
  private observe(policy: FunctionPolicy, tainted: boolean): void {
    if (!tainted) {
      policy.streak = 0;
      policy.backoff = FIRST_BACKOFF;
      return;
    }
    policy.streak++;
    if (policy.streak < 2) return;
    policy.streak = 0;
    policy.throwawayLeft = policy.backoff;
    policy.backoff = Math.min(policy.backoff * 2, MAX_BACKOFF);
    this.throwawayDemand++;
  }

  /**
   * Evaluates `expression` (its result copied out) in a context used only for
   * this. The expression runs pushed code (a schema's, crons' or auth config's
   * `export()`): one that never returns is stopped after `timeoutMs`, as module
   * imports are, instead of holding a push and a thread forever.
   */
  async evaluateOnce<T>(expression: string, timeoutMs = 10_000): Promise<T> {
    return this.withContext(async (live) => {
      try {
        return {
          value: (await live.context.eval(expression, { copy: true, timeout: timeoutMs })) as T,
          clean: false,
        };
      } catch (e) {
        if (e instanceof Error && /timed out/i.test(e.message))
          throw new Error(`it did not finish within ${timeoutMs / 1000} s`);
        throw e;
      }
    });
  }

  /** The spec of a function, or undefined. */
  functionSpec(module: string, exportName: string): FunctionSpec | undefined {
    return this.modules
      .find((m) => m.path === module)
      ?.functions.find((f) => f.name === exportName);
  }

  /** Heap in use by each live isolate, in bytes (diagnostics and tests). */
  heapUsed(): number[] {
    return this.pool
      .filter((p) => !p.isolate.isDisposed)
      .map((p) => p.isolate.getHeapStatisticsSync().used_heap_size);
  }

  dispose(): void {
    this.disposed = true;
    for (const waiter of this.waiting.splice(0)) waiter(new Error("This app runtime was disposed"));
    for (const p of this.pool) if (!p.isolate.isDisposed) p.isolate.dispose();
    this.pool.length = 0;
  }
}

// The host callbacks of a context, made in a scope that holds only its slot
// (a V8 closure keeps its whole enclosing scope alive; these must not reach
// the context's handles).
function syncCallback(slot: LiveContext["slot"]) {
  return (op: string, argsJson: string): string => hooks(slot).sync(op, argsJson);
}

function asyncCallback(slot: LiveContext["slot"]) {
  return (id: number, op: string, argsJson: string): string | undefined =>
    hooks(slot).async(id, op, argsJson);
}

function doneCallback(slot: LiveContext["slot"]) {
  return (outcomeJson: string): void => hooks(slot).done(outcomeJson);
}

function hooks(slot: LiveContext["slot"]): ExecutionHooks {
  if (slot.current === null) throw new Error("No execution is in progress in this context");
  return slot.current;
}
