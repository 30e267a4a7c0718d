/**
 * The prelude installs most globals lazily (see globals.ts): an accessor whose
 * first read evaluates the implementation and replaces itself with the data
 * property a Web IDL global is. These tests check that the laziness is not
 * observable beyond the accessors themselves: reads, assignments, deletions,
 * globals reached first through another global's implementation, class
 * identities, the order of the global object's properties.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type PreludeContext, type PreludeIsolate, preludeIsolate } from "./harness.js";

/** The lazily installed globals, in the order of the global object's properties. */
const LAZY = [
  "console",
  "TextEncoder",
  "TextDecoder",
  "atob",
  "btoa",
  "structuredClone",
  "DOMException",
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
  "ReadableStream",
  "ReadableStreamDefaultReader",
  "ReadableStreamBYOBReader",
  "ReadableStreamBYOBRequest",
  "ReadableByteStreamController",
  "ReadableStreamDefaultController",
  "TransformStream",
  "TransformStreamDefaultController",
  "WritableStream",
  "WritableStreamDefaultWriter",
  "WritableStreamDefaultController",
  "ByteLengthQueuingStrategy",
  "CountQueuingStrategy",
  "TextEncoderStream",
  "TextDecoderStream",
  "reportError",
  "performance",
  "Performance",
  "URL",
  "URLSearchParams",
];

/** Installed as data properties right away (small, or needed by the determinism and mode rules). */
const EAGER = [
  "Date",
  "fetch",
  "setTimeout",
  "setInterval",
  "clearTimeout",
  "clearInterval",
  "queueMicrotask",
];

/** The prelude's globals in the order the global object lists them (console is V8's own property). */
const ORDER = [
  "Date",
  "console",
  "TextEncoder",
  "TextDecoder",
  "atob",
  "btoa",
  "structuredClone",
  "DOMException",
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
  "ReadableStream",
  "ReadableStreamDefaultReader",
  "ReadableStreamBYOBReader",
  "ReadableStreamBYOBRequest",
  "ReadableByteStreamController",
  "ReadableStreamDefaultController",
  "TransformStream",
  "TransformStreamDefaultController",
  "WritableStream",
  "WritableStreamDefaultWriter",
  "WritableStreamDefaultController",
  "ByteLengthQueuingStrategy",
  "CountQueuingStrategy",
  "TextEncoderStream",
  "TextDecoderStream",
  "fetch",
  "setTimeout",
  "setInterval",
  "clearTimeout",
  "clearInterval",
  "queueMicrotask",
  "reportError",
  "performance",
  "Performance",
  "URL",
  "URLSearchParams",
  "__tessera_env",
];

interface Descriptor {
  kind: "accessor" | "data";
  type: string;
  writable?: boolean;
  enumerable: boolean;
  configurable: boolean;
}

const DESCRIBE = `
  function describe(name) {
    const d = Object.getOwnPropertyDescriptor(globalThis, name);
    if (d === undefined) return null;
    return "value" in d
      ? { kind: "data", type: typeof d.value, writable: d.writable, enumerable: d.enumerable, configurable: d.configurable }
      : { kind: "accessor", type: typeof d.get + "/" + typeof d.set, enumerable: d.enumerable, configurable: d.configurable };
  }
`;

const WEB_IDL_DATA = { kind: "data", writable: true, enumerable: false, configurable: true };

let iso: PreludeIsolate;
beforeAll(async () => {
  iso = await preludeIsolate();
});
afterAll(() => iso.dispose());

/** Runs `body` in a fresh context (the prelude just evaluated there). */
async function fresh<T>(body: string, ...args: unknown[]): Promise<T> {
  const c: PreludeContext = await iso.newContext();
  try {
    return await c.runAsync<T>(body, ...args);
  } finally {
    c.release();
  }
}

