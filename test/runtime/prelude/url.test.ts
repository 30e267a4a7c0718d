import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type PreludeContext, type PreludeIsolate, preludeIsolate } from "./harness.js";

let iso: PreludeIsolate;
let ctx: PreludeContext;
beforeAll(async () => {
  iso = await preludeIsolate();
  ctx = await iso.newContext();
});
afterAll(() => iso.dispose());

/** Parses (input, base) pairs and reports every component, or the error's constructor. */
const URL_PROGRAM = `
  function program(cases) {
    return cases.map(([input, base]) => {
      try {
        const u = base === undefined ? new URL(input) : new URL(input, base);
        return [u.href, u.origin, u.protocol, u.username, u.password, u.host, u.hostname, u.port,
          u.pathname, u.search, u.hash, JSON.stringify([...u.searchParams]), u.toString() === u.href,
          URL.canParse(input, base)];
      } catch (e) {
        return ["error", e.constructor.name, URL.canParse(input, base)];
      }
    });
  }
`;
/**
 * Node 20's own `URL.canParse` answers false for valid non-ASCII input once V8 has optimized it
 * (`http://é` after ~100,000 calls: its fast path misreads Latin-1 strings), so the reference
 * uses what the standard defines it as: whether `new URL` would succeed.
 */
class ReferenceURL extends URL {
  static override canParse(input: string, base?: string): boolean {
    try {
      new URL(input, base);
      return true;
    } catch {
      return false;
    }
  }
}
const nodeUrlProgram = new Function("URL", `${URL_PROGRAM}; return program;`)(ReferenceURL) as (
  c: unknown,
) => unknown;

const CORPUS: [string, string?][] = [
  ["https://example.com"],
  ["HTTPS://EXAMPLE.COM:443/a/../b/./c?x=1&y=%20#frag"],
  ["http://user:pa ss@host:8080/p?q#h"],
  ["http://[::1]:3000/"],
  ["http://[2001:db8::1]/"],
  ["http://0x7f.1/"],
  ["http://192.168.0.257/"],
  ["http://münchen.de/straße"],
  ["http://xn--mnchen-3ya.de/"],
  ["http://☃.net/"],
  ["file:///C:/path/to/file.txt"],
  ["file://host/share"],
  ["mailto:someone@example.com"],
  ["data:text/plain,hello world"],
  ["javascript:alert(1)"],
  ["blob:https://example.com/uuid"],
  ["ws://example.com/socket"],
  ["  http://trim.me/  "],
  ["http://example.com/a\tb\nc"],
  ["http://exa mple.com/"],
  ["http://"],
  ["not a url"],
  ["/relative", "https://example.com/base/path"],
  ["../up", "https://example.com/a/b/c"],
  ["?only=query", "https://example.com/p"],
  ["#only-hash", "https://example.com/p?q"],
  ["//other.host/x", "https://example.com/"],
  ["relative", "mailto:x@y"],
  ["https://example.com/%zz%41"],
  ["https://example.com/?a=1&a=2&b=%E2%82%AC&c"],
  ["http://example.com:0/"],
  ["http://example.com:65536/"],
  ["https://example.com/path with spaces/"],
  ["https://user@/"],
  ["http://a.b.c.d.e.f.g/"],
  ["HTTP://EXAMPLE.COM/%7Efoo"],
  ["http://example.com/\\back\\slash"],
  ["non-special://host/path?q#f"],
  ["non-special:opaque path "],
];

