import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import { DEADLINE_WINDOW_MS, sharedDeadline } from "../../src/runtime/execution.js";

describe("sharedDeadline", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("lengthens a timeout to the end of its window, never shortens it, by less than a window", () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0, max: 1e9, noNaN: true }),
        fc.integer({ min: 1, max: 600_000 }),
        (now, timeoutMs) => {
          vi.spyOn(performance, "now").mockReturnValue(now);
          const out = sharedDeadline(timeoutMs);
          expect(Number.isInteger(out)).toBe(true);
          expect(out).toBeGreaterThanOrEqual(timeoutMs);
          expect(out).toBeLessThan(timeoutMs + DEADLINE_WINDOW_MS + 1);
          // The deadline reaches the window's end (whole milliseconds round up past it).
          const end = Math.ceil((now + timeoutMs) / DEADLINE_WINDOW_MS) * DEADLINE_WINDOW_MS;
          expect(now + out).toBeGreaterThanOrEqual(end - 1e-6 * Math.max(1, end));
          expect(now + out).toBeLessThan(end + 1 + 1e-9 * end);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it("gives every call whose deadline falls in one window a deadline within a millisecond of the others", () => {
    const deadlines: number[] = [];
    // Deadlines (t + 999) from just after 2,000 to 2,050: one window.
    for (let t = 1001.01; t <= 1001 + DEADLINE_WINDOW_MS; t += 0.37) {
      vi.spyOn(performance, "now").mockReturnValue(t);
      deadlines.push(t + sharedDeadline(999));
    }
    expect(Math.max(...deadlines) - Math.min(...deadlines)).toBeLessThanOrEqual(1);
  });
});
