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

const latin1 = fc.string({
  unit: fc.integer({ min: 0, max: 0xff }).map((c) => String.fromCharCode(c)),
});
const base64ish = fc.oneof(
  fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b).toString("base64")),
  fc.string({
    unit: fc.constantFrom(..."ABCabc0189+/=  \t\n\f\r-_*é".split("")),
    maxLength: 16,
  }),
  fc
    .tuple(
      fc.uint8Array({ maxLength: 20 }),
      fc.nat(30),
      fc.constantFrom(" ", "\n", "=", "==", "a", "*"),
    )
    .map(([b, at, insert]) => {
      const s = Buffer.from(b).toString("base64");
      const i = at % (s.length + 1);
      return s.slice(0, i) + insert + s.slice(i);
    }),
);

describe("atob and btoa", () => {
  it("btoa matches Node on Latin-1 strings and rejects wider characters the same way", () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(latin1, fc.string()), { maxLength: 20 }), (inputs) => {
        const got = ctx.run(`${CATCHING} return $0.map((s) => catching(() => btoa(s)));`, inputs);
        expect(got).toEqual(inputs.map((s) => catching(() => btoa(s))));
      }),
      { numRuns: 200 },
    );
  });

  it("atob matches Node: results, InvalidCharacterError names and messages", () => {
    fc.assert(
      fc.property(fc.array(base64ish, { maxLength: 20 }), (inputs) => {
        const got = ctx.run(`${CATCHING} return $0.map((s) => catching(() => atob(s)));`, inputs);
        expect(got).toEqual(inputs.map((s) => catching(() => atob(s))));
      }),
      { numRuns: 300 },
    );
  });

  it("round-trips and converts arguments like browsers", () => {
    const got = ctx.run(`${CATCHING}
      const all = Array.from({ length: 256 }, (_, i) => String.fromCharCode(i)).join("");
      return [atob(btoa(all)) === all, btoa(undefined), btoa(null), btoa(12), atob(" YQ = = "),
        catching(() => atob()).error.ctor, catching(() => btoa()).error.ctor,
        catching(() => atob("a")).error.ctor];`);
    expect(got).toEqual([
      true,
      btoa("undefined"),
      btoa("null"),
      btoa("12"),
      "a",
      "TypeError",
      "TypeError",
      "DOMException",
    ]);
  });
});
