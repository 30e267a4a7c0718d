/**
 * The instrumentation thread's work: instruments a linked script
 * (instrument.ts) and chains the instrumentation's source map onto the
 * linker's. Both are pure functions of their input and take hundreds of
 * milliseconds of synchronous JavaScript for a typical app, so the server
 * runs them on a worker thread (instrumentThread.ts starts it with this
 * module, bundled by esbuild: the worker needs no TypeScript hooks).
 */
import { parentPort, workerData } from "node:worker_threads";
import remapping from "@jridgewell/remapping";
import { instrumentApp } from "./instrument.js";

export interface InstrumentedScript {
  /** The instrumented script. */
  code: string;
  /** Its source map, chained through the linker's map (JSON text). */
  sourceMap: string;
  /** False when contexts running the script must not be reused. */
  reusable: boolean;
  reason?: string;
  /** Offsets in the linked script of the sites that can taint, by site id. */
  sites: number[];
}

/** Marks a worker started by instrumentThread.ts (tests may run inside other workers). */
export const INSTRUMENT_WORKER = "tessera-instrument";

export function instrumentLinked(linked: string, linkedMap: string): InstrumentedScript {
  const instrumented = instrumentApp(linked);
  return {
    code: instrumented.code,
    sourceMap: remapping([instrumented.map, linkedMap], () => null).toString(),
    reusable: instrumented.reusable,
    ...(instrumented.reason === undefined ? {} : { reason: instrumented.reason }),
    sites: instrumented.sites,
  };
}

export interface InstrumentJob {
  id: number;
  linked: string;
  linkedMap: string;
}

export type InstrumentReply =
  | { id: number; result: InstrumentedScript }
  | { id: number; error: string };

if (parentPort !== null && workerData === INSTRUMENT_WORKER) {
  const port = parentPort;
  port.on("message", (job: InstrumentJob) => {
    let reply: InstrumentReply;
    try {
      reply = { id: job.id, result: instrumentLinked(job.linked, job.linkedMap) };
    } catch (e) {
      reply = { id: job.id, error: e instanceof Error ? e.message : String(e) };
    }
    port.postMessage(reply);
  });
}
