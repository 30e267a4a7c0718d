/**
 * Evaluated on first use of `Event`, `EventTarget`, `CustomEvent`,
 * `AbortController` or `AbortSignal` (see globals.ts: it exports nothing on
 * purpose).
 */
import { AbortController, AbortSignal, CustomEvent, Event, EventTarget } from "./events.js";
import { provideGlobals } from "./util.js";

provideGlobals({ Event, EventTarget, CustomEvent, AbortController, AbortSignal });
