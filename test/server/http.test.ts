/**
 * The HTTP function API of a real `tessera serve` process, driven by the
 * official `ConvexHttpClient` (and raw `fetch` where the client hides the
 * response): one-shot calls, errors with data, admin-only internal functions,
 * snapshot reads at a timestamp, CORS and `/version`.
 */
import { ConvexHttpClient } from "convex/browser";
import { ConvexError } from "convex/values";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rejection } from "../helpers.js";
import { api } from "./api.js";
import { type ServerProcess, startServer } from "./serverProcess.js";

let server: ServerProcess;
const ADMIN_KEY = "test-admin-key-http";

beforeAll(async () => {
  server = await startServer({ adminKey: ADMIN_KEY });
});

afterAll(async () => {
  await server?.dispose();
});

/** The client's `@internal` methods (present at run time, not in its published types). */
type FullHttpClient = ConvexHttpClient & {
  setAdminAuth(key: string): void;
  function(
    fn: unknown,
    componentPath: string | undefined,
    args?: Record<string, unknown>,
  ): Promise<unknown>;
};

const client = () => new ConvexHttpClient(server.url, { logger: false }) as FullHttpClient;

async function post(path: string, body: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${server.url}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body,
  });
  return { status: res.status, text: await res.text(), headers: res.headers };
}

