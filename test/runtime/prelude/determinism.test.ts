import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CATCHING, type PreludeIsolate, preludeIsolate } from "./harness.js";

let iso: PreludeIsolate;
beforeAll(async () => {
  iso = await preludeIsolate();
});
afterAll(() => iso.dispose());

const SAMPLE = `return {
  random: [Math.random(), Math.random(), Math.random()],
  bytes: Array.from(crypto.getRandomValues(new Uint8Array(8))),
  uuid: crypto.randomUUID(),
};`;

describe("seeded randomness", () => {
  it("is reproducible per seed and differs between seeds", async () => {
    const a = await iso.newContext();
    const b = await iso.newContext();
    try {
      const begin = (c: typeof a, seed: string) =>
        c.run(`__tessera_env.begin({ mode: "query", seed: $0, nowMs: 1 })`, seed);
      begin(a, "seed-aaaaaaaaaaaaaaaa");
      begin(b, "seed-aaaaaaaaaaaaaaaa");
      const first = a.run(SAMPLE);
      expect(b.run(SAMPLE)).toEqual(first);
      // Re-beginning with the same seed replays the same sequence.
      begin(a, "seed-aaaaaaaaaaaaaaaa");
      expect(a.run(SAMPLE)).toEqual(first);
      begin(a, "seed-aaaaaaaaaaaaaaab");
      expect(a.run(SAMPLE)).not.toEqual(first);
    } finally {
      a.release();
      b.release();
    }
  });

  it("starts in import mode with the fixed import seed and time 0", async () => {
    const a = await iso.newContext();
    const b = await iso.newContext();
    try {
      const probe = `return [__tessera_env.mode, Date.now(), new Date().getTime(), Math.random()];`;
      const fromA = a.run<unknown[]>(probe);
      expect(fromA.slice(0, 3)).toEqual(["import", 0, 0]);
      expect(b.run(probe)).toEqual(fromA);
      a.run(`__tessera_env.begin({ mode: "import", seed: "tessera-import-seed", nowMs: 0 })`);
      expect(a.run(probe)).toEqual(fromA);
    } finally {
      a.release();
      b.release();
    }
  });

  it("Math.random has V8's range and 53-bit resolution", async () => {
    const c = await iso.newContext();
    const values = c.run<number[]>(`return Array.from({ length: 20000 }, () => Math.random());`);
    c.release();
    expect(Math.min(...values)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...values)).toBeLessThan(1);
    const mean = values.reduce((s, v) => s + v, 0) / values.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.01);
    expect(values.some((v) => v * 2 ** 53 !== Math.floor(v * 2 ** 32) * 2 ** 21)).toBe(true);
  });

  it("validates begin() options", async () => {
    const c = await iso.newContext();
    const got = c.run(`${CATCHING} return [
      catching(() => __tessera_env.begin({ mode: "query", seed: "short", nowMs: 1 })).error?.ctor,
      catching(() => __tessera_env.begin({ mode: "other", seed: "x".repeat(16), nowMs: 1 })).error?.ctor,
      catching(() => __tessera_env.begin({ mode: "query", seed: "x".repeat(16), nowMs: NaN })).error?.ctor,
      catching(() => __tessera_env.begin()).error?.ctor,
      catching(() => __tessera_env.begin({ mode: "action", seed: "x".repeat(16), nowMs: 5 })).ok,
      __tessera_env.mode];`);
    c.release();
    expect(got).toEqual(["TypeError", "TypeError", "TypeError", "TypeError", undefined, "action"]);
  });
});

describe("frozen time", () => {
  it("Date.now, new Date(), Date(), performance and Intl read the execution's time", async () => {
    const c = await iso.newContext();
    const now = Date.UTC(2024, 4, 17, 12, 30, 15, 250);
    c.run(
      `__tessera_env.begin({ mode: "mutation", seed: "time-seed-0123456789", nowMs: $0 })`,
      now,
    );
    const got = c.run<unknown[]>(`
      let spin = 0; for (let i = 0; i < 1e6; i++) spin += i;
      class Sub extends Date {}
      return [Date.now(), new Date().getTime(), Date(), new Date(5).getTime(), new Date(2020, 0, 1).getFullYear(),
        new Sub().getTime(), new Sub() instanceof Date, new Date() instanceof Date, Date.prototype.constructor === Date,
        Date.name, Date.length, typeof Date.parse, Date.UTC(2000, 0), performance.now(), performance.timeOrigin,
        new Intl.DateTimeFormat("en-US", { timeZone: "UTC" }).format(),
        new Intl.DateTimeFormat("en-US", { timeZone: "UTC", year: "numeric" }).formatToParts()[0].value,
        Object.prototype.toString.call(new Date()), spin > 0];`);
    c.release();
    expect(got).toEqual([
      now,
      now,
      new Date(now).toString(),
      5,
      2020,
      now,
      true,
      true,
      true,
      "Date",
      7,
      "function",
      Date.UTC(2000, 0),
      0,
      now,
      "5/17/2024",
      "2024",
      "[object Date]",
      true,
    ]);
  });
});

