/**
 * Web Streams in the prelude (web-streams-polyfill, plus TextEncoderStream
 * and TextDecoderStream written here): the same programs run in the isolate
 * and in Node, whose own streams are the reference.
 */
import { inspect } from "node:util";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type PreludeContext, type PreludeIsolate, preludeIsolate } from "./harness.js";

let iso: PreludeIsolate;
let ctx: PreludeContext;
beforeAll(async () => {
  iso = await preludeIsolate();
  ctx = await iso.newContext();
});
afterAll(() => iso.dispose());

/** Runs `program` (source of an async function `run`) in the isolate and in Node; both results. */
async function both(program: string, ...args: unknown[]): Promise<[unknown, unknown]> {
  const names = args.map((_, i) => `$${i}`).join(", ");
  const got = await ctx.runAsync(`${program} return run(${names});`, ...args);
  const expected = await (
    new Function(`${program} return run;`)() as (...a: unknown[]) => Promise<unknown>
  )(...args);
  return [got, expected];
}

async function sameAsNode(program: string, ...args: unknown[]): Promise<void> {
  const [got, expected] = await both(program, ...args);
  expect(got).toEqual(expected);
}

const errorName = `const errorName = (e) => e === undefined ? "undefined" : e.constructor.name + ":" + (e.message ?? e);`;

describe("ReadableStream", () => {
  it("reads, iterates, cancels and reports errors with a default reader", async () => {
    await sameAsNode(`${errorName} async function run() {
      const out = [];
      const s = new ReadableStream({ start(c) { c.enqueue(1); c.enqueue("two"); c.close(); } });
      out.push(s.locked);
      const r = s.getReader();
      out.push(s.locked);
      try { s.getReader(); } catch (e) { out.push(e.constructor.name); }
      out.push(JSON.stringify(await r.read()), JSON.stringify(await r.read()), JSON.stringify(await r.read()));
      r.releaseLock();
      out.push(s.locked);
      const it = [];
      for await (const x of new ReadableStream({ start(c) { for (let i = 0; i < 5; i++) c.enqueue(i); c.close(); } })) it.push(x);
      out.push(it.join(","));
      let reason = "none";
      const cancelled = new ReadableStream({ pull(c) { c.enqueue("x"); }, cancel(why) { reason = why; } });
      const cr = cancelled.getReader();
      await cr.read();
      await cr.cancel("enough");
      out.push(reason, JSON.stringify(await cr.read()));
      const broken = new ReadableStream({ start(c) { c.error(new RangeError("bad")); } });
      try { await broken.getReader().read(); } catch (e) { out.push(errorName(e)); }
      // Breaking out of for await cancels the stream.
      let stopped = false;
      const endless = new ReadableStream({ pull(c) { c.enqueue(0); }, cancel() { stopped = true; } });
      for await (const _ of endless) break;
      out.push(stopped);
      return out;
    }`);
  });

  it("pulls as the queue drains (highWaterMark, desiredSize, strategies)", async () => {
    await sameAsNode(`async function run() {
      const out = [];
      let pulls = 0;
      let controller;
      const s = new ReadableStream(
        { start(c) { controller = c; }, pull(c) { pulls++; c.enqueue(new Uint8Array(pulls)); } },
        new ByteLengthQueuingStrategy({ highWaterMark: 4 }),
      );
      await null; await null; await null; await null;
      out.push(pulls, controller.desiredSize);
      const r = s.getReader();
      out.push((await r.read()).value.length);
      await null; await null; await null;
      out.push(pulls, controller.desiredSize);
      const counted = new CountQueuingStrategy({ highWaterMark: 3 });
      out.push(counted.highWaterMark, counted.size(), new ByteLengthQueuingStrategy({ highWaterMark: 7 }).size(new Uint8Array(5)));
      return out;
    }`);
  });

  it("tees, pipes to a WritableStream and through a TransformStream", async () => {
    await sameAsNode(`async function run() {
      const out = [];
      const source = () => new ReadableStream({ start(c) { for (const w of ["a", "b", "c"]) c.enqueue(w); c.close(); } });
      const [l, r] = source().tee();
      const all = async (s) => { const got = []; for await (const x of s) got.push(x); return got.join(""); };
      out.push(await all(l), await all(r));
      const written = [];
      let closed = false;
      await source().pipeTo(new WritableStream({ write(x) { written.push(x); }, close() { closed = true; } }));
      out.push(written.join(""), closed);
      const upper = new TransformStream({ transform(x, c) { c.enqueue(x.toUpperCase()); c.enqueue("-"); } });
      out.push(await all(source().pipeThrough(upper)));
      // Errors travel down a pipe and abort the destination.
      let aborted = null;
      const failing = new ReadableStream({ start(c) { c.enqueue("x"); c.error(new TypeError("source failed")); } });
      try { await failing.pipeTo(new WritableStream({ abort(why) { aborted = why.message; } })); }
      catch (e) { out.push(e.message); }
      out.push(aborted);
      // A writer waits on backpressure.
      const slow = [];
      const ws = new WritableStream({ write(x) { slow.push(x); } }, new CountQueuingStrategy({ highWaterMark: 2 }));
      const w = ws.getWriter();
      out.push(w.desiredSize);
      w.write(1); w.write(2);
      out.push(w.desiredSize);
      await w.ready;
      await w.close();
      out.push(slow.join(","), ws.locked);
      return out;
    }`);
  });

  it("reads byte streams with BYOB readers", async () => {
    await sameAsNode(`async function run() {
      const out = [];
      let served = 0;
      const s = new ReadableStream({
        type: "bytes",
        pull(c) {
          const req = c.byobRequest;
          if (served >= 10) { c.close(); if (req) req.respond(0); return; }
          if (req) { const v = req.view; const n = Math.min(v.byteLength, 4); for (let i = 0; i < n; i++) v[i] = served++; req.respond(n); }
          else { c.enqueue(new Uint8Array([served++])); }
        },
      });
      const r = s.getReader({ mode: "byob" });
      for (;;) {
        const { done, value } = await r.read(new Uint8Array(8));
        if (done) { out.push("done", value === undefined ? "undefined" : value.byteLength); break; }
        out.push([...value].join(","));
      }
      const d = new ReadableStream({ type: "bytes", start(c) { c.enqueue(new Uint8Array([7, 8])); c.close(); } });
      const dr = d.getReader();
      out.push([...(await dr.read()).value].join(","), (await dr.read()).done);
      return out;
    }`);
  });

  it("ReadableStream.from takes iterables and async iterables", async () => {
    await sameAsNode(`async function run() {
      const all = async (s) => { const got = []; for await (const x of s) got.push(x); return got.join(","); };
      async function* gen() { yield 1; await null; yield 2; }
      return [await all(ReadableStream.from([1, 2, 3])), await all(ReadableStream.from(gen()))];
    }`);
  });

  it("shows like Node's streams in console.log; structuredClone refuses them as browsers do", async () => {
    const got = ctx.run(`
      const s = new ReadableStream();
      const b = new ReadableStream({ type: "bytes" });
      b.getReader();
      const w = new WritableStream();
      const lines = [];
      const before = __tessera_env.takeLogs();
      console.log(s); console.log(b); console.log(w);
      for (const l of __tessera_env.takeLogs()) lines.push(l.message);
      let cloned;
      try { structuredClone(s); cloned = "cloned"; } catch (e) { cloned = e.name; }
      return [lines, cloned];`);
    const s = new ReadableStream();
    const b = new ReadableStream({ type: "bytes" });
    b.getReader();
    const w = new WritableStream();
    const node = (v: unknown) => inspect(v, { breakLength: Number.POSITIVE_INFINITY });
    // Node 20 throws a TypeError; browsers (and the prelude) a DataCloneError.
    expect(got).toEqual([[node(s), node(b), node(w)], "DataCloneError"]);
  });
});

