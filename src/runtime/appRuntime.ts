/**
 * The runtime of one deployed app version: a pool of isolates, each with the
 * prelude (Web globals), the bootstrap (syscall bridge) and the app's linked
 * modules compiled once, and a supply of fresh contexts into which those
 * scripts have already been run. Every execution gets a context of its own,
 * used once: no execution can see state another one left behind. Module
 * import code runs in each context with the deployment's frozen time and
 * seed, so every context starts from the same imported state. See README.md
 * for why (and what it costs).
 *
 * V8 snapshots would skip re-running import code, but isolated-vm documents
 * its snapshot support as unstable ("You should not use this feature"), and
 * on this Node/V8 contexts made from a snapshot lost the snapshot's globals.
 */
import { randomBytes } from "node:crypto";
import v8 from "node:v8";
import ivm from "isolated-vm";
import { APP_SCRIPT_NAME, type LinkedApp } from "./loader.js";
import { buildPrelude } from "./prelude/build.js";
import { buildBootstrap } from "./scripts.js";

export interface RuntimeOptions {
  /** Heap limit of each isolate, in MiB (default 64). */
  memoryLimitMb?: number;
  /** Isolates in the pool (default 4). Each runs one execution at a time. */
  isolates?: number;
  /** Fresh contexts kept ready per isolate (default 2). */
  warmContexts?: number;
  /** Deployment time (ms since the epoch) that module import code sees (default: now). */
  importTimeMs?: number;
  /** Seed of `Math.random` during module import (default: random, fixed for this deployment). */
  importSeed?: string;
}

export interface FunctionSpec {
  name: string;
  kind: "query" | "mutation" | "action" | "httpAction";
  visibility: "public" | "internal";
  /** Validator JSON text from `exportArgs()`, or null. */
  args: string | null;
  /** Validator JSON text from `exportReturns()`, or null. */
  returns: string | null;
  /** Set when the function's validators could not be exported (e.g. an undefined validator). */
  error?: string;
}

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
  warm: Array<Promise<ivm.Context>>;
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

const importEnv = (seed: string, nowMs: number) =>
  `globalThis.__tessera_env.begin({ mode: "import", seed: ${JSON.stringify(seed)}, nowMs: ${nowMs} });`;

export class AppRuntime {
  private readonly pool: PooledIsolate[] = [];
  private readonly waiting: Array<(p: PooledIsolate) => void> = [];
  private disposed = false;

  private constructor(
    private readonly scripts: ScriptSource[],
    private readonly options: Required<
      Pick<RuntimeOptions, "memoryLimitMb" | "isolates" | "warmContexts">
    >,
    readonly modules: ModuleSpec[],
    readonly app: LinkedApp,
  ) {}

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
    const runtime = new AppRuntime(
      scripts,
      {
        memoryLimitMb: options.memoryLimitMb ?? 64,
        isolates: options.isolates ?? 4,
        warmContexts: options.warmContexts ?? 2,
      },
      [],
      app,
    );
    try {
      const analysis = await runtime.withContext(
        async (context) =>
          JSON.parse(
            await context.eval("__tessera_runtime.analyze()", { copy: true }),
          ) as ModuleSpec[],
      );
      runtime.modules.push(...analysis);
    } catch (e) {
      runtime.dispose();
      throw e instanceof AppLoadError
        ? e
        : new AppLoadError(`Failed to analyze the app's modules: ${(e as Error).message}`);
    }
    return runtime;
  }

  private newIsolate(): PooledIsolate {
    const isolate = new ivm.Isolate({ memoryLimit: this.options.memoryLimitMb });
    const scripts = Promise.all(
      this.scripts.map((s) => isolate.compileScript(s.code, { filename: s.filename })),
    );
    scripts.catch(() => {});
    const p: PooledIsolate = { isolate, scripts, busy: false, warm: [] };
    this.pool.push(p);
    return p;
  }

  /** A new context with the prelude, bootstrap and app imported. */
  private async freshContext(p: PooledIsolate): Promise<ivm.Context> {
    if (process.env.TESSERA_DEBUG_HEAP) {
      const h = p.isolate.getHeapStatisticsSync();
      console.log(
        "heap",
        (h.used_heap_size / 1048576).toFixed(1),
        "total",
        (h.total_heap_size / 1048576).toFixed(1),
        "limit",
        (h.heap_size_limit / 1048576).toFixed(1),
        "ext",
        (h.externally_allocated_size / 1048576).toFixed(1),
        "avail",
        (h.total_available_size / 1048576).toFixed(1),
      );
    }
    const context = await p.isolate.createContext();
    try {
      for (const [i, script] of (await p.scripts).entries()) {
        try {
          await script.run(context, { timeout: 10_000 });
        } catch (e) {
          if (this.scripts[i]!.filename !== APP_SCRIPT_NAME) throw e;
          const err = e as Error;
          throw new AppLoadError(`Failed to import the app's modules: ${err.stack ?? err.message}`);
        }
      }
      const heap = p.isolate.getHeapStatisticsSync().used_heap_size;
      if (heap > this.options.memoryLimitMb * 1024 * 1024 * COLLECT_AT) {
        await context.eval("__tessera_runtime.collect()");
      }
      return context;
    } catch (e) {
      context.release();
      throw e;
    }
  }

  private warmUp(p: PooledIsolate): void {
    while (p.warm.length < this.options.warmContexts && !p.isolate.isDisposed && !this.disposed) {
      const context = this.freshContext(p);
      context.catch(() => {});
      p.warm.push(context);
    }
  }

  private async acquire(): Promise<PooledIsolate> {
    if (this.disposed) throw new Error("This app runtime was disposed");
    let p = this.pool.find((x) => !x.busy && !x.isolate.isDisposed);
    if (!p && this.pool.filter((x) => !x.isolate.isDisposed).length < this.options.isolates)
      p = this.newIsolate();
    if (!p) p = await new Promise<PooledIsolate>((resolve) => this.waiting.push(resolve));
    p.busy = true;
    return p;
  }

  private release(p: PooledIsolate): void {
    if (p.isolate.isDisposed) {
      // Killed (memory limit): replace it.
      this.pool.splice(this.pool.indexOf(p), 1);
      if (!this.disposed && this.waiting.length > 0) {
        const next = this.newIsolate();
        next.busy = true;
        this.waiting.shift()!(next);
      }
      return;
    }
    const next = this.waiting.shift();
    if (next) next(p);
    else p.busy = false;
    this.warmUp(p);
  }

  /**
   * Runs `f` with a fresh context of a pooled isolate, used only for this
   * call, and the isolate it belongs to.
   */
  async withContext<T>(f: (context: ivm.Context, isolate: ivm.Isolate) => Promise<T>): Promise<T> {
    const p = await this.acquire();
    let context: ivm.Context | undefined;
    try {
      context = await (p.warm.shift() ?? this.freshContext(p));
      return await f(context, p.isolate);
    } finally {
      if (context && !p.isolate.isDisposed) context.release();
      this.release(p);
    }
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
    for (const p of this.pool) if (!p.isolate.isDisposed) p.isolate.dispose();
    this.pool.length = 0;
  }
}
