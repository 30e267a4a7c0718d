import { Console } from "node:console";
import { Writable } from "node:stream";
import { format, inspect } from "node:util";
import fc from "fast-check";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  CATCHING,
  catching,
  type PreludeContext,
  type PreludeIsolate,
  preludeIsolate,
} from "./harness.js";
import { valueSource } from "./values.js";

let iso: PreludeIsolate;
let ctx: PreludeContext;
beforeAll(async () => {
  iso = await preludeIsolate();
  ctx = await iso.newContext();
});
afterAll(() => iso.dispose());
beforeEach(() => {
  ctx.run(`__tessera_env.begin({ mode: "query", seed: "console-test-seed-0001", nowMs: 1000 });`);
});

interface LogLine {
  level: string;
  message: string;
}

function logs(code: string, ...args: unknown[]): LogLine[] {
  return ctx.run<LogLine[]>(`${code}; return __tessera_env.takeLogs();`, ...args);
}

/** Node may break long output over lines; the prelude never does. Compare modulo whitespace. */
function collapse(s: string): string {
  return s.replace(/\s+/g, " ");
}

function nodeEval(source: string): unknown {
  return new Function(`return (${source});`)();
}

describe("console formatting", () => {
  it("formats like Node's console.log for the documented example", () => {
    expect(logs(`console.log({ a: 1 }, "x", 2)`)).toEqual([
      { level: "LOG", message: "{ a: 1 } x 2" },
    ]);
  });

  it("inspects random values like Node's util.inspect (modulo line breaks)", () => {
    fc.assert(
      fc.property(
        fc.array(valueSource({ forInspect: true }), { minLength: 1, maxLength: 8 }),
        (sources) => {
          const got = ctx.run<string[]>(
            `return $0.map((src) => {
             __tessera_env.begin({ mode: "query", seed: "console-test-seed-0001", nowMs: 0 });
             console.log("%O", (0, eval)("(" + src + ")"));
             return __tessera_env.takeLogs()[0].message;
           });`,
            sources,
          );
          const expected = sources.map((src) => format("%O", nodeEval(src)));
          expect(got.map(collapse)).toEqual(expected.map(collapse));
          // And the prelude's output is always one line unless a string value contains one.
          for (const line of got) expect(line.includes("\n")).toBe(false);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("applies printf-style specifiers like Node's util.format", () => {
    const arg = fc.oneof(
      valueSource({ forInspect: true }),
      fc.constantFrom(
        '"42"',
        '"3.9px"',
        "(new (class { toString() { return 'TS'; } })())",
        "new Date(0)",
        "[1, [2, [3, [4]]]]",
      ),
    );
    const template = fc
      .array(
        fc.oneof(
          fc.constantFrom("%s", "%d", "%i", "%f", "%j", "%o", "%O", "%c", "%%", "%", "%x"),
          fc.string({ maxLength: 4 }),
        ),
        {
          maxLength: 6,
        },
      )
      .map((parts) => parts.join(""));
    fc.assert(
      fc.property(template, fc.array(arg, { maxLength: 5 }), (tpl, args) => {
        // Node's %o lists a WeakMap's or WeakSet's entries through engine internals; JavaScript
        // cannot, so the prelude shows `<items unknown>` there as it does everywhere else.
        fc.pre(!(tpl.includes("%o") && args.some((a) => a.includes("Weak"))));
        const sourceArgs = `[${JSON.stringify(tpl)}, ${args.join(", ")}]`;
        const got = ctx.run(
          `${CATCHING}
           __tessera_env.begin({ mode: "query", seed: "console-test-seed-0001", nowMs: 0 });
           return catching(() => { console.log(...(0, eval)($0)); return __tessera_env.takeLogs()[0].message; });`,
          sourceArgs,
        ) as { ok?: string; error?: unknown };
        const expected = catching(() => format(...(nodeEval(sourceArgs) as [string])));
        if (expected.error === undefined) {
          expect(collapse(got.ok ?? "<threw>")).toBe(collapse(expected.ok ?? ""));
        } else {
          expect(got.error).toMatchObject({ ctor: expected.error.ctor });
        }
      }),
      { numRuns: 300 },
    );
  });

  it("matches Node on hand-picked cases", () => {
    const cases = [
      "(() => { const o = { x: 1 }; o.self = o; return o; })()",
      "(() => { const a = [1]; a.push({ p: a }); return a; })()",
      "(() => { const m = new Map(); m.set('m', m); return m; })()",
      "{ a: { b: { c: { d: 1 } } } }",
      "Array.from({ length: 120 }, (_, i) => i)",
      "new Uint8Array(130)",
      "new ArrayBuffer(120)",
      "['x'.repeat(20), 'y']",
      "{ get a() { return 1; }, set b(v) {}, get c() { return 1; }, set c(v) {} }",
      "Object.assign(function named() {}, { x: 1 })",
      "Object.assign(new Date(0), { x: 1 })",
      "Object.assign(/re/g, { y: 2 })",
      // Past the depth, a RegExp with properties is still shown as itself (found by the %o property).
      "{ a: { b: { c: Object.assign(/re/, { y: 2 }) } } }",
      "Object.assign([1, 2], { extra: true })",
      "new (class Tagged { get [Symbol.toStringTag]() { return 'TG'; } })()",
      "{ [Symbol.toStringTag]: 'T', a: 1 }",
      "(function () { return arguments; })(1, 2)",
      "new (class Bar extends Map {})([[1, 2]])",
      "new (class Q extends Uint8Array {})(2)",
      "Object.create(Object.create(null))",
      "{ 'a-b': 1, 2: 3, [Symbol('s')]: 4 }",
      "[undefined, null, -0, 1n, Symbol.iterator]",
      "new WeakSet()",
      "{ [Symbol.for('nodejs.util.inspect.custom')]() { return 'custom!'; } }",
      "{ nested: { [Symbol.for('nodejs.util.inspect.custom')]() { return { replaced: true }; } } }",
      "(() => { const e = new Error('boom'); e.stack = 'Error: boom\\n    at here (file.js:1:1)'; e.code = 'E1'; return e; })()",
      "(() => { const e = new TypeError('bad', { cause: 'why' }); e.stack = 'TypeError: bad\\n    at x'; return { e }; })()",
      "(() => { const e = new Error('nostack'); delete e.stack; e.stack = undefined; return e; })()",
      "(() => { class MyErr extends Error {} const e = new MyErr('q'); e.stack = 'Error: q\\n    at y'; return e; })()",
    ];
    const got = ctx.run<string[]>(
      `return $0.map((src) => { console.log((0, eval)("(" + src + ")")); return __tessera_env.takeLogs()[0].message; });`,
      cases,
    );
    expect(got.map(collapse)).toEqual(cases.map((src) => collapse(format(nodeEval(src)))));
  });

  it("shows hidden properties under %o like Node, typed arrays' included", () => {
    const cases = [
      "new Int32Array([1, 2])",
      "new Map([[new Int32Array([]), 0]])",
      "[new Uint8Array(3)]",
      "new BigInt64Array(1)",
      "new Float64Array(new ArrayBuffer(16), 8, 1)",
      "Object.assign(new Uint8Array(1), { extra: 1 })",
      "new ArrayBuffer(2)",
      "{ a: { b: { c: { d: { e: new Uint8Array(1) } } } } }",
      "{ a: { b: { c: { d: { e: /re/ } } } } }",
      "[1, { x: [2] }]",
      "new (class A { m() {} get g() { return 1; } })()",
      "(() => { class A { get g() { return 1; } } class B extends A { n() {} } return new B(); })()",
      "class Dog extends Array {}",
      "class C {}",
      "(() => { class A { get g() { return 1; } } return class D extends A {}; })()",
      "new (class E extends Map {})()",
      "Object.create({ x: 1 })",
      "Object.create(Object.create(Object.create(Object.create({ deep: 1 }))))",
      "(() => { class P {} P.prototype.data = { a: { b: { c: 1 } } }; return [new P()]; })()",
      "(() => { class P { get own() { return 0; } } const p = new P(); p.own2 = 1; return p; })()",
      "Object.assign(Object.create({ shadow: 1 }), { shadow: 2 })",
    ];
    const got = ctx.run<string[]>(
      `return $0.map((src) => { console.log("%o", (0, eval)("(" + src + ")")); return __tessera_env.takeLogs()[0].message; });`,
      cases,
    );
    expect(got.map(collapse)).toEqual(cases.map((src) => collapse(format("%o", nodeEval(src)))));
  });

  it("renders console.table like Node", () => {
    const cases = [
      "[{ a: 1, b: 'x' }, { a: 2, c: true }]",
      "{ r1: { c: 1 }, r2: 5 }",
      "[1, 'two', { three: 3 }]",
      "new Map([['k', { v: 1 }], [2, 'two']])",
      "new Set(['a', 'b'])",
      "[[1, 2], [3, 4, 5]]",
      "[{ 名前: '日本' }]",
    ];
    const got = ctx.run<string[]>(
      `return $0.map((src) => { console.table((0, eval)("(" + src + ")")); return __tessera_env.takeLogs()[0].message; });`,
      cases,
    );
    const expected = cases.map((src) => {
      let out = "";
      const stream = new Writable({
        write(chunk, _enc, cb) {
          out += String(chunk);
          cb();
        },
      });
      new Console({ stdout: stream, colorMode: false }).table(nodeEval(src));
      return out.replace(/\n$/, "");
    });
    expect(got).toEqual(expected);
    expect(
      logs(`console.table(5); console.table([{ a: 1, b: 2 }], ["b"])`).map((l) => l.message),
    ).toEqual([
      "5",
      (() => {
        let out = "";
        const stream = new Writable({
          write(chunk, _enc, cb) {
            out += String(chunk);
            cb();
          },
        });
        new Console({ stdout: stream, colorMode: false }).table([{ a: 1, b: 2 }], ["b"]);
        return out.replace(/\n$/, "");
      })(),
    ]);
  });

  it("prints Web objects readably", async () => {
    const lines =
      logs(`console.log(new Headers({ b: "2", a: "1" }), new Blob(["abc"], { type: "text/plain" }),
      new URL("https://example.com/p?q=1#h").href, new URLSearchParams("a=1&b=2"))`);
    expect(lines[0]!.message).toBe(
      "Headers { a: '1', b: '2' } Blob { size: 3, type: 'text/plain' } https://example.com/p?q=1#h URLSearchParams { 'a' => '1', 'b' => '2' }",
    );
    expect(inspect(new Headers({ b: "2", a: "1" }))).toContain("Headers");
  });
});

describe("console methods and levels", () => {
  it("maps methods to levels", () => {
    expect(
      logs(`console.log("l"); console.info("i"); console.warn("w"); console.error("e"); console.debug("d");
            console.dir({ x: 1 }); console.dirxml("x"); console.assert(true, "no"); console.assert(false, "yes %d", 1);
            console.assert(0)`),
    ).toEqual([
      { level: "LOG", message: "l" },
      { level: "INFO", message: "i" },
      { level: "WARN", message: "w" },
      { level: "ERROR", message: "e" },
      { level: "DEBUG", message: "d" },
      { level: "LOG", message: "{ x: 1 }" },
      { level: "LOG", message: "x" },
      { level: "ERROR", message: "Assertion failed: yes 1" },
      { level: "ERROR", message: "Assertion failed" },
    ]);
  });

  it("counts, times against the frozen clock, groups and traces", () => {
    const lines =
      logs(`console.count(); console.count(); console.count("x"); console.countReset(); console.count();
      console.countReset("nope");
      console.time("t"); console.time("t"); console.timeLog("t", { a: 1 }); console.timeEnd("t"); console.timeEnd("t");
      console.group("G"); console.log("inside\\nsecond"); console.group(); console.info("deeper"); console.groupEnd(); console.groupEnd(); console.log("out");
      console.trace("here %s", "now");`);
    expect(lines.slice(0, -1)).toEqual([
      { level: "LOG", message: "default: 1" },
      { level: "LOG", message: "default: 2" },
      { level: "LOG", message: "x: 1" },
      { level: "LOG", message: "default: 1" },
      { level: "WARN", message: "Count for 'nope' does not exist" },
      { level: "WARN", message: "Label 't' already exists for console.time()" },
      { level: "LOG", message: "t: 0ms { a: 1 }" },
      { level: "LOG", message: "t: 0ms" },
      { level: "WARN", message: "No such label 't' for console.timeEnd()" },
      { level: "LOG", message: "G" },
      { level: "LOG", message: "  inside\n  second" },
      { level: "INFO", message: "    deeper" },
      { level: "LOG", message: "out" },
    ]);
    expect(lines.at(-1)!.level).toBe("LOG");
    expect(lines.at(-1)!.message).toMatch(/^Trace: here now\n {4}at /);
  });

  it("methods work detached from console", () => {
    expect(
      logs(`const { log, warn } = console; log("a"); warn("b"); [1, 2].forEach(console.info)`),
    ).toEqual([
      { level: "LOG", message: "a" },
      { level: "WARN", message: "b" },
      { level: "INFO", message: "1 0 [ 1, 2 ]" },
      { level: "INFO", message: "2 1 [ 1, 2 ]" },
    ]);
  });
});

describe("log limits", () => {
  it("keeps 256 lines per execution, then records one line saying the rest were dropped", () => {
    const lines = logs(`for (let i = 0; i < 300; i++) console.log("line", i)`);
    expect(lines).toHaveLength(257);
    expect(lines[255]).toEqual({ level: "LOG", message: "line 255" });
    expect(lines[256]!.level).toBe("WARN");
    expect(lines[256]!.message).toMatch(/maximum 256 lines.*dropped/);
  });

  it("counts lines per execution even when they are taken in between, and begin() resets", () => {
    ctx.run(`for (let i = 0; i < 200; i++) console.log(i)`);
    expect(logs("")).toHaveLength(200);
    expect(logs(`for (let i = 0; i < 100; i++) console.log(i)`)).toHaveLength(57);
    ctx.run(`__tessera_env.begin({ mode: "mutation", seed: "console-test-seed-0002", nowMs: 5 })`);
    expect(logs(`console.log("fresh")`)).toEqual([{ level: "LOG", message: "fresh" }]);
  });

  it("truncates lines longer than 4 KiB of UTF-8 on a character boundary", () => {
    const lines = logs(
      `console.log("a".repeat(5000)); console.log("é".repeat(3000)); console.log("😀".repeat(1500)); console.log("b".repeat(4096))`,
    );
    const bytes = (s: string) => Buffer.byteLength(s, "utf8");
    for (const line of lines) expect(bytes(line.message)).toBeLessThanOrEqual(4096);
    expect(lines[0]!.message).toMatch(/^a+ \(truncated\)$/);
    expect(lines[1]!.message).toMatch(/^é+ \(truncated\)$/);
    expect(lines[2]!.message).toMatch(/^(😀)+ \(truncated\)$/);
    expect(lines[3]!.message).toBe("b".repeat(4096));
  });

  it("reports errors thrown in microtasks and event listeners", async () => {
    const lines = await ctx.runAsync<LogLine[]>(`
      queueMicrotask(() => { throw new Error("in microtask"); });
      const t = new EventTarget();
      t.addEventListener("x", () => { throw new TypeError("in listener"); });
      t.dispatchEvent(new Event("x"));
      await new Promise((r) => queueMicrotask(r));
      return __tessera_env.takeLogs();`);
    expect(lines.map((l) => [l.level, l.message.split("\n")[0]])).toEqual([
      ["ERROR", "Uncaught TypeError: in listener"],
      ["ERROR", "Uncaught Error: in microtask"],
    ]);
  });
});