describe("lazy globals", () => {
  it("are accessors until first read; the rest are data properties", async () => {
    const got = await fresh<Record<string, Descriptor | null>>(
      `${DESCRIBE} return Object.fromEntries([...$0, ...$1].map((n) => [n, describe(n)]));`,
      LAZY,
      EAGER,
    );
    for (const name of LAZY) {
      expect(got[name], name).toEqual({
        kind: "accessor",
        type: "function/function",
        enumerable: false,
        configurable: true,
      });
    }
    for (const name of EAGER) {
      expect(got[name], name).toEqual({ ...WEB_IDL_DATA, type: "function" });
    }
  });

  it("keep the order of the global object's properties, and none is enumerable", async () => {
    const [names, keys] = await fresh<[string[], string[]]>(
      `return [Object.getOwnPropertyNames(globalThis).filter((n) => $0.includes(n)), Object.keys(globalThis)];`,
      ORDER,
    );
    expect(names).toEqual(ORDER);
    expect(keys).toEqual([]);
    // Reading every global changes neither.
    const after = await fresh<string[]>(
      `for (const n of $0) globalThis[n];
       return Object.getOwnPropertyNames(globalThis).filter((n) => $0.includes(n));`,
      ORDER,
    );
    expect(after).toEqual(ORDER);
  });

  it.each(LAZY)(
    "%s: typeof and `in` work before the first read, which leaves a data property",
    async (name) => {
      const got = await fresh<unknown[]>(
        `${DESCRIBE}
       const name = $0;
       const before = [typeof globalThis[name] === "undefined" ? "missing" : "present", name in globalThis];
       const first = globalThis[name];
       const d = describe(name);
       const same = globalThis[name] === first && Object.getOwnPropertyDescriptor(globalThis, name).value === first;
       const fnName = typeof first === "function" ? first.name : null;
       return [before, typeof first, d, same, fnName];`,
        name,
      );
      const type =
        name === "console" || name === "crypto" || name === "performance" ? "object" : "function";
      expect(got).toEqual([
        ["present", true],
        type,
        { ...WEB_IDL_DATA, type },
        true,
        type === "function" ? name : null,
      ]);
    },
  );

  it("globals of one module become data properties together", async () => {
    const got = await fresh<Record<string, Descriptor>>(
      `${DESCRIBE} Request; return Object.fromEntries(["Headers", "Response", "FormData", "Blob"].map((n) => [n, describe(n)]));`,
    );
    expect(got.Headers?.kind).toBe("data");
    expect(got.Response?.kind).toBe("data");
    expect(got.FormData?.kind).toBe("data");
    // Blob is another module (fetch.ts uses it without reading the global).
    expect(got.Blob?.kind).toBe("accessor");
  });

  it("class identities hold whichever global is read first", async () => {
    expect(
      await fresh(`return [
        new URL("x:/").constructor === URL,
        new URLSearchParams("a=1").constructor === URLSearchParams,
        new TextEncoder().constructor === TextEncoder,
        new Headers().constructor === Headers,
        new Blob([]).constructor === Blob,
        new File([], "f").constructor === File && new File([], "f") instanceof Blob,
        new CustomEvent("x") instanceof Event,
        new AbortController().signal instanceof AbortSignal,
        crypto instanceof Crypto && crypto.subtle instanceof SubtleCrypto,
        performance instanceof Performance,
        new DOMException("m") instanceof DOMException,
        new ReadableStream().constructor === ReadableStream,
        new ReadableStream().getReader() instanceof ReadableStreamDefaultReader,
        new TransformStream().writable instanceof WritableStream,
      ];`),
    ).toEqual(Array(14).fill(true));
  });
});

