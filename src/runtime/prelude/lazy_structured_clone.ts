/**
 * Evaluated on first use of `structuredClone` (see globals.ts: it exports
 * nothing on purpose).
 */
import { structuredClone } from "./structured_clone.js";
import { provideGlobals } from "./util.js";

provideGlobals({ structuredClone });