describe("side effects in queries and mutations", () => {
  const names = ["fetch", "setTimeout", "setInterval", "clearTimeout", "clearInterval"];

  it("fetch and timers throw in import, query and mutation modes, and exist in actions", async () => {
    const c = await iso.newContext();
    for (const mode of ["import", "query", "mutation"]) {
      c.run(`__tessera_env.begin({ mode: $0, seed: "mode-seed-0123456789", nowMs: 0 })`, mode);
      const got = c.run<string[]>(
        `${CATCHING} return $0.map((n) => catching(() => globalThis[n](() => {}, 0)).error.message);`,
        names,
      );
      expect(got).toEqual(
        names.map(
          (n) => `Can't use ${n} in queries and mutations. Please consider using an action.`,
        ),
      );
    }
    c.run(`__tessera_env.begin({ mode: "action", seed: "mode-seed-0123456789", nowMs: 0 })`);
    // (Without the bootstrap the host calls behind them fail; they are exercised end to end.)
    expect(
      c.run(
        `const id = setTimeout(() => {}, 10); clearTimeout(id); const j = setInterval(() => {}, 10); clearInterval(j); return [typeof id, typeof j, id !== j];`,
      ),
    ).toEqual(["number", "number", true]);
    c.run(`__tessera_env.begin({ mode: "query", seed: "mode-seed-0123456789", nowMs: 0 })`);
    expect(c.run(`${CATCHING} return catching(() => AbortSignal.timeout(10)).error.message`)).toBe(
      "Can't use AbortSignal.timeout in queries and mutations. Please consider using an action.",
    );
    c.release();
  });

  it("queueMicrotask works in every mode", async () => {
    const c = await iso.newContext();
    c.run(`__tessera_env.begin({ mode: "query", seed: "mode-seed-0123456789", nowMs: 0 })`);
    const got = await c.runAsync(`
      const order = [];
      queueMicrotask(() => order.push(2));
      order.push(1);
      await null;
      await null;
      return order;`);
    c.release();
    expect(got).toEqual([1, 2]);
  });
});

describe("globals", () => {
  it("has no Node globals but process.env, and leaves eval and Function alone", async () => {
    const c = await iso.newContext();
    const got =
      c.run(`return [Object.keys(process).join(), typeof require, typeof module, typeof exports, typeof Buffer,
      typeof setImmediate, typeof global, eval("1 + 1"), new Function("a", "return a * 2")(21),
      eval === globalThis.eval, Function.prototype.toString.call(eval).includes("[native code]")];`);
    c.release();
    expect(got).toEqual([
      "env",
      "undefined",
      "undefined",
      "undefined",
      "undefined",
      "undefined",
      "undefined",
      2,
      42,
      true,
      true,
    ]);
  });

  it("installs every Web global as a non-enumerable property", async () => {
    const c = await iso.newContext();
    const expected = [
      "TextEncoder",
      "TextDecoder",
      "URL",
      "URLSearchParams",
      "atob",
      "btoa",
      "structuredClone",
      "DOMException",
      "console",
      "crypto",
      "Crypto",
      "SubtleCrypto",
      "Blob",
      "File",
      "Headers",
      "Request",
      "Response",
      "FormData",
      "Event",
      "EventTarget",
      "CustomEvent",
      "AbortController",
      "AbortSignal",
      "fetch",
      "setTimeout",
      "setInterval",
      "clearTimeout",
      "clearInterval",
      "queueMicrotask",
      "reportError",
      "performance",
      "Performance",
    ];
    const got = c.run<{
      missing: string[];
      enumerable: string[];
      names: Record<string, string>;
      keys: string[];
    }>(
      `const missing = $0.filter((n) => !(n in globalThis));
       const enumerable = $0.filter((n) => Object.getOwnPropertyDescriptor(globalThis, n)?.enumerable);
       const names = {};
       for (const n of $0) if (typeof globalThis[n] === "function") names[n] = globalThis[n].name;
       const env = Object.getOwnPropertyDescriptor(globalThis, "__tessera_env");
       return { missing, enumerable, names, keys: Object.keys(globalThis), env: [env.enumerable, env.writable, env.configurable, Object.isFrozen(env.value)] };`,
      expected,
    );
    c.release();
    expect(got.missing).toEqual([]);
    expect(got.enumerable).toEqual([]);
    expect(got.keys).toEqual([]);
    for (const [n, name] of Object.entries(got.names)) expect(name).toBe(n);
    // Configurable: the bootstrap takes it and deletes the global before user code runs.
    expect((got as unknown as { env: boolean[] }).env).toEqual([false, false, true, true]);
  });

  it("keeps fresh contexts independent", async () => {
    const a = await iso.newContext();
    a.run(`globalThis.leak = 1; console.log("in a");`);
    const b = await iso.newContext();
    expect(b.run(`return [typeof leak, __tessera_env.takeLogs().length]`)).toEqual([
      "undefined",
      0,
    ]);
    a.release();
    b.release();
  });
});