describe("HTTP API through ConvexHttpClient", () => {
  it("runs queries, mutations and /api/function calls", async () => {
    const http = client();
    const id = await http.mutation(api.items.add, { name: "lamp", price: 12, remaining: 3 });
    expect(typeof id).toBe("string");
    expect(await http.query(api.items.get, { id })).toMatchObject({
      _id: id,
      name: "lamp",
      price: 12,
      remaining: 3,
    });
    expect(await http.query(api.items.inStock, {})).toContain("lamp (12.00)");
    // Values survive the JSON wire form both ways (int64, bytes, nested).
    const bytes = new Uint8Array([1, 2, 255]).buffer;
    const echoed = (await http.query(api.items.echo, { n: 7n, b: bytes, list: [1, "x"] })) as {
      n: bigint;
      b: ArrayBuffer;
      list: unknown[];
    };
    expect(echoed.n).toBe(7n);
    expect([...new Uint8Array(echoed.b)]).toEqual([1, 2, 255]);
    expect(echoed.list).toEqual([1, "x"]);
    // `function` picks the kind on the server.
    expect(await http.function(api.counters.increment, undefined, { name: "fn" })).toBe(1);
    expect(await http.function(api.counters.increment, undefined, { name: "fn" })).toBe(2);
    expect(await http.function(api.counters.get, undefined, { name: "fn" })).toBe(2);
  });

  it("delivers ConvexError data from queries and mutations; a failed mutation commits nothing", async () => {
    const http = client();
    const q = await rejection(http.query(api.behaviour.failWithData, {}));
    expect(q).toBeInstanceOf(ConvexError);
    expect((q as ConvexError<{ code: string; detail: bigint[] }>).data).toEqual({
      code: "NOPE",
      detail: [1, 2n],
    });
    const m = await rejection(http.mutation(api.counters.refuse, { code: "HTTP" }));
    expect(m).toBeInstanceOf(ConvexError);
    expect((m as ConvexError<{ code: string }>).data).toEqual({ code: "HTTP", retry: false });
    expect(await http.query(api.counters.get, { name: "refused-HTTP" })).toBe(0);
    // A plain error is an Error with the message, not a ConvexError.
    const plain = await rejection(http.mutation(api.behaviour.fail, { text: "zzz" }));
    expect(plain).not.toBeInstanceOf(ConvexError);
    expect(plain.message).toContain("refusing zzz");
  });

  it("answers a function failure with 560 and a malformed request with 400", async () => {
    const failed = await post(
      "/api/query",
      JSON.stringify({ path: "behaviour:failWithData", args: [{}], format: "convex_encoded_json" }),
    );
    expect(failed.status).toBe(560);
    expect(JSON.parse(failed.text)).toMatchObject({ status: "error", errorData: { code: "NOPE" } });

    const missing = await post("/api/query", JSON.stringify({ path: "nope:nothing", args: [{}] }));
    expect(missing.status).toBe(560);
    expect(JSON.parse(missing.text).status).toBe("error");

    for (const body of ["{not json", "[1,2]", JSON.stringify({ args: [{}] })]) {
      const bad = await post("/api/mutation", body);
      expect(bad.status, body).toBe(400);
    }
    // Nested deeper than the server's recursive code can take: refused, not a server error.
    const deep = `${"[".repeat(100_000)}${"]".repeat(100_000)}`;
    for (const path of ["/api/query", "/api/mutation"]) {
      const tooDeep = await post(path, `{"path":"items:echo","args":[{"x":${deep}}]}`);
      expect(tooDeep.status, path).toBe(400);
      expect(JSON.parse(tooDeep.text).message).toMatch(/more than 1000 levels/);
    }
    // An admin acting as an identity nested that deep (within Node's 16 KiB of headers): a 400, it was a 500.
    const deepIdentity = `{"subject":"s","x":${"[".repeat(4000)}${"]".repeat(4000)}}`;
    const acting = await post("/api/query", JSON.stringify({ path: "items:inStock", args: [{}] }), {
      Authorization: `Convex ${ADMIN_KEY}:${Buffer.from(deepIdentity).toString("base64")}`,
    });
    expect(acting.status).toBe(400);
    expect(JSON.parse(acting.text).message).toMatch(/more than 1000 levels/);
    const badTs = await post(
      "/api/query_at_ts",
      JSON.stringify({ path: "counters:get", args: [{ name: "x" }], ts: "not a ts" }),
    );
    expect(badTs.status).toBe(400);
    // The client reports a 400 as an Error carrying the server's text.
    const http = client();
    const e = await rejection(http.function("items:get", "some/component", {}));
    expect(e).not.toBeInstanceOf(ConvexError);
    expect(e.message).toMatch(/component/i);
    // And the server is still fine.
    expect(await http.query(api.counters.get, { name: "fn" })).toBe(2);
  });

  it("answers any request body and authorization with a result or a client error, never a server error", async () => {
    const id = await client().mutation(api.items.add, { name: "fuzzed", price: 1, remaining: 1 });
    const ts = JSON.parse(
      (await post("/api/query_ts", JSON.stringify({ path: "items:inStock", args: [{}] }))).text,
    ).ts;
    const odd = fc.constantFrom<unknown>(
      { toString: 1 },
      { valueOf: "x", toString: "y" },
      id,
      ts,
      "items:get",
      "items:secret",
      "convex_encoded_json",
      "json",
      [{}],
      [{ id }],
      [{ $integer: "AAAAAAAAAAA=" }],
      -1,
      2 ** 64,
    );
    const value = fc.oneof(fc.jsonValue(), odd);
    const templates = [
      { path: "items:get", args: [{ id }], format: "convex_encoded_json" },
      { path: "items:add", args: { name: "f", price: 1, remaining: 0 }, format: "json" },
      { path: "counters:get", args: [{ name: "x" }], ts },
    ];
    const body = fc.oneof(
      {
        weight: 4,
        arbitrary: fc
          .tuple(fc.nat(templates.length - 1), fc.nat(), fc.option(value, { nil: undefined }))
          .map(([t, f, v]) => {
            const b: Record<string, unknown> = structuredClone(templates[t]!);
            const keys = [...Object.keys(b), "componentPath", "extra"];
            const key = keys[f % keys.length]!;
            if (v === undefined) delete b[key];
            else b[key] = v;
            return JSON.stringify(b);
          }),
      },
      { weight: 1, arbitrary: value.map((v) => JSON.stringify(v) ?? "") },
      { weight: 1, arbitrary: fc.string() },
    );
    const identity = value.map((v) => Buffer.from(JSON.stringify(v) ?? "").toString("base64"));
    const authorization = fc.oneof(
      fc.constant(undefined),
      fc.constant(`Convex ${ADMIN_KEY}`),
      identity.map((i) => `Convex ${ADMIN_KEY}:${i}`),
      fc.string().map((s) => `Bearer ${s}`),
      fc.string(),
    );
    const endpoint = fc.constantFrom(
      "/api/query",
      "/api/mutation",
      "/api/action",
      "/api/function",
      "/api/query_ts",
      "/api/query_at_ts",
    );
    await fc.assert(
      fc.asyncProperty(endpoint, body, authorization, async (path, text, auth) => {
        const res = await post(path, text, auth === undefined ? {} : { Authorization: auth });
        // 200 or the function's own failure (560), or the caller's mistake (4xx): never 500.
        expect([200, 400, 401, 404, 560]).toContain(res.status);
        const answer = JSON.parse(res.text);
        if (res.status >= 400 && res.status < 500) expect(answer.message).toBeTypeOf("string");
        // query_ts answers the latest timestamp whatever it is sent.
        else if (path === "/api/query_ts") expect(answer.ts).toBeTypeOf("string");
        else expect(answer.status).toBeTypeOf("string");
      }),
      {
        numRuns: 300,
        // Values that String() cannot print, where the request names them.
        examples: [
          ["/api/query", JSON.stringify({ path: { toString: 1 }, args: [{}] }), undefined],
          [
            "/api/query",
            JSON.stringify({ path: "items:get", args: [{}], format: { toString: 1 } }),
            undefined,
          ],
          [
            "/api/query_at_ts",
            JSON.stringify({ path: "items:inStock", args: [{}], ts: { toString: 1 } }),
            undefined,
          ],
        ],
      },
    );
    expect((await fetch(`${server.url}/version`)).status).toBe(200);
  });

  it("refuses internal functions publicly and allows them with the admin key", async () => {
    const publicClient = client();
    const refused = await rejection(publicClient.query(api.items.secret, {}));
    expect(refused.message).toMatch(/secret/);
    const admin = client();
    admin.setAdminAuth(ADMIN_KEY);
    expect(await admin.query(api.items.secret, {})).toBe("internal only");
    expect(await admin.function(api.items.secret, undefined, {})).toBe("internal only");
    // A wrong admin key is refused outright.
    const wrong = client();
    wrong.setAdminAuth("not-the-key");
    const bad = await rejection(wrong.query(api.items.secret, {}));
    expect(bad.message).toMatch(/admin key/i);
    // The printed admin key is the one given on the command line.
    expect(server.adminKey).toBe(ADMIN_KEY);
  });

  it("counts mutation commits and context reuse at /api/tessera/metrics, for the admin key only", async () => {
    const metrics = async (key?: string) => {
      const res = await fetch(`${server.url}/api/tessera/metrics`, {
        headers: key === undefined ? {} : { Authorization: `Convex ${key}` },
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    expect((await metrics()).status).toBe(401);
    expect((await metrics("not-the-key")).status).toBe(401);
    const first = (await metrics(ADMIN_KEY)).body;
    const before = first.mutations as Record<string, number>;
    const contextsBefore = first.contexts as Record<string, number>;
    const c = client();
    for (let i = 0; i < 3; i++) await c.mutation(api.counters.increment, { name: "metrics" });
    await rejection(c.mutation(api.counters.refuse, { code: "metrics" }));
    const second = (await metrics(ADMIN_KEY)).body;
    const after = second.mutations as Record<string, number>;
    // A failed mutation commits nothing and is not counted.
    expect(after.committed! - before.committed!).toBe(3);
    expect(after.conflicts).toBeGreaterThanOrEqual(before.conflicts!);
    // Every execution is counted, reused context or not (runtime/README.md, "Context reuse").
    const contexts = second.contexts as Record<string, number | boolean>;
    expect(contexts.enabled).toBe(true);
    expect((contexts.executions as number) - contextsBefore.executions!).toBe(4);
    expect(contexts.reused as number).toBeGreaterThan(0);
    // counters:increment reads and writes through SQLite, which answers at once.
    const syscalls = second.asyncSyscalls as Record<string, number>;
    const syscallsBefore = first.asyncSyscalls as Record<string, number>;
    expect(syscalls.atOnce! - syscallsBefore.atOnce!).toBeGreaterThanOrEqual(3);
    expect(syscalls.later).toBe(syscallsBefore.later);
    // The isolates the query and mutation pool holds (at most its four; one
    // when nothing overlaps, which test/runtime/answersAtOnce.test.ts checks).
    expect(second.isolates).toBeGreaterThanOrEqual(1);
    expect(second.isolates).toBeLessThanOrEqual(4);
  });

  it("reads a consistent snapshot with query_ts and query_at_ts", async () => {
    const writer = client();
    await writer.mutation(api.counters.increment, { name: "snap" });
    const reader = client();
    expect(await reader.consistentQuery(api.counters.get, { name: "snap" })).toBe(1);
    await writer.mutation(api.counters.increment, { name: "snap" });
    await writer.mutation(api.counters.increment, { name: "snap" });
    // Same client: still at the timestamp it fixed first.
    expect(await reader.consistentQuery(api.counters.get, { name: "snap" })).toBe(1);
    expect(await reader.consistentQuery(api.counters.sum, { names: ["snap"] })).toBe(1);
    // A plain query and a new consistent client see the latest.
    expect(await reader.query(api.counters.get, { name: "snap" })).toBe(3);
    expect(await client().consistentQuery(api.counters.get, { name: "snap" })).toBe(3);

    // The raw endpoints: a timestamp, then reads at it.
    const tsRes = await post("/api/query_ts", "");
    expect(tsRes.status).toBe(200);
    const { ts } = JSON.parse(tsRes.text) as { ts: string };
    expect(typeof ts).toBe("string");
    await writer.mutation(api.counters.increment, { name: "snap" });
    const at = await post(
      "/api/query_at_ts",
      JSON.stringify({ path: "counters:get", args: [{ name: "snap" }], ts }),
    );
    expect(at.status).toBe(200);
    expect(JSON.parse(at.text)).toMatchObject({ status: "success", value: 3 });
  });

  it("answers CORS preflights and /version", async () => {
    const pre = await fetch(`${server.url}/api/query`, {
      method: "OPTIONS",
      headers: {
        Origin: "https://app.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, convex-client, authorization",
      },
    });
    expect(pre.status).toBeLessThan(300);
    expect(pre.headers.get("access-control-allow-origin")).toMatch(
      /^(\*|https:\/\/app\.example\.com)$/,
    );
    expect(pre.headers.get("access-control-allow-methods") ?? "").toMatch(/POST/);
    expect((pre.headers.get("access-control-allow-headers") ?? "").toLowerCase()).toMatch(
      /content-type/,
    );
    // An actual cross-origin call carries the header too.
    const call = await post(
      "/api/query",
      JSON.stringify({ path: "counters:get", args: [{ name: "fn" }] }),
      { Origin: "https://app.example.com" },
    );
    expect(call.status).toBe(200);
    expect(call.headers.get("access-control-allow-origin")).toMatch(
      /^(\*|https:\/\/app\.example\.com)$/,
    );

    const version = await fetch(`${server.url}/version`);
    expect(version.status).toBe(200);
    await version.text();
  });
});
