/**
 * Entry point of the prelude: evaluated first in every isolate context, it
 * installs the Web-standard globals Convex code expects and the determinism
 * controls (`globalThis.__tessera_env`). See README.md for the list.
 */
import { atob, btoa } from "./base64.js";
import { Blob, File } from "./blob.js";
import { createConsole, reportError } from "./console.js";
import { Crypto, createCrypto, SubtleCrypto } from "./crypto.js";
import { DOMException } from "./domexception.js";
import { TextDecoder, TextEncoder } from "./encoding.js";
import { type BeginOptions, begin, currentMode, type LogLine, rng, takeLogs } from "./env.js";
import { AbortController, AbortSignal, CustomEvent, Event, EventTarget } from "./events.js";
import { FormData, Headers, Request, Response } from "./fetch.js";
import { cloneHooks, structuredClone } from "./structured_clone.js";
import { createDate, Performance, patchIntl } from "./time.js";
import {
  clearInterval,
  clearTimeout,
  fetch,
  queueMicrotask,
  setInterval,
  setTimeout,
} from "./timers.js";
import { loadUrl } from "./url.js";
import { defineGlobals, defineLazyGlobals } from "./util.js";

/** The host's handle on the isolate's per-execution state. */
export interface TesseraEnv {
  /** Starts an execution: resets the log buffer, seeds the random generator, freezes the clock. */
  begin(options: BeginOptions): void;
  /** Returns the buffered console lines and clears the buffer. */
  takeLogs(): LogLine[];
  /** The current execution mode. */
  readonly mode: string;
}

const globals: Record<string, unknown> = {
  TextEncoder,
  TextDecoder,
  atob,
  btoa,
  structuredClone,
  DOMException,
  console: createConsole(),
  crypto: createCrypto(),
  Crypto,
  SubtleCrypto,
  Blob,
  File,
  Headers,
  Request,
  Response,
  FormData,
  Event,
  EventTarget,
  CustomEvent,
  AbortController,
  AbortSignal,
  fetch,
  setTimeout,
  setInterval,
  clearTimeout,
  clearInterval,
  queueMicrotask,
  reportError,
  performance: Object.freeze(new Performance()),
  Performance,
  Date: createDate(),
};

// The bundler may rename classes (TextEncoder2, _DOMException); restore the Web names.
for (const [name, value] of Object.entries(globals)) {
  if (typeof value === "function" && value.name !== name) {
    Object.defineProperty(value, "name", { value: name, configurable: true });
  }
}
defineGlobals(globals);

// structuredClone refuses platform objects, as browsers do; Blob, File and DOMException are cloneable.
for (const [name, value] of Object.entries(globals)) {
  if (typeof value !== "function" || !/^[A-Z]/.test(name)) continue;
  if (name === "Blob" || name === "File" || name === "DOMException" || name === "Date") continue;
  const ctor = value as new () => unknown;
  cloneHooks.refused.push({ test: (v) => v instanceof ctor, name });
}
defineLazyGlobals(["URL", "URLSearchParams"], () => ({ ...loadUrl() }));

Object.defineProperty(Math, "random", {
  value: function random(): number {
    return rng().nextFloat();
  },
  writable: true,
  enumerable: false,
  configurable: true,
});

patchIntl();

const env: TesseraEnv = Object.freeze({
  begin(options: BeginOptions): void {
    begin(options);
  },
  takeLogs(): LogLine[] {
    return takeLogs();
  },
  get mode(): string {
    return currentMode();
  },
});

Object.defineProperty(globalThis, "__tessera_env", {
  value: env,
  writable: false,
  enumerable: false,
  configurable: false,
});
