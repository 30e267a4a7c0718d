/**
 * Entry point of the prelude: evaluated first in every isolate context, it
 * installs the Web-standard globals Convex code expects and the determinism
 * controls (`globalThis.__tessera_env`). See README.md for the list.
 */
// First: captures the builtins before anything is installed or user code runs.
import "./intrinsics.js";
import { type BeginOptions, begin, currentMode, type LogLine, rng, takeLogs } from "./env.js";
// The guard captures the builtins it relies on when it is evaluated: before
// this module's body changes any (no imported module changes them).
import { beginExecution, endExecution, type SealResult, seal } from "./guard.js";
import { createDate, patchIntl, providePerformance } from "./time.js";
import {
  blobBridge,
  clearInterval,
  clearTimeout,
  fetch,
  type HttpMessage,
  httpBridge,
  queueMicrotask,
  setInterval,
  setTimeout,
} from "./timers.js";
import {
  cloneHooks,
  defineGlobal,
  defineLazyGlobals,
  loadedLazyValues,
  preludeGlobal,
} from "./util.js";

/** The host's handle on the isolate's per-execution state. */
export interface TesseraEnv {
  /** Starts an execution: resets the log buffer, seeds the random generator, freezes the clock. */
  begin(options: BeginOptions): void;
  /** Returns the buffered console lines and clears the buffer. */
  takeLogs(): LogLine[];
  /** The current execution mode. */
  readonly mode: string;
  /** Registers everything that exists, once the app is imported (guard.ts): the context may then be reused. */
  seal(): SealResult;
  /** Ends an execution, after its microtasks: "clean", or "tainted:" and why (guard.ts). */
  end(): string;
  /** HTTP actions: a `Request` from the host's description of one. */
  httpRequest(message: HttpMessage): unknown;
  /**
   * HTTP actions: the host's description of a `Response`. A body in memory is
   * in it; a stream body is sent to the host as it is read, and the promise
   * settles once it has ended.
   */
  httpResponse(response: unknown): HttpMessage | Promise<HttpMessage>;
  /** Storage in actions: a Blob's bytes (base64) and type; throws a TypeError for anything else. */
  blobToHost(blob: unknown): { base64: string; type: string };
  /** Storage in actions: a Blob of the prelude's class over bytes from the host. */
  blobFromHost(base64: string, type: string): unknown;
}