describe("a global reached first through another global's implementation", () => {
  it("Blob, from Response#blob()", async () => {
    expect(
      await fresh(`const b = await new Response("hi").blob();
        return [b.constructor.name, Object.prototype.toString.call(b), b instanceof Blob, b.constructor === Blob, await b.text()];`),
    ).toEqual(["Blob", "[object Blob]", true, true, "hi"]);
  });

  it("ReadableStream, from Response#body and Blob#stream()", async () => {
    expect(
      await fresh(`const s = new Response("hi").body;
        const name = s.constructor.name;
        const b = new Blob(["x"]).stream();
        return [name, Object.prototype.toString.call(s), s instanceof ReadableStream, b.constructor === ReadableStream,
          typeof Object.getOwnPropertyDescriptor(globalThis, "WritableStream").value];`),
    ).toEqual(["ReadableStream", "[object ReadableStream]", true, true, "function"]);
  });

  it("AbortSignal, from a Request", async () => {
    expect(
      await fresh(`const s = new Request("https://a.example/").signal;
        const name = s.constructor.name;
        return [name, s instanceof AbortSignal, s instanceof EventTarget, Object.prototype.toString.call(s)];`),
    ).toEqual(["AbortSignal", true, true, "[object AbortSignal]"]);
  });

  it("DOMException, from atob's error", async () => {
    expect(
      await fresh(`try { atob("*"); } catch (e) {
          return [e.constructor.name, e.name, e.code, e instanceof DOMException, e.constructor === DOMException];
        }`),
    ).toEqual(["DOMException", "InvalidCharacterError", 5, true, true]);
  });

  it("URL, from a Request; URLSearchParams, from a URL", async () => {
    expect(
      await fresh(`const url = new Request("https://a.example/x/../y").url;
        const params = new URL("https://a.example/?q=1").searchParams;
        return [url, params instanceof URLSearchParams, new Response(params).headers.get("content-type")];`),
    ).toEqual(["https://a.example/y", true, "application/x-www-form-urlencoded;charset=UTF-8"]);
  });

  it("Response bodies do not load whatwg-url just to rule out URLSearchParams", async () => {
    expect(
      await fresh(`const type = new Response({}).headers.get("content-type");
        return [type, typeof Object.getOwnPropertyDescriptor(globalThis, "URLSearchParams").get];`),
    ).toEqual(["text/plain;charset=UTF-8", "function"]);
  });

  it("console, from an exception in an event listener or a microtask", async () => {
    const logs = await fresh<{ level: string; message: string }[]>(`
      const t = new EventTarget();
      t.addEventListener("x", () => { throw new Error("in listener"); });
      t.dispatchEvent(new Event("x"));
      queueMicrotask(() => { throw new TypeError("in microtask"); });
      await null;
      await null;
      return __tessera_env.takeLogs().map(({ level, message }) => ({ level, message: message.split("\\n")[0] }));`);
    expect(logs).toEqual([
      { level: "ERROR", message: "Uncaught Error: in listener" },
      { level: "ERROR", message: "Uncaught TypeError: in microtask" },
    ]);
  });

  it("structuredClone with Blobs, in either order", async () => {
    const expected = [true, "ab", "x/y"];
    expect(
      await fresh(`const b = structuredClone(new Blob(["ab"], { type: "x/y" }));
        return [b instanceof Blob, await b.text(), b.type];`),
    ).toEqual(expected);
    expect(
      await fresh(`const blob = new Blob(["ab"], { type: "x/y" });
        const b = structuredClone(blob);
        return [b instanceof Blob, await b.text(), b.type];`),
    ).toEqual(expected);
    expect(
      await fresh(`const b = await new Response(new Blob(["q"], { type: "a/b" })).blob();
        return [b.type, await b.text()];`),
    ).toEqual(["a/b", "q"]);
  });

  it("structuredClone refuses platform objects whose global was never read", async () => {
    const got = await fresh<string[]>(`
      const values = [
        () => new Request("https://a.example/").signal,
        () => new Request("https://a.example/").headers,
        () => new URL("https://a.example/").searchParams,
        () => performance,
        () => crypto.subtle,
      ];
      return values.map((f) => { try { structuredClone(f()); return "cloned"; } catch (e) { return e.name + ": " + e.message; } });`);
    expect(got).toEqual([
      "DataCloneError: #<EventTarget> could not be cloned.",
      "DataCloneError: #<Headers> could not be cloned.",
      "DataCloneError: #<URLSearchParams> could not be cloned.",
      "DataCloneError: #<Performance> could not be cloned.",
      "DataCloneError: #<SubtleCrypto> could not be cloned.",
    ]);
  });
});