describe("URL", () => {
  it("parses a corpus of tricky URLs like Node", () => {
    expect(ctx.run(`${URL_PROGRAM} return program($0);`, CORPUS)).toEqual(nodeUrlProgram(CORPUS));
  });

  it("parses generated URLs like Node", () => {
    // No spaces (the standard now escapes a space before ?/# in opaque paths; Node 20 does not) and
    // no astral characters (whatwg-url 15 mangles them in userinfo; see the README).
    const piece = fc.string({
      unit: fc.constantFrom(..."aZ09-._~%/?#@:[]!$&'()*+,;=\\é€".split("")),
      maxLength: 10,
    });
    // No path segment starting with one dot and more (".a"): after one that is not the first,
    // Node 20's parser leaves the "." and ".." segments that follow as they are ("http://a//.a/."
    // gives the path "//.a/.", the standard "//.a/"); see the explicit case below. Found by this
    // property (seed 116108306).
    const input = fc
      .oneof(
        fc.webUrl({ withQueryParameters: true, withFragments: true }),
        fc
          .tuple(
            fc.constantFrom("http://", "https://", "file://", "foo:", "ws://", ""),
            piece,
            piece,
          )
          .map(([a, b, c]) => a + b + c),
      )
      .filter((s) => !/(^|[/\\])\.[^./\\?#]/.test(s));
    // No opaque-path base ("about:blank"): Node 20's URL parser resolves "a" against it, which the
    // standard (whatwg-url, browsers) refuses; see the explicit case below.
    const base = fc.option(
      fc.constantFrom("https://example.com/a/b?c#d", "file:///tmp/", "http://h"),
      { nil: undefined },
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(input, base), { maxLength: 20 }), (cases) => {
        expect(ctx.run(`${URL_PROGRAM} return program($0);`, cases)).toEqual(nodeUrlProgram(cases));
      }),
      { numRuns: 150 },
    );
  });

  it("lowercases ASCII hosts without tr46 exactly as full IDNA processing would", () => {
    const label = fc.oneof(
      fc.string({ unit: fc.constantFrom(..."aZz09-_*!$~".split("")), minLength: 1, maxLength: 8 }),
      fc.constantFrom(
        "xn--mnchen-3ya",
        "XN--nda",
        "xn--",
        "xn--a",
        "0x7f",
        "256",
        "1",
        "EXAMPLE",
        "ß",
      ),
    );
    fc.assert(
      fc.property(
        fc.array(
          fc.array(label, { minLength: 1, maxLength: 4 }).map((l) => l.join(".")),
          { maxLength: 10 },
        ),
        (hosts) => {
          const cases = hosts.map((h) => [`http://${h}/`]);
          const ours = ctx.run(`${URL_PROGRAM} return program($0);`, cases) as unknown[][];
          const node = nodeUrlProgram(cases) as unknown[][];
          // Node 20's URL.canParse disagrees with its own constructor for some IDNA hosts
          // ("http://ß/" parses, yet canParse says false); the standard says they agree.
          // So the parse is compared with Node, and canParse with the parse.
          expect(ours.map((r) => r.slice(0, -1))).toEqual(node.map((r) => r.slice(0, -1)));
          for (const r of ours) expect(r[r.length - 1]).toBe(r[0] !== "error");
        },
      ),
      { numRuns: 100 },
    );
  });

  it("follows the standard where Node 20 does not", () => {
    expect(
      ctx.run(`return [URL.canParse("a#", "about:blank"), new URL("#x", "about:blank").href,
        new URLSearchParams("%aa%C3%A9=1").toString(), new URLSearchParams("%é%C3%A9").get("%éé"),
        new URL("foo: #").href, new URL("http://a//.a/.").pathname, new URL("http://a\\\\/.a/.").pathname,
        new URL("http://a/x/.a/..").pathname, new URL(".a/.", "http://h/b/").pathname];`),
    ).toEqual([
      false,
      "about:blank#x",
      "%EF%BF%BD%C3%A9=1",
      "",
      "foo:%20#",
      "//.a/",
      "//.a/",
      "/x/",
      "/b/.a/",
    ]);
  });

  it("updates components through setters like Node", () => {
    const program = `
      const u = new URL("https://user:pw@example.com:8443/a/b?x=1#top");
      u.protocol = "http"; u.username = "new user"; u.password = ""; u.hostname = "EXAMPLE.org"; u.port = "80";
      u.pathname = "/c d/é"; u.search = "?q=1 2"; u.hash = "bottom"; u.searchParams.append("z", "&");
      return [u.href, JSON.stringify(u), URL.parse("x", "https://a.example/b")?.href ?? null, URL.parse("::") ?? null];`;
    expect(ctx.run(program)).toEqual(new Function(program)());
  });
});

describe("URLSearchParams", () => {
  it("parses, mutates, sorts and serializes like Node", () => {
    const key = fc.constantFrom("a", "b", "é", "a b", "+", "=", "&", "");
    const op = fc.oneof(
      fc.tuple(fc.constant("append"), key, fc.string({ maxLength: 4 })),
      fc.tuple(fc.constant("set"), key, fc.string({ maxLength: 4 })),
      fc.tuple(fc.constant("delete"), key),
      fc.tuple(fc.constant("get"), key),
      fc.tuple(fc.constant("getAll"), key),
      fc.tuple(fc.constant("has"), key),
      fc.tuple(fc.constant("sort")),
      fc.tuple(fc.constant("toString")),
    );
    const init = fc.oneof(
      // Percent signs only in complete, valid UTF-8 escapes: Node 20 decodes invalid escape
      // sequences differently from the standard (checked separately above).
      fc
        .array(fc.constantFrom("a", "b", "=", "&", "+", "%20", "é", "?", "%C3%A9", "%2B"), {
          maxLength: 12,
        })
        .map((parts) => parts.join("")),
      fc.array(fc.tuple(key, fc.string({ maxLength: 3 })), { maxLength: 3 }),
      fc.dictionary(key, fc.string({ maxLength: 3 }), { maxKeys: 3 }),
    );
    const program = `
      function program(init, ops) {
        const p = new URLSearchParams(init);
        const out = [p.size];
        for (const [op, ...args] of ops) out.push(JSON.stringify(p[op](...args) ?? null));
        out.push(p.toString(), JSON.stringify([...p]), JSON.stringify([...p.keys()]), p.size);
        return out;
      }`;
    const nodeProgram = new Function(`${program}; return program;`)() as (
      i: unknown,
      o: unknown,
    ) => unknown;
    fc.assert(
      fc.property(init, fc.array(op, { maxLength: 10 }), (i, ops) => {
        expect(ctx.run(`${program} return program($0, $1);`, i, ops)).toEqual(nodeProgram(i, ops));
      }),
      { numRuns: 300 },
    );
  });
});

describe("lazy loading", () => {
  it("URL and URLSearchParams are accessors until first use, then data properties", async () => {
    const c = await iso.newContext();
    const got = c.run(`const before = typeof Object.getOwnPropertyDescriptor(globalThis, "URL").get;
      const href = new URL("https://a.example/").href;
      const after = Object.getOwnPropertyDescriptor(globalThis, "URL");
      const params = Object.getOwnPropertyDescriptor(globalThis, "URLSearchParams");
      return [before, href, "value" in after, after.enumerable, "value" in params, URLSearchParams.name, URL.name];`);
    c.release();
    expect(got).toEqual([
      "function",
      "https://a.example/",
      true,
      false,
      true,
      "URLSearchParams",
      "URL",
    ]);
  });

  it("assigning the global before first use replaces it", async () => {
    const c = await iso.newContext();
    expect(
      c.run(
        `globalThis.URL = 5; return [URL, Object.getOwnPropertyDescriptor(globalThis, "URL").enumerable];`,
      ),
    ).toEqual([5, false]);
    c.release();
  });
});
