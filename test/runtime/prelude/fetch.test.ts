import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CATCHING,
  catching,
  type PreludeContext,
  type PreludeIsolate,
  preludeIsolate,
} from "./harness.js";

let iso: PreludeIsolate;
let ctx: PreludeContext;
beforeAll(async () => {
  iso = await preludeIsolate();
  ctx = await iso.newContext();
});
afterAll(() => iso.dispose());

const headerName = fc.oneof(
  fc.constantFrom(
    "Content-Type",
    "content-type",
    "X-A",
    "x-a",
    "Set-Cookie",
    "set-cookie",
    "Accept",
    "b",
    "a",
  ),
  fc.constantFrom("bad name", "", "é", "x\n"),
);
const headerValue = fc.oneof(
  fc.constantFrom("v", " padded\t", "a, b", "x=1; Path=/", "", "bad\nvalue", "nul\0"),
  fc.string({ maxLength: 6 }),
);
const headerOp = fc.oneof(
  fc.tuple(fc.constant("append"), headerName, headerValue),
  fc.tuple(fc.constant("set"), headerName, headerValue),
  fc.tuple(fc.constant("delete"), headerName),
  fc.tuple(fc.constant("get"), headerName),
  fc.tuple(fc.constant("has"), headerName),
  fc.tuple(fc.constant("getSetCookie")),
);

/** Runs header operations and records every result (or error constructor) and the final entries. */
const HEADER_PROGRAM = `
  function program(init, ops) {
    let h;
    try { h = new Headers(init); } catch (e) { return ["init:" + e.constructor.name]; }
    const out = [];
    for (const [op, ...args] of ops) {
      try { out.push(JSON.stringify(h[op](...args) ?? null)); } catch (e) { out.push(op + ":" + e.constructor.name); }
    }
    out.push(JSON.stringify([...h]));
    const fe = [];
    h.forEach((v, k) => fe.push([k, v]));
    out.push(JSON.stringify(fe), JSON.stringify([...h.keys()]), JSON.stringify([...h.values()]));
    return out;
  }
`;
const nodeProgram = new Function(`${HEADER_PROGRAM}; return program;`)() as (
  init: unknown,
  ops: unknown[],
) => string[];

describe("Headers", () => {
  it("behaves like Node's Headers under random operation sequences", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.constant(undefined),
          fc.array(fc.tuple(headerName, headerValue), { maxLength: 4 }),
          fc.dictionary(headerName, headerValue, { maxKeys: 3 }),
        ),
        fc.array(headerOp, { maxLength: 12 }),
        (init, ops) => {
          const got = ctx.run(`${HEADER_PROGRAM} return program($0, $1);`, init, ops);
          expect(got).toEqual(nodeProgram(init, ops));
        },
      ),
      { numRuns: 300 },
    );
  });

  it("rejects malformed init like Node", () => {
    const got = ctx.run(`${CATCHING} return [catching(() => new Headers([["a"]])).error?.ctor,
      catching(() => new Headers([["a", "b", "c"]])).error?.ctor, catching(() => new Headers(5)).error?.ctor,
      catching(() => new Headers(null)).error?.ctor, [...new Headers(new Headers({ a: "1" }))]];`);
    expect(got).toEqual([
      catching(() => new Headers([["a"]] as never)).error?.ctor,
      catching(() => new Headers([["a", "b", "c"]] as never)).error?.ctor,
      catching(() => new Headers(5 as never)).error?.ctor,
      catching(() => new Headers(null as never)).error?.ctor,
      [["a", "1"]],
    ]);
  });
});

