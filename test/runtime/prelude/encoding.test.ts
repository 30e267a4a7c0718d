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

/** Strings with any UTF-16 code units, lone surrogates included. */
const anyUnits = fc.string({
  unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)),
});
const mixedStrings = fc.oneof(
  fc.string(),
  fc.string({ unit: "grapheme" }),
  fc.string({ unit: "binary" }),
  anyUnits,
);

/** Byte arrays that look like UTF-8 often, with errors sprinkled in. */
const utf8ishBytes = fc.oneof(
  fc.uint8Array({ maxLength: 64 }),
  fc
    .array(
      fc.oneof(
        fc.string({ unit: "binary", maxLength: 4 }).map((s) => [...new TextEncoder().encode(s)]),
        fc.array(fc.integer({ min: 0x80, max: 0xff }), { maxLength: 3 }),
        fc.constantFrom([0xef, 0xbb, 0xbf], [0xed, 0xa0, 0x80], [0xf4, 0x90], [0xe0, 0x80], [0xc0]),
      ),
      { maxLength: 24 },
    )
    .map((chunks) => new Uint8Array(chunks.flat())),
);

function toArrays(strings: string[]): number[][] {
  return strings.map((s) => [...new TextEncoder().encode(s)]);
}

describe("TextEncoder", () => {
  it("encodes like Node on arbitrary strings (lone surrogates become U+FFFD)", () => {
    fc.assert(
      fc.property(fc.array(mixedStrings, { maxLength: 20 }), (inputs) => {
        const got = ctx.run<number[][]>(
          "const e = new TextEncoder(); return $0.map((s) => Array.from(e.encode(s)));",
          inputs,
        );
        expect(got).toEqual(toArrays(inputs));
      }),
      { numRuns: 100 },
    );
  });

  it("encodeInto matches Node for every destination size", () => {
    fc.assert(
      fc.property(mixedStrings, fc.integer({ min: 0, max: 40 }), (input, size) => {
        const got = ctx.run<{ read: number; written: number; bytes: number[] }>(
          `const dest = new Uint8Array($1);
           const r = new TextEncoder().encodeInto($0, dest);
           return { read: r.read, written: r.written, bytes: Array.from(dest) };`,
          input,
          size,
        );
        const dest = new Uint8Array(size);
        const r = new TextEncoder().encodeInto(input, dest);
        expect(got).toEqual({ read: r.read, written: r.written, bytes: [...dest] });
      }),
      { numRuns: 300 },
    );
  });

  it("has the standard shape", () => {
    expect(
      ctx.run(`const e = new TextEncoder();
        return [e.encoding, Array.from(e.encode()), Array.from(e.encode(undefined)), Object.prototype.toString.call(e)];`),
    ).toEqual(["utf-8", [], [], "[object TextEncoder]"]);
  });
});

