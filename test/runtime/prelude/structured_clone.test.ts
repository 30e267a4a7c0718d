import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CATCHING,
  catching,
  type PreludeContext,
  type PreludeIsolate,
  preludeIsolate,
} from "./harness.js";
import { DESCRIBE, valueSource } from "./values.js";

let iso: PreludeIsolate;
let ctx: PreludeContext;
beforeAll(async () => {
  iso = await preludeIsolate();
  ctx = await iso.newContext();
});
afterAll(() => iso.dispose());

const nodeDescribe = new Function(`${DESCRIBE}; return describe;`)() as (v: unknown) => string;

function nodeEval(source: string): unknown {
  return new Function(`return (${source});`)();
}

describe("structuredClone", () => {
  it("clones random values exactly as Node does", () => {
    fc.assert(
      fc.property(fc.array(valueSource(), { minLength: 1, maxLength: 10 }), (sources) => {
        const got = ctx.run<string[]>(
          `${DESCRIBE}
           return $0.map((src) => {
             const v = (0, eval)("(" + src + ")");
             const c = structuredClone(v);
             if (typeof v === "object" && v !== null && c === v) return "same object!";
             return describe(c);
           });`,
          sources,
        );
        const expected = sources.map((src) => nodeDescribe(structuredClone(nodeEval(src))));
        expect(got).toEqual(expected);
      }),
      { numRuns: 200 },
    );
  });

  it("keeps circular and shared references", () => {
    const source = `(() => {
      const shared = { s: 1 };
      const o = { a: shared, b: shared, list: [shared] };
      o.self = o;
      o.list.push(o.list);
      const m = new Map();
      m.set(m, o);
      o.m = m;
      const buf = new ArrayBuffer(8);
      o.views = [new Uint8Array(buf, 2, 3), new DataView(buf), new Uint16Array(buf)];
      return o;
    })()`;
    const got = ctx.run(
      `${DESCRIBE} const v = (0, eval)($0); const c = structuredClone(v);
       return [describe(c), c.self === c, c.a === c.b, c.m.get(c.m) === c, c.views[0].buffer === c.views[1].buffer, c.views[0].buffer !== v.views[0].buffer];`,
      source,
    );
    expect(got).toEqual([
      nodeDescribe(structuredClone(nodeEval(source))),
      true,
      true,
      true,
      true,
      true,
    ]);
  });

  it("clones errors as V8 does (standard names, message, cause; other properties dropped)", () => {
    const sources = [
      `new TypeError("m", { cause: { c: 1 } })`,
      `Object.assign(new Error("m"), { name: "Custom", extra: 1 })`,
      `(() => { class X extends RangeError {}; return new X("q"); })()`,
      `Object.assign(new Error("m"), { name: "SyntaxError" })`,
      `new Error()`,
      `new URIError("u")`,
    ];
    const got = ctx.run(
      `${DESCRIBE} return $0.map((src) => describe(structuredClone((0, eval)("(" + src + ")"))));`,
      sources,
    );
    expect(got).toEqual(sources.map((src) => nodeDescribe(structuredClone(nodeEval(src)))));
  });

  it("throws DataCloneError on what browsers refuse", () => {
    const sources = [
      "function foo() {}",
      "() => 1",
      'Symbol("x")',
      '({ s: Symbol("x") })',
      "new WeakMap()",
      "new WeakSet()",
      "Promise.resolve(1)",
      "(function* () {})()",
      "new Map().entries()",
      "[1, { f() {} }]",
      'Object(Symbol("z"))',
    ];
    const got = ctx.run(
      `${CATCHING} return $0.map((src) => catching(() => structuredClone((0, eval)("(" + src + ")"))));`,
      sources,
    );
    expect(got).toEqual(sources.map((src) => catching(() => structuredClone(nodeEval(src)))));
    // Platform objects are refused as in browsers (Node clones some of them to {}).
    expect(
      ctx.run(`${CATCHING} return [new Headers(), new Response(""), new URL("http://a/"), new URLSearchParams("a=1"), new AbortController()]
        .map((v) => catching(() => structuredClone(v)).error?.name);`),
    ).toEqual([
      "DataCloneError",
      "DataCloneError",
      "DataCloneError",
      "DataCloneError",
      "DataCloneError",
    ]);
    expect(ctx.run(`${CATCHING} return catching(() => structuredClone())`)).toMatchObject({
      error: { ctor: "TypeError" },
    });
  });

  it("clones Blob, File and DOMException as browsers do", async () => {
    const got = await ctx.runAsync(`
      const b = structuredClone(new Blob(["hé"], { type: "text/plain" }));
      const f = structuredClone(new File(["x"], "a.txt", { lastModified: 5 }));
      const d = structuredClone(new DOMException("gone", "AbortError"));
      return [b instanceof Blob, b.type, await b.text(), f instanceof File, f.name, f.lastModified,
        d instanceof DOMException, d.name, d.message, d.code];`);
    expect(got).toEqual([
      true,
      "text/plain",
      "hé",
      true,
      "a.txt",
      5,
      true,
      "AbortError",
      "gone",
      20,
    ]);
  });

  it("validates the transfer list and copies transferred buffers", () => {
    const got = ctx.run(`${CATCHING}
      const buf = new Uint8Array([1, 2, 3]).buffer;
      const c = structuredClone({ buf }, { transfer: [buf] });
      return [Array.from(new Uint8Array(c.buf)), catching(() => structuredClone(1, { transfer: [{}] })).error?.name,
        catching(() => structuredClone(1, { transfer: [buf, buf] })).error?.name];`);
    expect(got).toEqual([[1, 2, 3], "DataCloneError", "DataCloneError"]);
  });
});