describe("Blob and File", () => {
  // Random strings carry no CR: Node leaves a lone CR alone with endings: "native", where the
  // File API turns it into LF (checked separately below), so a lone CR would make Node differ.
  const noCr = (s: string) => s.replace(/\r/g, "");
  const part = fc.oneof(
    fc.string({ maxLength: 8 }).map((s) => ({ kind: "string", value: noCr(s) })),
    fc.string({ unit: "binary", maxLength: 4 }).map((s) => ({ kind: "string", value: noCr(s) })),
    fc.uint8Array({ maxLength: 8 }).map((b) => ({ kind: "bytes", value: [...b] })),
    fc.uint8Array({ maxLength: 8 }).map((b) => ({ kind: "buffer", value: [...b] })),
    // Node leaves a lone CR alone with endings: "native"; the File API (and browsers) turn it into LF.
    fc.constantFrom({ kind: "string", value: "a\r\nb\nc\r\n" }, { kind: "blob", value: "inner" }),
  );
  const BLOB_PROGRAM = `
    async function program(parts, type, endings, slices) {
      const built = parts.map((p) => p.kind === "string" ? p.value : p.kind === "bytes" ? new Uint8Array(p.value)
        : p.kind === "buffer" ? new Uint8Array(p.value).buffer : new Blob([p.value]));
      const b = new Blob(built, { type, endings });
      const out = [b.size, b.type, await b.text(), Array.from(new Uint8Array(await b.arrayBuffer()))];
      for (const [start, end, ct] of slices) {
        const s = b.slice(start, end, ct);
        out.push([s.size, s.type, Array.from(new Uint8Array(await s.arrayBuffer()))]);
      }
      return out;
    }
  `;
  const nodeBlobProgram = new Function(`${BLOB_PROGRAM}; return program;`)() as (
    ...a: unknown[]
  ) => Promise<unknown>;

  it("builds, reads and slices like Node's Blob", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(part, { maxLength: 5 }),
        fc.constantFrom("", "text/plain", "Text/HTML;Charset=UTF-8", "bad\u00e9type", undefined),
        fc.constantFrom("transparent", "native", undefined),
        fc.array(
          fc.tuple(
            fc.option(fc.integer({ min: -20, max: 20 }), { nil: undefined }),
            fc.option(fc.integer({ min: -20, max: 20 }), { nil: undefined }),
            fc.constantFrom(undefined, "", "A/B"),
          ),
          { maxLength: 4 },
        ),
        async (parts, type, endings, slices) => {
          const got = await ctx.runAsync(
            `${BLOB_PROGRAM} return program($0, $1, $2, $3);`,
            parts,
            type,
            endings,
            slices,
          );
          expect(got).toEqual(await nodeBlobProgram(parts, type, endings, slices));
        },
      ),
      { numRuns: 150 },
    );
  });

  it("converts every line ending with endings: native, as the File API says", async () => {
    expect(
      await ctx.runAsync(`return new Blob(["a\\r\\nb\\rc\\n"], { endings: "native" }).text();`),
    ).toBe("a\nb\nc\n");
  });

  it("has File with name and lastModified (default: the frozen time) and bytes()", async () => {
    ctx.run(`__tessera_env.begin({ mode: "query", seed: "file-seed-0123456789", nowMs: 1234 })`);
    const got = await ctx.runAsync(`
      const f = new File(["abc"], "a.txt", { type: "text/plain" });
      const g = new File([f], "b.bin", { lastModified: 99 });
      return [f instanceof Blob, f.name, f.lastModified, f.type, g.lastModified, await g.text(),
        Array.from(await f.bytes()), Object.prototype.toString.call(f), Object.prototype.toString.call(new Blob())];`);
    expect(got).toEqual([
      true,
      "a.txt",
      1234,
      "text/plain",
      99,
      "abc",
      [97, 98, 99],
      "[object File]",
      "[object Blob]",
    ]);
  });
});

