import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  base32Decode,
  base32Encode,
  decodeDocumentId,
  isDocumentId,
  newDocumentId,
} from "./ids.js";

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";

describe("document IDs", () => {
  it("encode the table number and creation time, URL-safe", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2 ** 32 - 1 }),
        fc.integer({ min: 0, max: 2 ** 46 }),
        (table, ms) => {
          const id = newDocumentId(table, ms);
          expect(id).toMatch(/^[0-9a-hjkmnp-tv-z]+$/);
          expect(encodeURIComponent(id)).toBe(id);
          expect(decodeDocumentId(id)).toEqual({ tableNumber: table, createdMs: ms });
        },
      ),
    );
    expect(newDocumentId(5)).toHaveLength(31);
    expect(newDocumentId(10001)).toHaveLength(32);
  });

  it("are unique", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 100_000; i++) seen.add(newDocumentId(10001, 1_700_000_000_000));
    expect(seen.size).toBe(100_000);
  });

  it("sort by creation time within a table", () => {
    const a = newDocumentId(10001, 1_700_000_000_000);
    const b = newDocumentId(10001, 1_700_000_000_001);
    expect(a < b).toBe(true);
  });

  it("reject every single mistyped character", () => {
    for (let n = 0; n < 100; n++) {
      const id = newDocumentId(n % 2 ? 7 : 10_000 + n);
      for (let i = 0; i < id.length; i++) {
        for (const c of ALPHABET) {
          if (c === id[i]) continue;
          const forged = id.slice(0, i) + c + id.slice(i + 1);
          expect(isDocumentId(forged), forged).toBe(false);
        }
      }
    }
  });

  it("reject malformed strings with a clear error", () => {
    const id = newDocumentId(10001);
    expect(() => decodeDocumentId("abc")).toThrow(/Invalid ID "abc": wrong length 3/);
    expect(() => decodeDocumentId(`${id.slice(0, -1)}U`)).toThrow(/not canonical base32/);
    expect(() => decodeDocumentId(`${id}0`)).toThrow(/Invalid ID/);
    expect(() => decodeDocumentId(id.slice(0, -1))).toThrow(/Invalid ID/);
    expect(() => decodeDocumentId("0".repeat(32))).toThrow(/Invalid ID/);
    expect(() => decodeDocumentId(42 as never)).toThrow(/must be a string/);
    fc.assert(
      fc.property(fc.string({ minLength: 31, maxLength: 37 }), (s) => {
        expect(isDocumentId(s)).toBe(false);
      }),
    );
  });

  it("base32 round-trips and refuses non-canonical text", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), (bytes) => {
        const text = base32Encode(bytes);
        expect(base32Decode(text)).toEqual(bytes);
      }),
    );
    expect(base32Decode("01")).toBeNull(); // non-zero padding bits
    expect(base32Decode("000")).toBeNull(); // a character too many
  });
});
