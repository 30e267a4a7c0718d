/** `Range` headers of file downloads: any header, any size, a sane answer. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parseRange } from "../../src/server/storage.js";

describe("parseRange", () => {
  it("answers any header with null, unsatisfiable, or a range inside the file", () => {
    const digits = fc.oneof(
      fc.constant(""),
      fc.nat().map(String),
      fc.string({ unit: fc.constantFrom(..."0123456789"), maxLength: 30 }),
    );
    const header = fc.oneof(
      fc
        .tuple(digits, digits, fc.constantFrom("bytes=", "BYTES =", " bytes= ", "items="))
        .map(([a, b, unit]) => `${unit}${a}-${b}`),
      fc.string(),
    );
    fc.assert(
      fc.property(header, fc.nat(1_000_000), (h, size) => {
        const r = parseRange(h, size);
        if (r === null || r === "unsatisfiable") return;
        expect(Number.isSafeInteger(r.start) && Number.isSafeInteger(r.end)).toBe(true);
        expect(0 <= r.start && r.start <= r.end && r.end < size).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it("reads the three forms and refuses what lies outside the file", () => {
    expect(parseRange("bytes=0-9", 100)).toEqual({ start: 0, end: 9 });
    expect(parseRange("bytes=90-", 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange("bytes=-10", 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange("bytes=-1000", 100)).toEqual({ start: 0, end: 99 });
    expect(parseRange("bytes=100-", 100)).toBe("unsatisfiable");
    expect(parseRange("bytes=-0", 100)).toBe("unsatisfiable");
    expect(parseRange("bytes=5-1", 100)).toBeNull();
    expect(parseRange("bytes=0-1,5-6", 100)).toBeNull();
  });
});
