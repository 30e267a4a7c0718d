/**
 * Evaluated on first use of `Blob` or `File` (see globals.ts: it exports
 * nothing on purpose).
 */
import { Blob, File } from "./blob.js";
import { provideGlobals } from "./util.js";

provideGlobals({ Blob, File });
