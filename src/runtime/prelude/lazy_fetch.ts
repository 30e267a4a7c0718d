/**
 * Evaluated on first use of `Headers`, `Request`, `Response` or `FormData`
 * (see globals.ts: it exports nothing on purpose).
 */
import { FormData, Headers, Request, Response } from "./fetch.js";
import { provideGlobals } from "./util.js";

provideGlobals({ Headers, Request, Response, FormData });