describe("TextDecoder", () => {
  const decodeInIsolate = `${CATCHING}
    return $0.map(([label, bytes, fatal, ignoreBOM]) => catching(() =>
      new TextDecoder(label, { fatal, ignoreBOM }).decode(new Uint8Array(bytes))));`;

  it("decodes UTF-8 like Node, with fatal and ignoreBOM", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(utf8ishBytes, fc.boolean(), fc.boolean()), { maxLength: 20 }),
        (cases) => {
          const inputs = cases.map(([b, fatal, ignoreBOM]) => ["utf-8", [...b], fatal, ignoreBOM]);
          const got = ctx.run(decodeInIsolate, inputs);
          const expected = cases.map(([b, fatal, ignoreBOM]) =>
            catching(() => new TextDecoder("utf-8", { fatal, ignoreBOM }).decode(b)),
          );
          expect(got).toEqual(expected);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("decodes UTF-16LE, UTF-16BE and windows-1252 like Node", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            fc.constantFrom("utf-16le", "utf-16be", "latin1", "ascii", "windows-1252", "utf-16"),
            fc.oneof(
              fc.uint8Array({ maxLength: 40 }),
              fc.string({ unit: "binary", maxLength: 10 }).map((s) => {
                const b = new Uint8Array(s.length * 2);
                for (let i = 0; i < s.length; i++) {
                  b[2 * i] = s.charCodeAt(i) & 0xff;
                  b[2 * i + 1] = s.charCodeAt(i) >> 8;
                }
                return b;
              }),
            ),
            fc.boolean(),
            fc.boolean(),
          ),
          { maxLength: 10 },
        ),
        (rawCases) => {
          // Node decodes windows-1252 bytes 0x80-0x9F as C1 controls (ISO-8859-1); the
          // Encoding Standard (and browsers) map them to € ‚ ƒ …, checked separately below.
          // Node also drops a leading 0xFF there when ignoreBOM is set (windows-1252 has no BOM).
          const cases = rawCases.map(([label, b, fatal, ignoreBOM]) =>
            label.startsWith("utf")
              ? ([label, b, fatal, ignoreBOM] as const)
              : ([
                  label,
                  b.map((x) => (x >= 0x80 && x <= 0x9f ? x - 0x40 : x)),
                  fatal,
                  false,
                ] as const),
          );
          const inputs = cases.map(([label, b, fatal, ignoreBOM]) => [
            label,
            [...b],
            fatal,
            ignoreBOM,
          ]);
          const got = ctx.run(decodeInIsolate, inputs);
          const expected = cases.map(([label, b, fatal, ignoreBOM]) =>
            catching(() => new TextDecoder(label, { fatal, ignoreBOM }).decode(b)),
          );
          expect(got).toEqual(expected);
        },
      ),
      { numRuns: 100 },
    );
  });

  it("maps windows-1252 bytes 0x80-0x9F as the Encoding Standard says", () => {
    expect(
      ctx.run(
        `return new TextDecoder("latin1").decode(new Uint8Array([0x80, 0x81, 0x8a, 0x9f, 0xa0, 0xff]));`,
      ),
    ).toBe("\u20ac\u0081\u0160\u0178\u00a0\u00ff");
  });

  it("streams: any split of the input decodes like Node's streaming decoder", () => {
    fc.assert(
      fc.property(
        utf8ishBytes,
        fc.array(fc.nat(), { maxLength: 5 }),
        fc.boolean(),
        fc.constantFrom("utf-8", "utf-16le"),
        (bytes, cutsRaw, ignoreBOM, label) => {
          const cuts = [...new Set(cutsRaw.map((c) => c % (bytes.length + 1)))].sort(
            (a, b) => a - b,
          );
          const chunks: number[][] = [];
          let last = 0;
          for (const c of [...cuts, bytes.length]) {
            chunks.push([...bytes.subarray(last, c)]);
            last = c;
          }
          const got = ctx.run<string>(
            `const d = new TextDecoder($2, { ignoreBOM: $1 });
             let out = "";
             for (const c of $0) out += d.decode(new Uint8Array(c), { stream: true });
             out += d.decode();
             // Reusable after the stream ends.
             out += "|" + d.decode(new Uint8Array($0.flat()));
             return out;`,
            chunks,
            ignoreBOM,
            label,
          );
          const d = new TextDecoder(label, { ignoreBOM });
          let expected = "";
          for (const c of chunks) expected += d.decode(new Uint8Array(c), { stream: true });
          expected += d.decode();
          expected += `|${d.decode(new Uint8Array(chunks.flat()))}`;
          expect(got).toBe(expected);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("round-trips large strings", () => {
    const got = ctx.run<boolean>(`
      let s = "";
      for (let i = 0; i < 100000; i++) s += String.fromCodePoint((i * 7919) % 0x10ffff);
      const w = s.toWellFormed();
      return new TextDecoder().decode(new TextEncoder().encode(w)) === w;`);
    expect(got).toBe(true);
  });

  it("accepts every BufferSource and reports encoding labels like Node", () => {
    expect(
      ctx.run(`const d = new TextDecoder();
        const b = new TextEncoder().encode("héllo");
        return [d.decode(b.buffer), d.decode(new DataView(b.buffer)), d.decode(b.subarray(1, 3)),
          new TextDecoder(" UTF8 ").encoding, new TextDecoder("latin1").encoding,
          new TextDecoder("utf-16").encoding, d.fatal, d.ignoreBOM];`),
    ).toEqual([
      "héllo",
      "héllo",
      "é",
      new TextDecoder(" UTF8 ").encoding,
      new TextDecoder("latin1").encoding,
      new TextDecoder("utf-16").encoding,
      false,
      false,
    ]);
    const got = ctx.run(`${CATCHING} return [catching(() => new TextDecoder("nope")),
      catching(() => new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array([0xff]))),
      catching(() => new TextDecoder().decode("str"))];`);
    expect(got).toMatchObject([
      catching(() => new TextDecoder("nope")),
      catching(() => new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array([0xff]))),
      { error: { ctor: "TypeError" } },
    ]);
  });
});
