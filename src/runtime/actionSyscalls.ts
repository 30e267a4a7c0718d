/**
 * The syscalls of actions: no database; `ctx.runQuery` / `runMutation` /
 * `runAction` (each its own execution, run by the caller's environment),
 * the caller's identity, and Tessera's own `tessera/sleep` (timers) and
 * `tessera/fetch` (the `fetch` global), which the host performs.
 */
import type { JsonValue } from "../values/index.js";
import { isPlainObject } from "../values/index.js";
import type { SyscallHandler } from "./execution.js";
import { SyscallError } from "./execution.js";
import {
  NOT_SUPPORTED_ANYWHERE,
  STORAGE_OPS,
  type StorageHooks,
  storageOp,
  translate,
  type UserIdentity,
  unansweredOp,
} from "./syscalls.js";

export type NestedKind = "query" | "mutation" | "action";

/** What an action may do outside its isolate; provided by the caller (the function runner). */
export interface ActionEnvironment {
  identity: UserIdentity | null;
  /** e.g. `messages:send`. */
  functionName: string;
  /**
   * Runs another function as its own transaction/execution and resolves
   * with its value (Convex JSON); rejects with a `SyscallError` (carrying a
   * `ConvexError`'s data) when it fails.
   */
  runFunction(kind: NestedKind, path: string, args: JsonValue): Promise<JsonValue>;
  environmentVariables?: () => Record<string, string>;
  /** `ctx.scheduler` of an action: each call commits on its own. */
  scheduler?: {
    schedule(name: string, args: JsonValue, atSeconds: number): Promise<string>;
    cancel(id: string): Promise<void>;
  };
  /** `ctx.storage` of an action: each call on its own (none: "not supported yet"). */
  storage?: StorageHooks;
}

/** Largest response body `fetch` hands to an action. */
const MAX_FETCH_RESPONSE_BYTES = 64 * 1024 * 1024;

const NESTED: Record<string, NestedKind> = {
  "1.0/actions/query": "query",
  "1.0/actions/mutation": "mutation",
  "1.0/actions/action": "action",
};

export function actionSyscalls(env: ActionEnvironment): SyscallHandler {
  return new ActionSyscalls(env);
}

class ActionSyscalls implements SyscallHandler {
  constructor(private readonly env: ActionEnvironment) {}

  sync(op: string, _args: unknown): unknown {
    if (op === "tessera/env") return this.env.environmentVariables?.() ?? {};
    throw unansweredOp(op, NOT_SUPPORTED_ANYWHERE, `Unknown operation ${op} in an action`);
  }

  async async(op: string, args: unknown): Promise<unknown> {
    try {
      return await this.answer(op, args);
    } catch (e) {
      // A bad ID or value the action sent is its mistake, said as such.
      throw translate(e);
    }
  }

  private async answer(op: string, args: unknown): Promise<unknown> {
    if (!isPlainObject(args)) throw new SyscallError(`Invalid arguments for ${op}`);
    const a = args as Record<string, unknown>;
    const nested = NESTED[op];
    if (nested !== undefined) {
      if (typeof a.name !== "string") {
        throw new SyscallError(
          a.functionHandle !== undefined || a.reference !== undefined
            ? "not supported yet: function handles and component references in ctx.run*"
            : `Invalid arguments for ${op}: expected a function name`,
        );
      }
      return this.env.runFunction(nested, a.name, (a.args ?? {}) as JsonValue);
    }
    switch (op) {
      case "1.0/getUserIdentity":
        return this.env.identity;
      case "1.0/actions/schedule": {
        const scheduler = this.env.scheduler;
        if (scheduler === undefined) break;
        if (typeof a.name !== "string")
          throw new SyscallError(
            "not supported yet: scheduling function handles and component functions",
          );
        if (typeof a.ts !== "number") throw new SyscallError("Invalid scheduled time");
        return scheduler.schedule(a.name, (a.args ?? {}) as JsonValue, a.ts);
      }
      case "1.0/actions/cancel_job": {
        const scheduler = this.env.scheduler;
        if (scheduler === undefined) break;
        if (typeof a.id !== "string") throw new SyscallError("Invalid ID for scheduler.cancel");
        await scheduler.cancel(a.id);
        return null;
      }
      case "tessera/sleep":
        return sleep(a.ms);
      case "tessera/fetch":
        return hostFetch(a);
    }
    // `1.0/storageStore` / `storageGet` also come from the bootstrap's `storage/storeBlob` / `getBlob`.
    if (this.env.storage !== undefined && STORAGE_OPS.has(op))
      return storageOp(this.env.storage, op, a, true);
    throw unansweredOp(op, NOT_SUPPORTED_ANYWHERE, `Unknown async operation ${op} in an action`);
  }
}

/** The longest delay Node's timers take; a longer one would fire after 1 ms (with a warning). */
const MAX_TIMER_MS = 2 ** 31 - 1;

function sleep(ms: unknown): Promise<null> {
  const delay = typeof ms === "number" && Number.isFinite(ms) && ms > 0 ? ms : 0;
  // Still ~25 days: the action's time limit ends it long before.
  return new Promise((resolve) => setTimeout(() => resolve(null), Math.min(delay, MAX_TIMER_MS)));
}

/** Performs an action's `fetch` with Node's own; the whole response comes back base64-encoded. */
async function hostFetch(a: Record<string, unknown>): Promise<unknown> {
  if (typeof a.url !== "string" || typeof a.method !== "string" || !Array.isArray(a.headers))
    throw new SyscallError("Invalid arguments for fetch");
  let response: Response;
  try {
    response = await fetch(a.url, {
      method: a.method,
      headers: a.headers as [string, string][],
      ...(typeof a.body === "string" ? { body: Buffer.from(a.body, "base64") } : {}),
    });
  } catch (e) {
    const cause = (e as { cause?: { message?: string } }).cause?.message;
    throw new SyscallError(
      `fetch failed: ${cause ?? (e instanceof Error ? e.message : String(e))}`,
    );
  }
  const declared = Number(response.headers.get("content-length") ?? 0);
  if (declared > MAX_FETCH_RESPONSE_BYTES)
    throw new SyscallError(`fetch: the response is larger than ${MAX_FETCH_RESPONSE_BYTES} bytes`);
  const body = Buffer.from(await response.arrayBuffer());
  if (body.length > MAX_FETCH_RESPONSE_BYTES)
    throw new SyscallError(`fetch: the response is larger than ${MAX_FETCH_RESPONSE_BYTES} bytes`);
  return {
    url: response.url,
    status: response.status,
    statusText: response.statusText,
    headers: [...response.headers],
    body: body.toString("base64"),
    redirected: response.redirected,
  };
}