/** Builds a Request/Response and reads it every way; same source in Node and in the isolate. */
const BODY_PROGRAM = `
  async function program(kind, bodyKind, bodyValue, init, reader) {
    const body = bodyKind === "none" ? undefined : bodyKind === "string" ? bodyValue
      : bodyKind === "bytes" ? new Uint8Array(bodyValue) : bodyKind === "buffer" ? new Uint8Array(bodyValue).buffer
      : bodyKind === "blob" ? new Blob([bodyValue], { type: "application/x-thing" })
      : bodyKind === "params" ? new URLSearchParams(bodyValue) : null;
    let r;
    try {
      r = kind === "response" ? new Response(body, init) : new Request("https://example.com/path?q=1", { ...init, body });
    } catch (e) {
      return ["ctor:" + e.constructor.name];
    }
    const out = [r.headers.get("content-type"), r.bodyUsed];
    if (kind === "response") out.push(r.status, r.statusText, r.ok, r.type, r.url, r.redirected);
    else out.push(r.method, r.url, r.redirect, r.cache, r.credentials, r.mode, r.referrer, r.keepalive);
    const copy = r.clone();
    try {
      if (reader === "text") out.push(await r.text());
      if (reader === "json") out.push(JSON.stringify(await r.json()));
      if (reader === "arrayBuffer") out.push(Array.from(new Uint8Array(await r.arrayBuffer())));
      if (reader === "blob") { const b = await r.blob(); out.push(b.type, b.size); }
      if (reader === "formData") out.push(JSON.stringify([...(await r.formData())]));
    } catch (e) {
      out.push("read:" + e.constructor.name);
    }
    out.push(r.bodyUsed, await copy.text());
    try { await r.text(); out.push("reread ok"); } catch (e) { out.push("reread:" + e.constructor.name); }
    return out;
  }
`;
const nodeBodyProgram = new Function(`${BODY_PROGRAM}; return program;`)() as (
  ...a: unknown[]
) => Promise<unknown>;

