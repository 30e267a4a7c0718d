/**
 * Evaluated on first use of `DOMException` (see globals.ts: it exports nothing
 * on purpose).
 */
import { DOMException } from "./domexception.js";
import { provideGlobals } from "./util.js";

provideGlobals({ DOMException });
