/**
 * Test harness: an isolated-vm isolate whose contexts have the prelude
 * evaluated, and helpers to run code in them and copy results out.
 */
import ivm from "isolated-vm";
import { buildPrelude } from "../../../src/runtime/prelude/build.js";

export interface PreludeContext {
  context: ivm.Context;
  /** Runs `body` as a function body with `args` available as `$0`, `$1`, …; returns a copy of the result. */
  run<T = unknown>(body: string, ...args: unknown[]): T;
  /** Same, awaiting a returned promise. */
  runAsync<T = unknown>(body: string, ...args: unknown[]): Promise<T>;
  release(): void;
}

export interface PreludeIsolate {
  isolate: ivm.Isolate;
  newContext(): Promise<PreludeContext>;
  dispose(): void;
}

export async function preludeIsolate(): Promise<PreludeIsolate> {
  const code = await buildPrelude();
  const isolate = new ivm.Isolate({ memoryLimit: 128 });
  const script = await isolate.compileScript(code, { filename: "tessera-prelude.js" });
  return {
    isolate,
    async newContext() {
      const context = await isolate.createContext();
      await script.run(context);
      return {
        context,
        run<T>(body: string, ...args: unknown[]): T {
          return context.evalClosureSync(body, args, {
            arguments: { copy: true },
            result: { copy: true },
          }) as T;
        },
        async runAsync<T>(body: string, ...args: unknown[]): Promise<T> {
          return (await context.evalClosure(`return (async () => { ${body} })();`, args, {
            arguments: { copy: true },
            result: { copy: true, promise: true },
          })) as T;
        },
        release() {
          context.release();
        },
      };
    },
    dispose() {
      isolate.dispose();
    },
  };
}

/**
 * Source of a function, usable both in Node and in the isolate, that runs `f`
 * and reports its result or the error's constructor name, name and message.
 */
export const CATCHING = `
  function catching(f) {
    try {
      return { ok: f() };
    } catch (e) {
      return { error: { ctor: e && e.constructor && e.constructor.name, name: e && e.name, message: e && e.message } };
    }
  }
`;

export interface Caught<T> {
  ok?: T;
  error?: { ctor: string; name: string; message: string };
}

/** Runs `f` in Node the way CATCHING does in the isolate. */
export function catching<T>(f: () => T): Caught<T> {
  try {
    return { ok: f() };
  } catch (e) {
    const err = e as Error;
    return { error: { ctor: err?.constructor?.name, name: err?.name, message: err?.message } };
  }
}
