/**
 * Runs the instrumentation of linked scripts (instrumentWorker.ts) on a
 * worker thread of its own, so that a push does not hold the server's event
 * loop: on the server's thread, linking the test fixture's app and then its
 * schema held it 0.58 and 0.26 s per push (a GET /version polled meanwhile
 * waited up to 355–638 ms), almost all of it instrumentation and source maps.
 *
 * The worker is started at the first use, with the worker module bundled by
 * esbuild into one CommonJS script (no TypeScript hooks, none of the
 * process's flags), and kept: it is referenced only while it has work, so it
 * never keeps a process alive. If it cannot be started, the work is done on
 * the calling thread, as before, and the reason is printed once.
 */
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import * as esbuild from "esbuild";
import {
  INSTRUMENT_WORKER,
  type InstrumentedScript,
  type InstrumentJob,
  type InstrumentReply,
  instrumentLinked,
} from "./instrumentWorker.js";

interface Pending {
  resolve: (result: InstrumentedScript) => void;
  reject: (error: Error) => void;
}

/** Where instrumentation ran so far (tests; the first start's failure, if any). */
export const instrumentationStats = {
  offThread: 0,
  onThisThread: 0,
  startFailure: null as string | null,
};

let worker: Promise<Worker> | null = null;
const pending = new Map<number, Pending>();
let nextId = 1;

async function startWorker(): Promise<Worker> {
  // This module runs as TypeScript (src/) or compiled JavaScript: the worker's source sits beside it.
  const entry = fileURLToPath(
    new URL(
      import.meta.url.endsWith(".ts") ? "./instrumentWorker.ts" : "./instrumentWorker.js",
      import.meta.url,
    ),
  );
  const bundle = await esbuild.build({
    entryPoints: [entry],
    bundle: true,
    platform: "node",
    format: "cjs",
    target: "node20",
    write: false,
    logLevel: "silent",
  });
  const w = new Worker(bundle.outputFiles[0]!.text, {
    eval: true,
    execArgv: [],
    workerData: INSTRUMENT_WORKER,
  });
  w.unref();
  w.on("message", (reply: InstrumentReply) => {
    const job = pending.get(reply.id);
    if (job === undefined) return;
    pending.delete(reply.id);
    if (pending.size === 0) w.unref();
    if ("error" in reply) job.reject(new Error(reply.error));
    else job.resolve(reply.result);
  });
  // A thread that dies fails what it held; the next call starts another.
  const down = (error: Error) => {
    worker = null;
    for (const job of pending.values()) job.reject(error);
    pending.clear();
  };
  w.on("error", down);
  w.on("exit", (code) => down(new Error(`the instrumentation thread exited with code ${code}`)));
  return w;
}

/** `instrumentLinked` on the instrumentation thread (on this one if that thread cannot start). */
export async function instrumentOffThread(
  linked: string,
  linkedMap: string,
): Promise<InstrumentedScript> {
  worker ??= startWorker();
  let w: Worker;
  try {
    w = await worker;
  } catch (e) {
    worker = null;
    if (instrumentationStats.startFailure === null) {
      instrumentationStats.startFailure = e instanceof Error ? e.message : String(e);
      console.error(
        `tessera: the instrumentation thread could not start (${instrumentationStats.startFailure}); instrumenting on the server's thread`,
      );
    }
    instrumentationStats.onThisThread++;
    return instrumentLinked(linked, linkedMap);
  }
  instrumentationStats.offThread++;
  return new Promise<InstrumentedScript>((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    w.ref();
    w.postMessage({ id, linked, linkedMap } satisfies InstrumentJob);
  });
}
