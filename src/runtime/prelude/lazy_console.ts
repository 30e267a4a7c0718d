/**
 * Evaluated on first use of `console` or `reportError` (see globals.ts: it
 * exports nothing on purpose).
 */
import { createConsole, reportError } from "./console.js";
import { provideGlobals } from "./util.js";

provideGlobals({ console: createConsole(), reportError });
