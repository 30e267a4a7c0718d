/**
 * Side-effecting APIs that queries and mutations must not use: `fetch` and
 * the timer functions throw in modes "import", "query" and "mutation". In
 * mode "action" they are real: a timer is a host sleep (`tessera/sleep`),
 * `fetch` a request the host makes (`tessera/fetch`), both through the
 * bootstrap's `Convex.asyncSyscall`. `queueMicrotask` is deterministic and
 * always works.
 */
import { base64ToBytes, bytesToBase64 } from "./base64.js";
import { currentMode, onBegin } from "./env.js";
import { resolvedPromise as resolved, promiseThen as then } from "./intrinsics.js";
import { preludeGlobal } from "./util.js";

/** The error for a side-effecting API used where it is not allowed. */
export function unavailable(name: string): Error {
  return new Error(`Can't use ${name} in queries and mutations. Please consider using an action.`);
}

/** The host's async syscall (set up by the bootstrap, which runs after the prelude). */
export function host(op: string, args: unknown): Promise<string> {
  const convex = (
    globalThis as { Convex?: { asyncSyscall(op: string, a: string): Promise<string> } }
  ).Convex;
  if (convex === undefined) return Promise.reject(new Error(`${op} is not available here`));
  return convex.asyncSyscall(op, JSON.stringify(args));
}

/** Timers of the running action: id → still wanted. */
let timers = new Map<number, true>();
let nextTimer = 1;
onBegin(() => {
  timers = new Map();
  nextTimer = 1;
});

function delayOf(timeout: unknown): number {
  const ms = Number(timeout);
  return Number.isFinite(ms) && ms > 0 ? Math.min(ms, 2 ** 31 - 1) : 0;
}

function callbackOf(handler: unknown, name: string): () => void {
  if (typeof handler !== "function")
    throw new TypeError(`not supported yet: ${name} with a string of code (pass a function)`);
  return handler as () => void;
}

function report(err: unknown): void {
  (preludeGlobal("reportError") as (error: unknown) => void)(err);
}

function schedule(id: number, delay: number, fire: () => void): void {
  const own = timers;
  then.call(
    host("tessera/sleep", { ms: delay }),
    () => {
      if (own !== timers || !own.has(id)) return;
      fire();
    },
    () => {},
  );
}

export function setTimeout(handler: unknown, timeout?: unknown, ...args: unknown[]): number {
  if (currentMode() !== "action") throw unavailable("setTimeout");
  const callback = callbackOf(handler, "setTimeout");
  const id = nextTimer++;
  timers.set(id, true);
  schedule(id, delayOf(timeout), () => {
    timers.delete(id);
    try {
      Reflect.apply(callback, undefined, args);
    } catch (err) {
      report(err);
    }
  });
  return id;
}

export function setInterval(handler: unknown, timeout?: unknown, ...args: unknown[]): number {
  if (currentMode() !== "action") throw unavailable("setInterval");
  const callback = callbackOf(handler, "setInterval");
  const id = nextTimer++;
  const delay = delayOf(timeout);
  timers.set(id, true);
  const tick = () => {
    try {
      Reflect.apply(callback, undefined, args);
    } catch (err) {
      report(err);
    }
    if (timers.has(id)) schedule(id, delay, tick);
  };
  schedule(id, delay, tick);
  return id;
}

export function clearTimeout(id?: unknown): void {
  if (currentMode() !== "action") throw unavailable("clearTimeout");
  timers.delete(Number(id));
}

export function clearInterval(id?: unknown): void {
  if (currentMode() !== "action") throw unavailable("clearInterval");
  timers.delete(Number(id));
}

/** Schedules `AbortSignal.timeout` (events.ts), or throws where timers are not allowed. */
export const abortSignalTimers: { timeout?: (ms: number, abort: () => void) => void } = {
  timeout: (ms, abort) => {
    if (currentMode() !== "action") throw unavailable("AbortSignal.timeout");
    setTimeout(abort, ms);
  },
};

interface FetchAnswer {
  url: string;
  status: number;
  statusText: string;
  headers: [string, string][];
  body: string;
  redirected: boolean;
}

/** `fetch` in actions: the host makes the request (Node's fetch) and returns the whole response. */
export function fetch(input: unknown, init?: unknown): Promise<unknown> {
  if (currentMode() !== "action") throw unavailable("fetch");
  return actionFetch(input, init);
}

async function actionFetch(input: unknown, init?: unknown): Promise<unknown> {
  const RequestClass = preludeGlobal("Request") as new (
    i: unknown,
    o?: unknown,
  ) => {
    url: string;
    method: string;
    headers: Iterable<[string, string]>;
    arrayBuffer(): Promise<ArrayBuffer>;
  };
  const ResponseClass = preludeGlobal("Response") as new (b: unknown, o: unknown) => unknown;
  const request = new RequestClass(input, init);
  const bytes = new Uint8Array(await request.arrayBuffer());
  const answer = JSON.parse(
    await host("tessera/fetch", {
      url: request.url,
      method: request.method,
      headers: [...request.headers],
      body: request.method === "GET" || request.method === "HEAD" ? null : bytesToBase64(bytes),
    }),
  ) as FetchAnswer;
  const body = answer.body === "" ? null : base64ToBytes(answer.body);
  const nullBody = [101, 204, 205, 304].includes(answer.status);
  const response = new ResponseClass(nullBody ? null : body, {
    status: answer.status,
    statusText: answer.statusText,
    headers: answer.headers,
  });
  setResponseUrl(response, answer.url, answer.redirected);
  return response;
}

/**
 * An HTTP request or response in the form the host and the isolate exchange
 * (body base64). A `streamed` request's body is read from the host as its
 * stream is pulled; a `streamed` response's body went to the host chunk by
 * chunk (`aborted`: the client went away first).
 */
export interface HttpMessage {
  method?: string;
  url?: string;
  status?: number;
  statusText?: string;
  headers: [string, string][];
  body: string | null;
  streamed?: boolean;
  aborted?: boolean;
}

/** Set by fetch.ts (lazy): HTTP actions' request in, response out. */
export const httpBridge: {
  toRequest?: (m: HttpMessage) => unknown;
  fromResponse?: (r: unknown) => HttpMessage | Promise<HttpMessage>;
} = {};

/** Set by blob.ts (lazy): a Blob's bytes (base64) and type for the host, and a Blob from them (storage in actions). */
export const blobBridge: {
  toHost?: (blob: unknown) => { base64: string; type: string };
  fromHost?: (base64: string, type: string) => unknown;
} = {};

/** Set by fetch.ts: records a fetched response's final URL (Response.url is read-only). */
export const responseUrl: { set?: (r: unknown, url: string, redirected: boolean) => void } = {};
function setResponseUrl(r: unknown, url: string, redirected: boolean): void {
  responseUrl.set?.(r, url, redirected);
}

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
