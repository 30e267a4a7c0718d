import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { bundleConvexDir } from "../../src/runtime/bundler.js";
import { GUARD_GLOBAL, instrumentApp } from "../../src/runtime/instrument.js";
import { linkModules } from "../../src/runtime/loader.js";

// A guard that lets everything through (the real one is in the prelude).
const pass = <T>(o: T) => o;
const passGuard = {
  e: 0,
  w: pass,
  wc: pass,
  r: pass,
  t() {},
  roots() {},
  install() {},
};

/** Runs an instrumented script; returns what it left in `out`. */
function run(code: string): Record<string, unknown> {
  const g = { [GUARD_GLOBAL]: passGuard, out: {} as Record<string, unknown> };
  new Function("globalThis", code)(g);
  return g.out;
}

const nameOf = (f: unknown) => Object.getOwnPropertyDescriptor(f, "name");

// esbuild's keepNames helper as the official CLI's minified bundles carry it.
const HELPER = `var At = Object.defineProperty;
  var n = (e, t) => At(e, "name", { value: t, configurable: !0 });`;

describe("functions named by esbuild's __name helper", () => {
  it("are named as they are made, with the same name property as the helper gives", () => {
    const script = `"use strict";
(() => {
  ${HELPER}
  const out = globalThis.out;
  out.arrow = n(async (x) => x, "get");
  out.fn = n(function () { return this; }, "query");
  out.gen = n(function* () {}, "items");
  out.odd = n(() => 1, "not an identifier");
  out.helperResult = n(() => 2, "same");
  out.viaHelper = (() => { const f = () => 3; n(f, "declared"); return f; })();
})();`;
    const { code } = instrumentApp(script);
    // The on-the-spot functions no longer go through the helper; the declared one still does.
    expect(code.match(/\bn\(/g)).toHaveLength(1);
    const out = run(code);
    const expected = (value: string) => ({
      value,
      writable: false,
      enumerable: false,
      configurable: true,
    });
    expect(nameOf(out.arrow)).toEqual(expected("get"));
    expect(nameOf(out.fn)).toEqual(expected("query"));
    expect(nameOf(out.gen)).toEqual(expected("items"));
    expect(nameOf(out.odd)).toEqual(expected("not an identifier"));
    expect((out.helperResult as () => number)()).toBe(2);
    expect(nameOf(out.viaHelper)).toEqual(expected("declared"));
    // Same behaviour otherwise: `this` of a function, async and generator kinds.
    expect((out.fn as () => unknown).call(out)).toBe(out);
    expect((out.arrow as (x: number) => Promise<number>)(5)).toBeInstanceOf(Promise);
    expect(Object.prototype.toString.call((out.gen as () => unknown)())).toBe("[object Generator]");
  });

  it("keeps every call it cannot prove equivalent", () => {
    const cases = [
      // a named function expression keeps its own name until the helper renames it
      `out.a = n(function inner() {}, "outer");`,
      // a class's static code may read its name before the helper sets it
      `out.a = n(class {}, "K");`,
      // "__proto__" in an object literal sets the prototype
      `out.a = n(() => 1, "__proto__");`,
      // the name is not a literal
      `const k = "x"; out.a = n(() => 1, k);`,
      // an optional call, extra arguments
      `out.a = n?.(() => 1, "x");`,
      `out.a = n(() => 1, "x", 3);`,
    ];
    for (const body of cases) {
      const { code } = instrumentApp(`"use strict";
(() => {
  ${HELPER}
  const out = globalThis.out;
  ${body}
})();`);
      expect(code, body).toMatch(/\bn(\?\.)?\(/);
    }
    // Not the helper: reassigned, a shadowed Object, another property, another descriptor.
    const helpers = [
      `var At = Object.defineProperty; var n = (e, t) => At(e, "name", { value: t, configurable: !0 }); n = (e) => e;`,
      `var Object = { defineProperty: (o) => o }; var At = Object.defineProperty; var n = (e, t) => At(e, "name", { value: t, configurable: !0 });`,
      `var At = Object.defineProperty; var n = (e, t) => At(e, "length", { value: t, configurable: !0 });`,
      `var At = Object.defineProperty; var n = (e, t) => At(e, "name", { value: t, writable: !0 });`,
      `var At = Object.defineProperties; var n = (e, t) => At(e, "name", { value: t, configurable: !0 });`,
    ];
    for (const helper of helpers) {
      const { code } = instrumentApp(`"use strict";
(() => {
  ${helper}
  const out = globalThis.out;
  out.a = n(() => 1, "x");
})();`);
      expect(code, helper).toContain(`n(() => 1, "x")`);
    }
  });

  it("rewrites the official CLI's bundles: functions keep the names the source gave them", async () => {
    // Bundled with keepNames and minified identifiers, as `convex deploy` does.
    const modules = await bundleConvexDir(join(import.meta.dirname, "../fixtures/names"));
    expect(modules[0]!.source).toMatch(/"getThing"\)/); // the bundler's helper call
    const app = await linkModules(modules);
    expect(app.script).toMatch(/\{ "getThing": async \(\) => 1 \}\)\["getThing"\]/);
    const g: { __tessera_app?: { modules: Record<string, Record<string, unknown>> } } = {
      [GUARD_GLOBAL]: passGuard,
    } as never;
    new Function("globalThis", app.script)(g);
    const names = (g.__tessera_app!.modules["names.js"]!.names as () => string[])();
    expect(names).toEqual(["getThing", "makeQuery", "handler", "inner"]);
  });
});