describe("TextEncoderStream and TextDecoderStream", () => {
  const CODEC = `async function run(parts, label) {
    const enc = new TextEncoderStream();
    const w = enc.writable.getWriter();
    for (const p of parts) w.write(p);
    w.close();
    const bytes = [];
    for await (const chunk of enc.readable) bytes.push(...chunk);
    // Split the bytes anywhere: the decoder keeps partial sequences across chunks.
    const cuts = [0, 1, 2, 3, 5, 8];
    const dec = new TextDecoderStream(label);
    const dw = dec.writable.getWriter();
    let at = 0;
    for (const n of cuts) { if (at < bytes.length) { dw.write(new Uint8Array(bytes.slice(at, at + n))); at += n; } }
    if (at < bytes.length) dw.write(new Uint8Array(bytes.slice(at)));
    dw.close();
    let text = "";
    for await (const t of dec.readable) text += t;
    return [bytes.join(","), text, enc.encoding, dec.encoding, dec.fatal, dec.ignoreBOM];
  }`;

  it("encode and decode any split of any string like Node's", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.string({ unit: "binary", maxLength: 6 }), { maxLength: 5 }),
        async (parts) => {
          await sameAsNode(CODEC, parts, "utf-8");
        },
      ),
      { numRuns: 60 },
    );
  });

  it("keep a surrogate pair split between chunks, and error on bad input when fatal", async () => {
    await sameAsNode(CODEC, ["a\uD83D", "\uDE00b", "\uD800"], "utf-8");
    await sameAsNode(`async function run() {
      const dec = new TextDecoderStream("utf-8", { fatal: true });
      const w = dec.writable.getWriter();
      w.write(new Uint8Array([0xff])).catch(() => {});
      w.close().catch(() => {});
      try { for await (const _ of dec.readable); return "decoded"; } catch (e) { return e.constructor.name; }
    }`);
    await sameAsNode(`async function run() {
      try { new TextDecoderStream("no-such-encoding"); } catch (e) { return e.constructor.name; }
    }`);
  });
});

describe("the lazy streams module", () => {
  it("is evaluated by a body's first stream, not by Response alone", async () => {
    const c = await iso.newContext();
    try {
      const got = await c.runAsync(`
        const lazy = () => typeof Object.getOwnPropertyDescriptor(globalThis, "ReadableStream").get;
        const out = [lazy()];
        await new Response("x").text();
        out.push(lazy());
        new Response("y").body;
        out.push(lazy(), ReadableStream.name);
        return out;`);
      expect(got).toEqual(["function", "function", "function", "ReadableStream"]);
    } finally {
      c.release();
    }
  });
});
