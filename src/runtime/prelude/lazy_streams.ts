/**
 * Evaluated on first use of `ReadableStream`, `WritableStream`,
 * `TransformStream`, `TextEncoderStream`, `TextDecoderStream`, the queuing
 * strategies or the readers, writers and controllers (see globals.ts: it
 * exports nothing on purpose).
 */
import { STREAM_GLOBALS } from "./streams.js";
import { provideGlobals } from "./util.js";

provideGlobals(STREAM_GLOBALS);