describe("Request and Response", () => {
  it("construct and read bodies like Node's undici", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("request", "response"),
        fc.oneof(
          fc.tuple(fc.constant("none"), fc.constant(null)),
          fc.tuple(
            fc.constant("string"),
            fc.oneof(
              fc.string({ maxLength: 10 }),
              fc.constantFrom('{"a":[1,2]}', "\ufeffBOM", "a=1&b=%20"),
            ),
          ),
          fc.tuple(
            fc.constantFrom("bytes", "buffer"),
            fc.uint8Array({ maxLength: 10 }).map((b) => [...b]),
          ),
          fc.tuple(fc.constant("blob"), fc.string({ maxLength: 6 })),
          fc.tuple(fc.constant("params"), fc.constantFrom("a=1&b=2", "x=%C3%A9&x=2", "")),
        ),
        fc.record(
          {
            method: fc.constantFrom(
              "GET",
              "post",
              "PUT",
              "patch",
              "HEAD",
              "delete",
              "CONNECT",
              "bad method",
            ),
            status: fc.constantFrom(200, 201, 204, 299, 404, 599, 600, 199),
            statusText: fc.constantFrom("", "OK", "Not Found"),
            headers: fc.constantFrom({}, { "content-type": "text/x" }, [["X-Y", "1"]], {
              "content-type": "application/x-www-form-urlencoded",
            }),
            redirect: fc.constantFrom("follow", "manual", "error"),
          },
          { requiredKeys: [] },
        ),
        fc.constantFrom("text", "json", "arrayBuffer", "blob", "formData"),
        async (kind, [bodyKind, bodyValue], init, reader) => {
          const got = await ctx.runAsync(
            `${BODY_PROGRAM} return program($0, $1, $2, $3, $4);`,
            kind,
            bodyKind,
            bodyValue,
            init,
            reader,
          );
          expect(got).toEqual(await nodeBodyProgram(kind, bodyKind, bodyValue, init, reader));
        },
      ),
      { numRuns: 300 },
    );
  });

  it("Response.json, Response.redirect and Response.error behave like Node", () => {
    const program = `${CATCHING}
      const summary = (r) => [r.status, r.type, r.ok, JSON.stringify([...r.headers])];
      return [
        summary(Response.json({ a: [1, "x"] }, { status: 201, headers: { "x-a": "b" } })),
        summary(Response.json("s", { headers: { "content-type": "text/custom" } })),
        summary(Response.redirect("https://example.com/next", 301)),
        summary(Response.redirect("https://example.com/next")),
        summary(Response.error()),
        catching(() => Response.redirect("/relative")).error?.ctor,
        catching(() => Response.redirect("https://example.com/", 200)).error?.ctor,
        catching(() => Response.json(undefined)).error?.ctor,
        catching(() => Response.error().headers.set("a", "b")).error?.ctor,
        catching(() => Response.redirect("https://example.com/").headers.append("a", "b")).error?.ctor,
      ];`;
    const got = ctx.run(program);
    const expected = new Function(
      `${program.replace(CATCHING, "")}`.replace("return [", `${CATCHING} return [`),
    )();
    expect(got).toEqual(expected);
  });

  it("reads multipart FormData bodies it wrote, and urlencoded ones", async () => {
    const got = await ctx.runAsync(`
      const fd = new FormData();
      fd.append("name", "Ada");
      fd.append("name", "Lovelace\\r\\nline2");
      fd.append("file", new Blob(["file body"], { type: "text/plain" }), "notes.txt");
      fd.set("single", "1");
      const req = new Request("https://example.com/", { method: "POST", body: fd });
      const ct = req.headers.get("content-type");
      const back = await req.formData();
      const file = back.get("file");
      return [ct.startsWith("multipart/form-data; boundary="), back.getAll("name"), file.name, file.type, await file.text(),
        back.get("single"), back.has("nope"), [...fd.keys()]];`);
    expect(got).toEqual([
      true,
      ["Ada", "Lovelace\r\nline2"],
      "notes.txt",
      "text/plain",
      "file body",
      "1",
      false,
      ["name", "name", "file", "single"],
    ]);
  });

  it("exposes bodies as ReadableStreams, and reads stream bodies, as Node does", async () => {
    const program = `async function run() {
      const enc = (s) => new TextEncoder().encode(s);
      const streamOf = (...parts) => new ReadableStream({ start(c) { for (const p of parts) c.enqueue(enc(p)); c.close(); } });
      const out = [new Response(null).body, new Request("https://a.example/").body];
      const r = new Response("hello");
      const body = r.body;
      out.push(Object.prototype.toString.call(body), r.body === body, r.bodyUsed);
      const reader = body.getReader();
      const first = await reader.read();
      out.push(new TextDecoder().decode(first.value), r.bodyUsed);
      try { await r.text(); out.push("readable"); } catch (e) { out.push(e.constructor.name); }
      const s = new Response(streamOf("a", "b", "c"), { headers: { "x-a": "1" } });
      out.push(s.headers.get("content-type"), s.bodyUsed);
      const c = s.clone();
      out.push(await s.text(), await c.text(), s.bodyUsed, c.bodyUsed);
      const used = new Response("x");
      await used.text();
      out.push(used.body !== null, used.bodyUsed, used.body.locked);
      const locked = streamOf("z");
      locked.getReader();
      try { new Response(locked); out.push("accepted"); } catch (e) { out.push(e.constructor.name); }
      const q = new Request("https://a.example/", { method: "POST", body: streamOf('{"k":', "[1,2]}"), duplex: "half" });
      out.push(JSON.stringify(await q.json()), q.bodyUsed);
      const moved = new Request("https://a.example/", { method: "PUT", body: streamOf("m"), duplex: "half" });
      const next = new Request(moved);
      out.push(await next.text());
      out.push(await new Response(new Blob(["bl", "ob"]).stream()).text());
      const big = new Uint8Array(150000).map((_, i) => i % 251);
      const back = new Uint8Array(await new Response(new Response(big).body).arrayBuffer());
      out.push(back.length, back.every((b, i) => b === i % 251));
      try { await new Response(new ReadableStream({ start(c) { c.enqueue("text"); c.close(); } })).text(); out.push("accepted"); }
      catch (e) { out.push(e.constructor.name); }
      try { await new Response(new ReadableStream({ pull(c) { c.error(new RangeError("boom")); } })).text(); }
      catch (e) { out.push(e.constructor.name, e.message); }
      const blob = await new Response(streamOf("x", "y"), { headers: { "content-type": "text/x" } }).blob();
      out.push(blob.size, blob.type);
      return out;
    }`;
    const got = await ctx.runAsync(`${program} return run();`);
    expect(got).toEqual(
      await (new Function(`${program} return run;`)() as () => Promise<unknown>)(),
    );
  });

  it("new Request(request) moves the body and keeps the method", async () => {
    const program = `async function run() {
      const a = new Request("https://example.com/", { method: "POST", body: "payload", headers: { "x-a": "1" } });
      const b = new Request(a, { headers: { "x-b": "2" } });
      const out = [a.bodyUsed, b.method, b.url, JSON.stringify([...b.headers]), await b.text()];
      try { await a.text(); out.push("a readable"); } catch (e) { out.push(e.constructor.name); }
      return out;
    }`;
    const got = await ctx.runAsync(`${program} return run();`);
    expect(got).toEqual(
      await (new Function(`${program} return run;`)() as () => Promise<unknown>)(),
    );
  });
});

