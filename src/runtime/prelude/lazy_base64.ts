/**
 * Evaluated on first use of `atob` or `btoa` (see globals.ts: it exports
 * nothing on purpose).
 */
import { atob, btoa } from "./base64.js";
import { provideGlobals } from "./util.js";

provideGlobals({ atob, btoa });