describe("user code replacing globals, as on the Web platform", () => {
  it("assignment before or after the first read", async () => {
    const got = await fresh(`${DESCRIBE}
      const X = { x: 1 };
      globalThis.URL = X;
      const before = [URL === X, describe("URL")];
      TextEncoder;
      globalThis.TextEncoder = X;
      return [...before, TextEncoder === X, describe("TextEncoder")];`);
    expect(got).toEqual([
      true,
      { ...WEB_IDL_DATA, type: "object" },
      true,
      { ...WEB_IDL_DATA, type: "object" },
    ]);
  });

  it("assignment by name in strict code", async () => {
    expect(
      await fresh(`"use strict"; TextDecoder = 4; atob = 5;
        return [TextDecoder, atob, Object.getOwnPropertyDescriptor(globalThis, "atob").enumerable];`),
    ).toEqual([4, 5, false]);
  });

  it("deletion", async () => {
    expect(
      await fresh(
        `delete globalThis.TextEncoder; return [typeof TextEncoder, "TextEncoder" in globalThis];`,
      ),
    ).toEqual(["undefined", false]);
  });

  it("Object.defineProperty", async () => {
    expect(
      await fresh(`Object.defineProperty(globalThis, "Blob", { value: 7, writable: true });
        return [Blob, Object.getOwnPropertyDescriptor(globalThis, "Blob").writable];`),
    ).toEqual([7, true]);
  });

  it("assignment on an object inheriting from globalThis creates its own property", async () => {
    expect(
      await fresh(`const o = Object.create(globalThis);
        o.TextEncoder = 1;
        const d = Object.getOwnPropertyDescriptor(o, "TextEncoder");
        return [o.TextEncoder, d.enumerable, d.writable, typeof TextEncoder];`),
    ).toEqual([1, true, true, "function"]);
  });

  it("implementations keep using their own classes", async () => {
    expect(
      await fresh(`globalThis.DOMException = 1;
        globalThis.Blob = null;
        let name;
        try { atob("*"); } catch (e) { name = e.constructor.name; }
        const b = await new Response("xy").blob();
        return [name, b.size, Object.prototype.toString.call(b)];`),
    ).toEqual(["DOMException", 2, "[object Blob]"]);
  });

  it("a getter kept by user code does not undo a later assignment", async () => {
    expect(
      await fresh(`const get = Object.getOwnPropertyDescriptor(globalThis, "Headers").get;
        globalThis.Headers = 3;
        return [typeof get(), Headers];`),
    ).toEqual(["function", 3]);
  });

  it("globals can still be read after the global object is frozen", async () => {
    expect(
      await fresh(`Object.freeze(globalThis);
        let assigned;
        try { globalThis.URL = 1; assigned = "assigned"; } catch (e) { assigned = e.constructor.name; }
        return [new URL("https://a.example/b").href, typeof TextEncoder, assigned];`),
    ).toEqual(["https://a.example/b", "function", "TypeError"]);
  });
});

describe("implementations evaluated after user code ran", () => {
  it("use the builtins as they were before any user code", async () => {
    const logs = await fresh<string[]>(`
      Map.prototype.entries = function () { return [][Symbol.iterator](); };
      globalThis.Foo = class Foo { toString() { return "custom"; } };
      console.log(new Map([[1, 2]]));
      console.log("%s", new Foo());
      return __tessera_env.takeLogs().map((l) => l.message);`);
    expect(logs).toEqual(["Map(1) { 1 => 2 }", "custom"]);
  });

  it("DOMException extends the original Error", async () => {
    expect(
      await fresh(`const OriginalError = Error;
        globalThis.Error = class NotError {};
        const e = new DOMException("m", "AbortError");
        return [e instanceof OriginalError, Object.getPrototypeOf(DOMException) === OriginalError, String(e)];`),
    ).toEqual([true, true, "AbortError: m"]);
  });

  it("structuredClone recreates errors and typed arrays with the original constructors", async () => {
    expect(
      await fresh(`globalThis.TypeError = class NotTypeError {};
        const I8 = Int8Array;
        globalThis.Int8Array = Array;
        const e = structuredClone(new RangeError("r"));
        return [e.constructor.name, e instanceof Error, structuredClone(new I8([1, 2])).constructor.name];`),
    ).toEqual(["RangeError", true, "Int8Array"]);
  });
});
