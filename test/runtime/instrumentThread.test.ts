import { join } from "node:path";
import { describe, expect, it, vi } from "vitest";
import { bundleConvexDir } from "../../src/runtime/bundler.js";
import {
  instrumentationStats,
  instrumentOffThread,
  stopInstrumentThread,
} from "../../src/runtime/instrumentThread.js";
import { instrumentLinked } from "../../src/runtime/instrumentWorker.js";
import { linkModules } from "../../src/runtime/loader.js";

/** The shape the linker gives a script: an IIFE defining the app's modules, last. */
const LINKED = [
  '"use strict";',
  "(() => {",
  "  let count = 0;",
  "  const bump = () => { count += 1; return count; };",
  "  Object.defineProperty(globalThis, '__tessera_app', { value: { modules: { 'a.js': { bump } } }, enumerable: false });",
  "})();",
  "",
].join("\n");
const LINKED_MAP = JSON.stringify({
  version: 3,
  sources: ["convex/a.ts"],
  names: [],
  mappings: "AAAA;AACA;AACA;AACA;AACA;AACA",
});

describe("the instrumentation thread", () => {
  it("instruments on a thread of its own, as this thread would", async () => {
    const before = instrumentationStats.offThread;
    const there = await instrumentOffThread(LINKED, LINKED_MAP);
    expect(instrumentationStats).toMatchObject({ threadFailure: null });
    expect(instrumentationStats.offThread).toBe(before + 1);
    expect(there).toEqual(instrumentLinked(LINKED, LINKED_MAP));
    // The closure's write to `count` is instrumented: the script changed.
    expect(there.code).not.toBe(LINKED);
    expect(there.sites.length).toBeGreaterThan(0);
  });

  it("gives the caller the instrumentation's error, and goes on serving", async () => {
    await expect(instrumentOffThread("let x = (", LINKED_MAP)).rejects.toThrow(/Unexpected token/);
    await expect(instrumentOffThread(LINKED, LINKED_MAP)).resolves.toMatchObject({
      reusable: true,
    });
  });

  it("serves concurrent callers each their own result", async () => {
    const other = LINKED.replace("count += 1", "count += 2");
    const [a, b] = await Promise.all([
      instrumentOffThread(LINKED, LINKED_MAP),
      instrumentOffThread(other, LINKED_MAP),
    ]);
    expect(a.code).toContain("count += 1");
    expect(b.code).toContain("count += 2");
  });

  it("does the work of a thread that stops on this one, then starts another", async () => {
    const spy = vi.spyOn(console, "error").mockImplementation(() => {});
    try {
      await instrumentOffThread(LINKED, LINKED_MAP);
      const { offThread, onThisThread } = instrumentationStats;
      // Long enough (a few hundred ms) to be in hand when the thread stops.
      const big = LINKED.replace(
        "  let count = 0;",
        `  let count = 0;\n${Array.from({ length: 5_000 }, (_, i) => `  const f${i} = () => { count += ${i}; return count; };`).join("\n")}`,
      );
      const held = instrumentOffThread(big, LINKED_MAP);
      await stopInstrumentThread();
      expect(await held).toEqual(instrumentLinked(big, LINKED_MAP));
      expect(instrumentationStats.onThisThread).toBe(onThisThread + 1);
      expect(instrumentationStats.threadFailure).toMatch(/exited/);
      await instrumentOffThread(LINKED, LINKED_MAP);
      expect(instrumentationStats.offThread).toBe(offThread + 1);
    } finally {
      spy.mockRestore();
    }
  });

  it("is where linking a pushed app instruments it", async () => {
    const before = instrumentationStats.offThread;
    const app = join(import.meta.dirname, "..", "fixtures", "app", "convex");
    const linked = await linkModules(await bundleConvexDir(app));
    expect(instrumentationStats.offThread).toBe(before + 1);
    expect(linked.script).toContain("__tessera_app");
  });
});
