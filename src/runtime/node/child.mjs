// The Node.js runtime of "use node" actions: a child process of the server
// (Tessera's host code never runs here) that imports the app's Node modules
// from a folder the host wrote, answers "analyze" with their functions, and
// runs actions on "run". The official `convex/server` library in the bundles
// calls the global `Convex` for its syscalls; each call goes to the host over
// IPC, tagged with the run it belongs to (AsyncLocalStorage), and console
// output of a run becomes that run's log lines.
import { AsyncLocalStorage } from "node:async_hooks";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { format } from "node:util";
import { functionSpecs } from "../functionSpecs.mjs";

const runs = new AsyncLocalStorage();
const pending = new Map();
let nextCall = 1;
const send = (m) => process.send(m);

globalThis.Convex = {
  syscall(op) {
    throw new Error(`not supported yet: the synchronous syscall ${op} in Node.js actions`);
  },
  asyncSyscall(op, argsJson) {
    const run = runs.getStore();
    if (run === undefined)
      return Promise.reject(new Error(`${op} was called outside of an action`));
    const callId = nextCall++;
    return new Promise((resolve, reject) => {
      pending.set(callId, { resolve, reject });
      send({ type: "syscall", runId: run.id, callId, op, args: argsJson });
    });
  },
  // ctx.storage.store / get: the Blob crosses to the host base64-encoded.
  jsSyscall(op, args) {
    if (op === "storage/storeBlob") {
      return args.blob.arrayBuffer().then((bytes) =>
        globalThis.Convex.asyncSyscall(
          "1.0/storageStore",
          JSON.stringify({
            requestId: args.requestId,
            version: args.version,
            blob: Buffer.from(bytes).toString("base64"),
            contentType: args.blob.type || null,
            sha256: args.options?.sha256,
          }),
        ).then((result) => JSON.parse(result)),
      );
    }
    if (op === "storage/getBlob") {
      return globalThis.Convex.asyncSyscall(
        "1.0/storageGet",
        JSON.stringify({
          requestId: args.requestId,
          version: args.version,
          storageId: args.storageId,
        }),
      ).then((result) => {
        const file = JSON.parse(result);
        return file === null
          ? null
          : new Blob([Buffer.from(file.blob, "base64")], { type: file.contentType ?? "" });
      });
    }
    throw new Error(`not supported yet: ${op} in Node.js actions`);
  },
};

const LEVELS = { log: "LOG", info: "INFO", warn: "WARN", error: "ERROR", debug: "DEBUG" };
for (const [method, level] of Object.entries(LEVELS)) {
  const original = console[method].bind(console);
  console[method] = (...args) => {
    const run = runs.getStore();
    if (run === undefined) original(...args);
    else run.logs.push({ level, message: format(...args) });
  };
}

const modules = new Map();
function load(dir, path) {
  const key = `${dir}\0${path}`;
  let m = modules.get(key);
  if (m === undefined) {
    m = import(pathToFileURL(join(dir, path)).href);
    modules.set(key, m);
  }
  return m;
}

function errorOf(e) {
  const error = {
    message: e instanceof Error ? e.message : String(e),
    name: e instanceof Error ? e.name : "Error",
    stack: e instanceof Error ? (e.stack ?? "") : "",
  };
  // A ConvexError leaves the library's invokeAction with its data already
  // serialised (Convex JSON text); it goes back as is.
  if (
    e !== null &&
    typeof e === "object" &&
    e.ConvexErrorSymbol === Symbol.for("ConvexError") &&
    typeof e.data === "string"
  )
    error.data = e.data;
  return error;
}

async function analyze(dir, paths) {
  const out = [];
  for (const path of paths) {
    const ns = await load(dir, path);
    const functions = functionSpecs(ns, (e) => errorOf(e).message);
    out.push({ path, functions });
  }
  return out;
}

process.on("message", (m) => {
  if (m.type === "answer") {
    const call = pending.get(m.callId);
    if (call === undefined) return;
    pending.delete(m.callId);
    if (m.ok) call.resolve(m.result);
    else {
      const e = new Error(m.message);
      // The library turns an error with `data` (Convex JSON) into a ConvexError.
      if (m.data !== undefined) e.data = JSON.parse(m.data);
      call.reject(e);
    }
    return;
  }
  if (m.type === "analyze") {
    analyze(m.dir, m.paths).then(
      (modules) => send({ type: "analyzed", id: m.id, ok: true, modules }),
      (e) => send({ type: "analyzed", id: m.id, ok: false, error: errorOf(e) }),
    );
    return;
  }
  if (m.type === "run") {
    const run = { id: m.id, logs: [] };
    runs.run(run, async () => {
      try {
        const ns = await load(m.dir, m.module);
        const fn = ns[m.exportName];
        if (fn === undefined || fn === null || typeof fn.invokeAction !== "function")
          throw new Error(`${m.module}:${m.exportName} is not an action`);
        const value = await fn.invokeAction(m.requestId, m.args);
        send({ type: "done", id: m.id, ok: true, value, logs: run.logs });
      } catch (e) {
        send({ type: "done", id: m.id, ok: false, error: errorOf(e), logs: run.logs });
      }
    });
  }
});

send({ type: "ready" });
