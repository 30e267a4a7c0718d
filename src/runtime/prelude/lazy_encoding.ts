/**
 * Evaluated on first use of `TextEncoder` or `TextDecoder` (see globals.ts: it
 * exports nothing on purpose).
 */
import { TextDecoder, TextEncoder } from "./encoding.js";
import { provideGlobals } from "./util.js";

provideGlobals({ TextEncoder, TextDecoder });
