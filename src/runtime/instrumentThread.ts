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

/** The thread could not start, or stopped with work in hand: that work is done here instead. */
class ThreadDown extends Error {}

/** Where instrumentation ran so far, and why the thread last failed (tests). */
export const instrumentationStats = {
  offThread: 0,
  onThisThread: 0,
  threadFailure: null as string | null,
};

let worker: Promise<Worker> | null = null;
/** The thread `worker` resolved to, until it stops. */
let current: Worker | null = null;
/** Each running thread's jobs in hand, by id (a stopped thread has none). */
const jobsOf = new WeakMap<Worker, Map<number, Pending>>();
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
  const jobs = new Map<number, Pending>();
  jobsOf.set(w, jobs);
  w.on("message", (reply: InstrumentReply) => {
    const job = jobs.get(reply.id);
    if (job === undefined) return;
    jobs.delete(reply.id);
    if (jobs.size === 0) w.unref();
    if ("error" in reply) job.reject(new Error(reply.error));
    else job.resolve(reply.result);
  });
  // A thread that stops fails over what it held; the next call starts another.
  const down = (reason: string) => {
    jobsOf.delete(w);
    // Only this thread's own (an 'exit' after an 'error' must not forget a newer thread).
    if (current === w) {
      current = null;
      worker = null;
    }
    for (const job of jobs.values()) job.reject(new ThreadDown(reason));
    jobs.clear();
  };
  w.on("error", (e) => down(e.message));
  w.on("exit", (code) => down(`the instrumentation thread exited with code ${code}`));
  current = w;
  return w;
}

async function onThread(linked: string, linkedMap: string): Promise<InstrumentedScript> {
  worker ??= startWorker();
  const starting = worker;
  let w: Worker;
  try {
    w = await starting;
  } catch (e) {
    if (worker === starting) worker = null;
    throw new ThreadDown(e instanceof Error ? e.message : String(e));
  }
  const jobs = jobsOf.get(w);
  if (jobs === undefined) throw new ThreadDown("the instrumentation thread stopped");
  return new Promise<InstrumentedScript>((resolve, reject) => {
    const id = nextId++;
    jobs.set(id, { resolve, reject });
    w.ref();
    w.postMessage({ id, linked, linkedMap } satisfies InstrumentJob);
  });
}

/**
 * `instrumentLinked` on the instrumentation thread; on this one if that
 * thread cannot start or stops before it answers (the first such failure is
 * printed). The instrumentation's own errors reach the caller as they are.
 */
export async function instrumentOffThread(
  linked: string,
  linkedMap: string,
): Promise<InstrumentedScript> {
  try {
    const result = await onThread(linked, linkedMap);
    instrumentationStats.offThread++;
    return result;
  } catch (e) {
    if (!(e instanceof ThreadDown)) throw e;
    if (instrumentationStats.threadFailure === null) {
      console.error(
        `tessera: the instrumentation thread failed (${e.message}); instrumenting on the server's thread`,
      );
    }
    instrumentationStats.threadFailure = e.message;
    instrumentationStats.onThisThread++;
    return instrumentLinked(linked, linkedMap);
  }
}

/** Ends the instrumentation thread (work it holds is done on the calling threads); the next call starts another. */
export async function stopInstrumentThread(): Promise<void> {
  const starting = worker;
  if (starting === null) return;
  const w = await starting.catch(() => null);
  await w?.terminate();
}
