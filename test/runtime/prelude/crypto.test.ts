import { createHash } from "node:crypto";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CATCHING, type PreludeContext, type PreludeIsolate, preludeIsolate } from "./harness.js";

let iso: PreludeIsolate;
let ctx: PreludeContext;
beforeAll(async () => {
  iso = await preludeIsolate();
  ctx = await iso.newContext();
});
afterAll(() => iso.dispose());

const ALGORITHMS = ["SHA-1", "SHA-256", "SHA-384", "SHA-512"] as const;

function hex(buffer: ArrayBuffer): string {
  return Buffer.from(buffer).toString("hex");
}

describe("crypto.subtle.digest", () => {
  it("matches Node's crypto.subtle.digest and createHash on random inputs", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.constantFrom(...ALGORITHMS), fc.uint8Array({ maxLength: 300 })), {
          maxLength: 12,
        }),
        async (cases) => {
          const got = await ctx.runAsync<string[]>(
            `const out = [];
             for (const [alg, bytes] of $0) {
               const d = await crypto.subtle.digest(alg, new Uint8Array(bytes));
               out.push(Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join(""));
             }
             return out;`,
            cases.map(([alg, b]) => [alg, [...b]]),
          );
          const expected = await Promise.all(
            cases.map(async ([alg, b]) => hex(await globalThis.crypto.subtle.digest(alg, b))),
          );
          expect(got).toEqual(expected);
          expect(got).toEqual(
            cases.map(([alg, b]) =>
              createHash(alg.replace("-", "").toLowerCase()).update(b).digest("hex"),
            ),
          );
        },
      ),
      { numRuns: 60 },
    );
  });

  it("accepts algorithm objects, any case, every BufferSource; hashes large inputs", async () => {
    const big = Buffer.alloc(1 << 20, 7);
    const got = await ctx.runAsync<unknown[]>(`
      const hex = (d) => Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
      const data = new TextEncoder().encode("abc");
      const big = new Uint8Array(1 << 20).fill(7);
      const results = [
        hex(await crypto.subtle.digest({ name: "sha-256" }, data)),
        hex(await crypto.subtle.digest("Sha-1", data.buffer)),
        hex(await crypto.subtle.digest("SHA-512", new DataView(data.buffer))),
        hex(await crypto.subtle.digest("SHA-256", big)),
      ];
      const d = await crypto.subtle.digest("SHA-384", data);
      results.push(d instanceof ArrayBuffer, d.byteLength);
      return results;`);
    expect(got).toEqual([
      createHash("sha256").update("abc").digest("hex"),
      createHash("sha1").update("abc").digest("hex"),
      createHash("sha512").update("abc").digest("hex"),
      createHash("sha256").update(big).digest("hex"),
      true,
      48,
    ]);
  });

  it("rejects unknown algorithms and bad data like browsers", async () => {
    const got = await ctx.runAsync(`
      const errs = [];
      for (const args of [["MD5", new Uint8Array(1)], ["SHA-256", "text"], ["SHA-256"], [{}, new Uint8Array(1)]]) {
        const p = crypto.subtle.digest(...args);
        errs.push(p instanceof Promise);
        try { await p; errs.push("resolved"); } catch (e) { errs.push(e.constructor.name + ":" + e.name); }
      }
      return errs;`);
    expect(got).toEqual([
      true,
      "DOMException:NotSupportedError",
      true,
      "TypeError:TypeError",
      true,
      "TypeError:TypeError",
      true,
      "TypeError:TypeError",
    ]);
  });

  it("throws 'not supported yet' for the other SubtleCrypto methods", () => {
    const names = [
      "encrypt",
      "decrypt",
      "sign",
      "verify",
      "generateKey",
      "deriveKey",
      "deriveBits",
      "importKey",
      "exportKey",
      "wrapKey",
      "unwrapKey",
    ];
    const got = ctx.run(
      `${CATCHING} return $0.map((n) => catching(() => crypto.subtle[n]()).error.message);`,
      names,
    );
    expect(got).toEqual(names.map((n) => `not supported yet: crypto.subtle.${n}`));
  });
});

describe("crypto random values", () => {
  it("getRandomValues fills integer arrays, returns them, and refuses others like browsers", () => {
    const got = ctx.run(`${CATCHING}
      const a = new Uint32Array(4);
      const same = crypto.getRandomValues(a) === a;
      const big = crypto.getRandomValues(new BigUint64Array(2));
      return [same, a.some((x) => x !== 0), typeof big[0],
        catching(() => crypto.getRandomValues(new Float64Array(1))).error.name,
        catching(() => crypto.getRandomValues(new DataView(new ArrayBuffer(1)))).error.name,
        catching(() => crypto.getRandomValues(new Uint8Array(65537))).error.name,
        crypto.getRandomValues(new Uint8Array(65536)).length,
        catching(() => crypto.getRandomValues()).error.ctor,
        catching(() => new Crypto()).error.ctor,
        Object.prototype.toString.call(crypto), Object.prototype.toString.call(crypto.subtle)];`);
    expect(got).toEqual([
      true,
      true,
      "bigint",
      "TypeMismatchError",
      "TypeMismatchError",
      "QuotaExceededError",
      65536,
      "TypeError",
      "TypeError",
      "[object Crypto]",
      "[object SubtleCrypto]",
    ]);
  });

  it("randomUUID returns version-4 UUIDs", () => {
    const uuids = ctx.run<string[]>(
      `return Array.from({ length: 200 }, () => crypto.randomUUID());`,
    );
    for (const u of uuids)
      expect(u).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(new Set(uuids).size).toBe(200);
  });

  it("random bytes look uniform", () => {
    const counts = ctx.run<number[]>(`
      const counts = new Array(256).fill(0);
      const buf = new Uint8Array(65536);
      for (let i = 0; i < 4; i++) { crypto.getRandomValues(buf); for (const b of buf) counts[b]++; }
      return counts;`);
    // 262144 bytes: 1024 expected per value; chi-square with 255 degrees of freedom.
    const chi = counts.reduce((sum, c) => sum + (c - 1024) ** 2 / 1024, 0);
    expect(chi).toBeLessThan(350);
  });
});