// Most globals are installed lazily (util.ts, defineLazyGlobals): the modules
// implementing them are evaluated on first access in a context, which most
// executions never make. esbuild bundles a module loaded with require(), and
// the modules it imports that no eagerly evaluated module imports, as
// functions called on the first require(). The modules loaded here export
// nothing (they call provideGlobals): esbuild would build the exports object of
// a module loaded with require() when the script runs, in every context. The
// order of the calls is the order of the global object's properties (console
// and Date replace V8's own, keeping their places).
defineLazyGlobals(["TextEncoder", "TextDecoder"], () => require("./lazy_encoding.js"));
defineLazyGlobals(["atob", "btoa"], () => require("./lazy_base64.js"));
defineLazyGlobals(["structuredClone"], () => require("./lazy_structured_clone.js"));
defineLazyGlobals(["DOMException"], () => require("./lazy_domexception.js"));
defineLazyGlobals(["console"], () => require("./lazy_console.js"));
defineLazyGlobals(["crypto", "Crypto", "SubtleCrypto"], () => require("./lazy_crypto.js"));
defineLazyGlobals(["Blob", "File"], () => require("./lazy_blob.js"));
defineLazyGlobals(["Headers", "Request", "Response", "FormData"], () => require("./lazy_fetch.js"));
defineLazyGlobals(["Event", "EventTarget", "CustomEvent", "AbortController", "AbortSignal"], () =>
  require("./lazy_events.js"),
);
/** The Web Streams globals (lazy_streams.ts). */
const STREAM_GLOBALS = [
  "ReadableStream",
  "ReadableStreamDefaultReader",
  "ReadableStreamBYOBReader",
  "ReadableStreamBYOBRequest",
  "ReadableByteStreamController",
  "ReadableStreamDefaultController",
  "TransformStream",
  "TransformStreamDefaultController",
  "WritableStream",
  "WritableStreamDefaultWriter",
  "WritableStreamDefaultController",
  "ByteLengthQueuingStrategy",
  "CountQueuingStrategy",
  "TextEncoderStream",
  "TextDecoderStream",
];
defineLazyGlobals(STREAM_GLOBALS, () => require("./lazy_streams.js"));
// Convex code reads environment variables from `process.env` (the generated
// `_generated/server.js` of convex >= 1.4x references it at import time);
// nothing else of Node's `process` exists. Deployment environment variables
// are not passed in yet (not supported yet: they arrive with the environment
// variables work), so every name reads as undefined.
defineGlobal("process", Object.freeze({ env: Object.freeze(Object.create(null)) }));
// Small, and needed by the mode rules: installed directly.
defineGlobal("fetch", fetch);
defineGlobal("setTimeout", setTimeout);
defineGlobal("setInterval", setInterval);
defineGlobal("clearTimeout", clearTimeout);
defineGlobal("clearInterval", clearInterval);
defineGlobal("queueMicrotask", queueMicrotask);
defineLazyGlobals(["reportError"], () => require("./lazy_console.js"));
defineLazyGlobals(["performance", "Performance"], providePerformance);
defineGlobal("Date", createDate());
defineLazyGlobals(["URL", "URLSearchParams"], () => require("./url.js"));

// structuredClone refuses platform objects, as browsers do (in this order);
// Blob, File and DOMException are cloneable.
cloneHooks.refused = [
  "URL",
  "URLSearchParams",
  "TextEncoder",
  "TextDecoder",
  "Crypto",
  "SubtleCrypto",
  "Headers",
  "Request",
  "Response",
  "FormData",
  "Event",
  "EventTarget",
  "CustomEvent",
  "AbortController",
  "AbortSignal",
  "Performance",
  // Streams are transferable, not cloneable: without a transfer list browsers refuse them.
  ...STREAM_GLOBALS,
];

Object.defineProperty(Math, "random", {
  value: function random(): number {
    return rng().nextFloat();
  },
  writable: true,
  enumerable: false,
  configurable: true,
});

patchIntl();

// Nothing shares memory with a query or mutation, so there is nothing to wait
// for; and in this V8 Atomics.waitAsync with a timeout aborts the whole process.
delete (Atomics as { wait?: unknown }).wait;
delete (Atomics as { waitAsync?: unknown }).waitAsync;

const env: TesseraEnv = Object.freeze({
  httpRequest(message: HttpMessage): unknown {
    preludeGlobal("Request");
    return httpBridge.toRequest!(message);
  },
  httpResponse(response: unknown): HttpMessage | Promise<HttpMessage> {
    preludeGlobal("Response");
    return httpBridge.fromResponse!(response);
  },
  blobToHost(blob: unknown): { base64: string; type: string } {
    preludeGlobal("Blob");
    return blobBridge.toHost!(blob);
  },
  blobFromHost(base64: string, type: string): unknown {
    preludeGlobal("Blob");
    return blobBridge.fromHost!(base64, type);
  },
  begin(options: BeginOptions): void {
    begin(options);
    if (options.mode !== "import") beginExecution();
  },
  seal(): SealResult {
    return seal(loadedLazyValues);
  },
  end(): string {
    return endExecution();
  },
  takeLogs(): LogLine[] {
    return takeLogs();
  },
  get mode(): string {
    return currentMode();
  },
});

// The bootstrap takes it (and deletes the global) before user code runs.
Object.defineProperty(globalThis, "__tessera_env", {
  value: env,
  writable: false,
  enumerable: false,
  configurable: true,
});