describe("events and abort signals", () => {
  const EVENT_PROGRAM = `
    function program() {
      const out = [];
      const t = new EventTarget();
      const h1 = (e) => out.push(["h1", e.type, e.target === t, e.currentTarget === t, e.eventPhase]);
      t.addEventListener("ping", h1);
      t.addEventListener("ping", h1);
      t.addEventListener("ping", { handleEvent: (e) => out.push(["obj", e.defaultPrevented]) }, { once: true });
      t.addEventListener("ping", (e) => { e.preventDefault(); out.push(["cancel", e.cancelable]); });
      t.addEventListener("ping", (e) => { e.stopImmediatePropagation(); out.push("stop"); });
      t.addEventListener("ping", () => out.push("never"));
      out.push(t.dispatchEvent(new Event("ping", { cancelable: true })));
      out.push(t.dispatchEvent(new Event("ping")));
      t.removeEventListener("ping", h1);
      out.push(t.dispatchEvent(new Event("ping")));
      const ce = new CustomEvent("c", { detail: { d: 1 } });
      out.push(JSON.stringify(ce.detail), ce instanceof Event, ce.bubbles);
      const ac = new AbortController();
      const seen = [];
      ac.signal.addEventListener("abort", (e) => seen.push(["listener", e.type]));
      ac.signal.onabort = () => seen.push("onabort");
      const dependent = AbortSignal.any([ac.signal, new AbortController().signal]);
      out.push(ac.signal.aborted, dependent.aborted);
      ac.abort("why");
      ac.abort("again");
      out.push(ac.signal.aborted, ac.signal.reason, dependent.aborted, dependent.reason, JSON.stringify(seen));
      try { ac.signal.throwIfAborted(); } catch (e) { out.push("threw " + e); }
      const plain = new AbortController();
      plain.abort();
      out.push(plain.signal.reason.name, plain.signal.reason.message, plain.signal.reason instanceof DOMException);
      const pre = AbortSignal.abort();
      out.push(pre.aborted, pre.reason.name, AbortSignal.any([pre]).aborted);
      const removable = new AbortController();
      const t2 = new EventTarget();
      t2.addEventListener("x", () => out.push("signal listener"), { signal: removable.signal });
      t2.dispatchEvent(new Event("x"));
      removable.abort();
      t2.dispatchEvent(new Event("x"));
      try { new AbortSignal(); } catch (e) { out.push(e.constructor.name); }
      return out;
    }
  `;
  it("dispatch, once, preventDefault, stopImmediatePropagation, AbortController like Node", () => {
    const got = ctx.run(`${EVENT_PROGRAM} return program();`);
    expect(got).toEqual((new Function(`${EVENT_PROGRAM} return program;`)() as () => unknown)());
  });
});
