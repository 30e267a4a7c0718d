/**
 * Side-effecting APIs that queries and mutations must not use: `fetch` and
 * the timer functions throw in modes "import", "query" and "mutation". In
 * mode "action" the host will provide them; until it does they throw
 * "not supported yet". `queueMicrotask` is deterministic and always works.
 */
import { currentMode } from "./env.js";
import type { AbortSignal } from "./events.js";
import { resolvedPromise as resolved, promiseThen as then } from "./intrinsics.js";
import { preludeGlobal } from "./util.js";

/** The error for a side-effecting API used where it is not allowed. */
export function unavailable(name: string): Error {
  if (currentMode() === "action") return new Error(`not supported yet: ${name} in actions`);
  return new Error(`Can't use ${name} in queries and mutations. Please consider using an action.`);
}

export function fetch(_input: unknown, _init?: unknown): Promise<never> {
  throw unavailable("fetch");
}

export function setTimeout(_handler: unknown, _timeout?: unknown, ..._args: unknown[]): number {
  throw unavailable("setTimeout");
}

export function setInterval(_handler: unknown, _timeout?: unknown, ..._args: unknown[]): number {
  throw unavailable("setInterval");
}

export function clearTimeout(_id?: unknown): void {
  throw unavailable("clearTimeout");
}

export function clearInterval(_id?: unknown): void {
  throw unavailable("clearInterval");
}

/** Schedules `AbortSignal.timeout` (events.ts), or throws where timers are not allowed. */
export const abortSignalTimers: { timeout?: (ms: number, signal: AbortSignal) => void } = {
  timeout: () => {
    throw unavailable("AbortSignal.timeout");
  },
};

export function queueMicrotask(callback: unknown): void {
  if (typeof callback !== "function") {
    throw new TypeError(
      "Failed to execute 'queueMicrotask': parameter 1 is not of type 'Function'.",
    );
  }
  then.call(resolved, () => {
    try {
      (callback as () => void)();
    } catch (err) {
      // The prelude's reportError (console.js, evaluated only when needed).
      (preludeGlobal("reportError") as (error: unknown) => void)(err);
    }
  });
}
