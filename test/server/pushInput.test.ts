/**
 * The admin endpoints of a real `tessera serve` process that take a request
 * body from the CLI — `deploy2/*` (pushes), `update_environment_variables`,
 * `get_config_hashes` — and the log stream's cursor, sent any input: arbitrary
 * JSON, and the official CLI's own requests (captured while it deploys a small
 * app) with one thing changed: a field deleted, replaced or added, a module
 * with an odd path, source or source map, a schema that is almost right. Every
 * answer is a 200 or a 4xx naming the problem, in bounded time; the server
 * keeps serving, and a push that was refused (or never finished) leaves the
 * deployed app as it was.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  brotliCompressSync,
  brotliDecompressSync,
  gunzipSync,
  constants as zlibConstants,
} from "node:zlib";
import { ConvexHttpClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sleep } from "../helpers.js";
import { makeApp, runCli } from "./officialCli.js";
import { type ServerProcess, startServer } from "./serverProcess.js";

const ADMIN_KEY = "test-admin-key-push-input";
/** How long any answer may take (a module's import code may run for 10 s before it is stopped). */
const ANSWER_MS = 30_000;
/** A log poll at the newest cursor waits for an execution (20 s): a valid wait, cut short here. */
const LOG_POLL_MS = 2_000;

const list = makeFunctionReference<
  "query",
  Record<string, never>,
  { version: string; ns: number[] }
>("notes:list");
const add = makeFunctionReference<"mutation", { text: string }, string>("notes:add");
const fill = makeFunctionReference<"mutation", { count: number }, null>("notes:fill");

/** The app the CLI deploys first; every check afterwards expects its code ("v1") to serve. */
const APP_FILES: Record<string, string> = {
  "schema.ts": [
    'import { defineSchema, defineTable } from "convex/server";',
    'import { v } from "convex/values";',
    "export default defineSchema({",
    '  notes: defineTable({ text: v.string(), n: v.number() }).index("by_n", ["n"]),',
    "});",
  ].join("\n"),
  "notes.ts": [
    'import { mutationGeneric as mutation, queryGeneric as query } from "convex/server";',
    'import { v } from "convex/values";',
    'import { VERSION } from "./lib/version";',
    "export const list = query({",
    "  args: {},",
    "  handler: async (ctx) => {",
    '    const notes = await ctx.db.query("notes").withIndex("by_n", (q) => q.gte("n", 0)).collect();',
    "    return { version: VERSION, ns: notes.map((d) => d.n) };",
    "  },",
    "});",
    "export const add = mutation({",
    "  args: { text: v.string() },",
    "  handler: async (ctx, { text }) => {",
    '    const last = await ctx.db.query("notes").withIndex("by_n").order("desc").first();',
    '    await ctx.db.insert("notes", { text, n: (last?.n ?? -1) + 1 });',
    "    return VERSION;",
    "  },",
    "});",
    "// Documents of a table the schema does not declare (so no push checks them unless it does).",
    "export const fill = mutation({",
    "  args: { count: v.number() },",
    '  handler: async (ctx, { count }) => { for (let i = 0; i < count; i++) await ctx.db.insert("bulk", { x: i }); },',
    "});",
  ].join("\n"),
  "lib/version.ts": 'export const VERSION = "v1";',
};

interface Exchange {
  route: string;
  request: unknown;
  response: unknown;
}

/** An HTTP proxy in front of `target` that keeps each JSON request and answer passing through. */
async function recordingProxy(target: string): Promise<{
  url: string;
  exchanges: Exchange[];
  close(): Promise<void>;
}> {
  const exchanges: Exchange[] = [];
  const upstream = new URL(target);
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks);
      const encoding = req.headers["content-encoding"];
      const body =
        encoding === "br" ? brotliDecompressSync(raw) : encoding === "gzip" ? gunzipSync(raw) : raw;
      const up = request(
        {
          host: upstream.hostname,
          port: upstream.port,
          method: req.method,
          path: req.url,
          headers: req.headers,
        },
        (r) => {
          const out: Buffer[] = [];
          r.on("data", (c: Buffer) => out.push(c));
          r.on("end", () => {
            const answer = Buffer.concat(out);
            const parse = (b: Buffer) => {
              try {
                return JSON.parse(b.toString("utf8")) as unknown;
              } catch {
                return b.toString("utf8");
              }
            };
            exchanges.push({
              route: `${req.method} ${new URL(req.url ?? "/", target).pathname}`,
              request: parse(body),
              response: parse(answer),
            });
            res.writeHead(r.statusCode ?? 502, r.headers);
            res.end(answer);
          });
        },
      );
      up.on("error", () => res.destroy());
      up.end(raw);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    exchanges,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

// ---------------------------------------------------------------------------
// Edits of a JSON request: at a node picked by number (depth first, root 0).

type Json = unknown;
type Path = Array<string | number>;

function nodes(value: Json, path: Path = [], out: Path[] = []): Path[] {
  out.push(path);
  if (Array.isArray(value)) for (const [i, v] of value.entries()) nodes(v, [...path, i], out);
  else if (value !== null && typeof value === "object")
    for (const [k, v] of Object.entries(value)) nodes(v, [...path, k], out);
  return out;
}

function getAt(root: Json, path: Path): Json {
  let v = root;
  for (const k of path) v = (v as Record<string | number, Json>)[k];
  return v;
}

type Edit =
  | { op: "delete"; at: number }
  | { op: "replace"; at: number; value: Json }
  | { op: "add"; at: number; key: string; value: Json }
  | { op: "duplicate"; at: number }
  | { op: "truncate"; at: number; keep: number }
  | { op: "append"; at: number; text: string };

/** `root` (not changed) with `edit` applied at its node number `edit.at` (modulo their count). */
function applyEdit(root: Json, edit: Edit): Json {
  const copy = structuredClone(root);
  const all = nodes(copy);
  const path = all[edit.at % all.length]!;
  const parentPath = path.slice(0, -1);
  const key = path.at(-1);
  const current = getAt(copy, path);
  const set = (value: Json): Json => {
    if (key === undefined) return value;
    (getAt(copy, parentPath) as Record<string | number, Json>)[key] = value;
    return copy;
  };
  switch (edit.op) {
    case "delete": {
      if (key === undefined) return undefined;
      const parent = getAt(copy, parentPath);
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete (parent as Record<string, Json>)[key as string];
      return copy;
    }
    case "replace":
      return set(edit.value);
    case "add":
      if (Array.isArray(current)) current.push(edit.value);
      else if (current !== null && typeof current === "object")
        (current as Record<string, Json>)[edit.key] = edit.value;
      else return set(edit.value);
      return copy;
    case "duplicate": {
      if (key === undefined) return copy;
      const parent = getAt(copy, parentPath);
      if (Array.isArray(parent)) parent.splice(key as number, 0, structuredClone(current));
      else (parent as Record<string, Json>)[`${String(key)}_copy`] = structuredClone(current);
      return copy;
    }
    case "truncate":
      return typeof current === "string" ? set(current.slice(0, edit.keep)) : set(null);
    case "append":
      return typeof current === "string" ? set(current + edit.text) : set(edit.text);
  }
}

// ---------------------------------------------------------------------------
// Values the edits put in: any JSON, and ones that mean something here.

const ODD_PATHS = [
  "notes.js",
  "lib/version.js",
  "schema.js",
  "auth.config.js",
  "crons.js",
  "http.js",
  "convex.config.js",
  "_deps/x.js",
  "./notes.js",
  "a/./b.js",
  "a//b.js",
  "../x.js",
  "a/../../x.js",
  "/abs.js",
  "a\u0000.js",
  "a\\..\\b.js",
  "x.mjs",
  "x.ts",
  ".js",
  "notes.js/inner.js",
  `${"p".repeat(300)}.js`,
  `${"d/".repeat(200)}x.js`,
  "ü ñ 😀.js",
  "",
];

/**
 * Module code that is almost an app: wrong exports, failing imports, functions without
 * validators. Never code that does not end where the server sets no time limit (a schema's
 * or crons' export(), an auth config's getters, a "use node" import): those pushes are never
 * answered yet (src/server/README.md, "Pushes", known gaps).
 */
const ODD_SOURCES = [
  "",
  "export default 1;",
  "export {};",
  "syntax error (",
  'throw new Error("boom at import");',
  "throw null;",
  'import "./missing.js";',
  'import fs from "node:fs"; export const x = fs;',
  'import { v } from "convex/values"; export const x = v;',
  'export { VERSION } from "./lib/version.js";',
  'export * from "./notes.js";',
  "export const q = { isQuery: true, isPublic: true };",
  "export const q = Object.assign(() => 1, { isQuery: true, isPublic: true, invokeQuery: () => 1 });",
  'export const q = Object.assign(() => 1, { isQuery: true, isPublic: true, exportArgs: () => "{", exportReturns: () => 5 });',
  "export const m = Object.assign(() => 1, { isMutation: true, isInternal: true, exportArgs: () => { throw new Error(1); } });",
  "export const a = Object.assign(() => 1, { isAction: true, isPublic: true, isRegistered: true });",
  "export const h = Object.assign(() => 1, { isHttp: true });",
  "export default { isRouter: true, getRoutes: () => 5, lookup: () => null };",
  "export default { isCrons: true, export: () => 5 };",
  'export default { isCrons: true, export: () => "{" };',
  'export default { isCrons: true, export: () => JSON.stringify({ j: { name: "notes:nope", schedule: { type: "interval", seconds: 0 }, args: [{}] } }) };',
  "export default { providers: 5 };",
  'export default { providers: [{ domain: "not a url", applicationID: 1 }] };',
  'export default { providers: [{ type: "customJwt", issuer: "https://a.example", jwks: "data:,x", algorithm: "RS256" }] };',
  "export default { providers: [{ domain: process.env.NOT_SET, applicationID: 'x' }] };",
  "export default { export: () => 5 };",
  'export default { export: () => "not json" };',
  'export default { export: () => "{\\"tables\\":5}" };',
  "export default { export() { return this; } };",
  "export const big = new Array(1e6).fill('x').join('');",
  `/* ${"x".repeat(1 << 20)} */`,
  '"use node"; export const x = 1;',
];

/** A long string (megabytes, made once). */
const huge = "h".repeat(3 << 20);

const oddValue = fc.constantFrom<Json>(
  ...ODD_PATHS,
  ...ODD_SOURCES,
  "isolate",
  "node",
  "Node",
  "convex/",
  "1.48.0",
  "",
  huge,
  "{",
  '{"version":3,"sources":["x"],"mappings":";;;;;;AAAA"}',
  '{"version":3,"sources":5,"mappings":7}',
  '{"version":3,"sources":["a"],"mappings":"!!!!"}',
  true,
  false,
  0,
  -1,
  1e308,
  [],
  {},
  [null],
  { toString: 1 },
  JSON.parse('{"__proto__":1}'),
  { name: "a", version: "1.0.0" },
  { path: "x.js", source: "export {};", environment: "isolate" },
  { path: "x.js", sha256: "0".repeat(64), environment: "isolate" },
);
const value: fc.Arbitrary<Json> = fc.oneof(
  { weight: 3, arbitrary: oddValue },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: fc.string() },
);

const edit: fc.Arbitrary<Edit> = fc.oneof(
  fc.record({ op: fc.constant("delete" as const), at: fc.nat() }),
  { weight: 3, arbitrary: fc.record({ op: fc.constant("replace" as const), at: fc.nat(), value }) },
  fc.record({
    op: fc.constant("add" as const),
    at: fc.nat(),
    key: fc.oneof(fc.constantFrom("extra", "__proto__", "constructor", "path", ""), fc.string()),
    value,
  }),
  fc.record({ op: fc.constant("duplicate" as const), at: fc.nat() }),
  fc.record({ op: fc.constant("truncate" as const), at: fc.nat(), keep: fc.nat(200) }),
  fc.record({
    op: fc.constant("append" as const),
    at: fc.nat(),
    text: fc.oneof(fc.string(), fc.constantFrom("\u0000", "/..", ".js", ";throw 1;", "\n}", "😀")),
  }),
);

/** A module added to the push (or put in place of one). */
const oddModule = fc.record(
  {
    path: fc.oneof(fc.constantFrom(...ODD_PATHS), fc.string()),
    source: fc.oneof(fc.constantFrom(...ODD_SOURCES), fc.string()),
    sourceMap: fc.oneof(fc.string(), oddValue),
    environment: fc.constantFrom<Json>("isolate", "node", "isolate", undefined, 1),
  },
  { requiredKeys: ["path", "source", "environment"] },
);

/** A table or index the database would refuse or must rebuild, put in the schema's JSON. */
type SchemaChange =
  | { kind: "index"; replace: boolean; name: Json; fields: Json[] }
  | { kind: "table"; name: Json; indexes: Array<{ indexDescriptor: Json; fields: Json[] }> }
  | { kind: "indexes"; count: number };

const indexName = fc.constantFrom<Json>(
  "by_n",
  "by_n",
  "by_n",
  "by_text",
  "by_id",
  "by_creation_time",
  "_hidden",
  "",
  "a b",
  "x".repeat(65),
  5,
  null,
);
const fieldName = fc.constantFrom<Json>(
  "n",
  "text",
  "text",
  "missing",
  "_id",
  "_creationTime",
  "",
  "a..b",
  ".n",
  "missing",
  "n.deep",
  5,
);
const tableName = fc.constantFrom<Json>(
  "notes",
  "other",
  "_storage",
  "_scheduled_functions",
  "_tables",
  "a b",
  "",
  "t".repeat(65),
  "1abc",
);
const schemaChange: fc.Arbitrary<SchemaChange> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("index" as const),
      replace: fc.boolean(),
      name: indexName,
      fields: fc.oneof(
        { weight: 4, arbitrary: fc.array(fieldName, { minLength: 1, maxLength: 2 }) },
        { weight: 1, arbitrary: fc.array(fieldName, { maxLength: 17 }) },
      ),
    }),
  },
  fc.record({
    kind: fc.constant("table" as const),
    name: tableName,
    indexes: fc.array(
      fc.record({ indexDescriptor: indexName, fields: fc.array(fieldName, { maxLength: 3 }) }),
      { maxLength: 2 },
    ),
  }),
  fc.record({ kind: fc.constant("indexes" as const), count: fc.integer({ min: 30, max: 40 }) }),
);

function changeSchema(schema: Json, c: SchemaChange): Json {
  const out = structuredClone(schema) as {
    tables: Array<{ tableName: Json; indexes: Json[]; documentType?: Json }>;
  };
  const notes = out.tables[0]!;
  if (c.kind === "index") {
    const index = { indexDescriptor: c.name, fields: c.fields };
    if (c.replace) notes.indexes[0] = index;
    else notes.indexes.push(index);
  } else if (c.kind === "table") {
    out.tables.push({
      tableName: c.name,
      indexes: c.indexes,
      documentType: notes.documentType,
    });
  } else {
    for (let i = 0; i < c.count; i++)
      notes.indexes.push({ indexDescriptor: `i${i}`, fields: ["text"] });
  }
  return out;
}

/** A request body: the template edited, something else as JSON, or not JSON at all. */
type Body =
  | {
      kind: "edited";
      edits: Edit[];
      module?: Json;
      schema?: { edit: Edit } | { change: SchemaChange };
    }
  | { kind: "json"; value: Json }
  | { kind: "text"; text: string };

const body = (forPush: boolean): fc.Arbitrary<Body> =>
  fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record(
        {
          kind: fc.constant("edited" as const),
          edits: fc.array(edit, { minLength: forPush ? 0 : 1, maxLength: 2 }),
          ...(forPush
            ? {
                module: oddModule,
                schema: fc.oneof(fc.record({ edit }), {
                  weight: 2,
                  arbitrary: fc.record({ change: schemaChange }),
                }),
              }
            : {}),
        },
        { requiredKeys: ["kind", "edits"] },
      ),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("json" as const), value }) },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant("text" as const),
        text: fc.oneof(fc.string(), fc.constantFrom("", "{", "null", "[]", '{"a":1}x', "\uFFFF")),
      }),
    },
  );

interface FollowRequest {
  route: "wait_for_schema" | "finish_push";
  body: Body;
  /** Put in the body before it is edited. */
  dryRun?: boolean;
}

type PushRoute = "evaluate_schema" | "evaluate_push" | "start_push";
type Step =
  | {
      kind: "push";
      route: PushRoute;
      variant: "all" | "hashes";
      body: Body;
      /** After a start_push that succeeded: the CLI's next requests for it, unchanged. */
      next?: "wait" | "finish" | "both";
    }
  | {
      kind: "follow";
      /** Which push the bodies name: the last one started here, a fresh pristine one, or one long finished. */
      target: "last" | "fresh" | "stale";
      /** Sent at the same time. */
      requests: FollowRequest[];
    }
  | { kind: "env"; body: Body }
  | { kind: "hashes"; body: Body }
  | { kind: "logs"; cursor: string };

const encoding = fc.constantFrom<Encoding>("identity", "identity", "identity", "br", "br-damaged");

const followBody: fc.Arbitrary<Body> = fc.oneof(
  body(false),
  fc.constant<Body>({ kind: "edited", edits: [] }),
  fc.constant<Body>({ kind: "edited", edits: [] }),
);

const followRequest: fc.Arbitrary<FollowRequest> = fc.record(
  {
    route: fc.constantFrom("wait_for_schema" as const, "finish_push" as const),
    // No edit at all too: a start_push that was changed is then waited for and finished as the CLI would.
    body: followBody,
    dryRun: fc.constantFrom(true, false),
  },
  { requiredKeys: ["route", "body"] },
);

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant("push" as const),
      // Mostly start_push, and mostly followed by the rest of the push: the deeper steps.
      route: fc.constantFrom<PushRoute>(
        "evaluate_schema",
        "evaluate_push",
        "start_push",
        "start_push",
      ),
      variant: fc.constantFrom<"all" | "hashes">("all", "hashes"),
      body: body(true),
      next: fc.constantFrom(
        undefined,
        "wait" as const,
        "finish" as const,
        "both" as const,
        "both" as const,
      ),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("follow" as const),
      target: fc.constantFrom("last" as const, "last" as const, "fresh" as const, "stale" as const),
      requests: fc.oneof(
        { weight: 3, arbitrary: fc.array(followRequest, { minLength: 1, maxLength: 1 }) },
        { weight: 1, arbitrary: fc.array(followRequest, { minLength: 2, maxLength: 3 }) },
      ),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("env" as const), body: body(false) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("hashes" as const), body: body(false) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("logs" as const),
      cursor: fc.oneof(
        fc.nat().map(String),
        fc.string(),
        fc.constantFrom("", "-1", "1e3", "0x10", "99999999999999999999", " 1", "1.5"),
      ),
    }),
  },
);

// ---------------------------------------------------------------------------

let server: ServerProcess;
let app: string;
/** The CLI's own requests from the first deploy. */
let cliStartPush: Record<string, Json>;
let cliWait: Record<string, Json>;
let cliFinish: Record<string, Json>;
let cliHashes: Json;
/** The push ID the captured wait/finish requests carry (finished long ago). */
let capturedPushId: string;
/** The schema's `export()` JSON, parsed. */
let schemaExport: Json;
/** What get_config_hashes answers for the deployed app. */
let deployedHashes: Json;

beforeAll(async () => {
  const source = mkdtempSync(join(tmpdir(), "tessera-push-input-src-"));
  for (const [file, text] of Object.entries(APP_FILES)) {
    mkdirSync(join(source, file, ".."), { recursive: true });
    writeFileSync(join(source, file), `${text}\n`);
  }
  app = makeApp(source, "push-input");
  rmSync(source, { recursive: true, force: true });
  server = await startServer({
    convexDir: null,
    adminKey: ADMIN_KEY,
    // Never reach the registry for a package a fuzzed push names.
    env: { npm_config_offline: "true", npm_config_registry: "http://127.0.0.1:9/" },
  });
  const proxy = await recordingProxy(server.url);
  try {
    const r = await runCli(app, { url: proxy.url, adminKey: ADMIN_KEY }, [
      "deploy",
      "--typecheck",
      "disable",
    ]);
    expect(r.out).toContain("Deployed Convex functions");
  } finally {
    await proxy.close();
  }
  const of = (route: string) => {
    const e = proxy.exchanges.find((x) => x.route === route);
    if (e === undefined) throw new Error(`the CLI did not call ${route}`);
    return e;
  };
  cliStartPush = of("POST /api/deploy2/start_push").request as Record<string, Json>;
  cliWait = of("POST /api/deploy2/wait_for_schema").request as Record<string, Json>;
  const finish = of("POST /api/deploy2/finish_push");
  cliFinish = finish.request as Record<string, Json>;
  cliHashes = of("POST /api/get_config_hashes").request;
  capturedPushId = (cliFinish.startPush as { tesseraPushId: string }).tesseraPushId;
  const diff = (finish.response as { componentDiffs: Record<string, { schemaDiff: Json }> })
    .componentDiffs[""]!.schemaDiff as { next_schema: string };
  schemaExport = JSON.parse(diff.next_schema);
  deployedHashes = await admin("/api/get_config_hashes", JSON.stringify(cliHashes)).then((a) =>
    JSON.parse(a.text),
  );
}, 120_000);

afterAll(async () => {
  await server?.dispose();
  if (app !== undefined) rmSync(app, { recursive: true, force: true });
});

interface Answer {
  status: number;
  text: string;
  /** The client gave up waiting. */
  timedOut: boolean;
}

/** How a body travels: as it is, brotli-compressed (as the CLI sends pushes), or damaged on the way. */
type Encoding = "identity" | "br" | "br-damaged";

async function admin(
  path: string,
  text: string | null,
  options: { limitMs?: number; encoding?: Encoding } = {},
): Promise<Answer> {
  const encoding = options.encoding ?? "identity";
  let body: string | Uint8Array | undefined = text ?? undefined;
  if (text !== null && encoding !== "identity") {
    const compressed = brotliCompressSync(text, {
      params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 1 },
    });
    // Cut short: the end of the stream is missing.
    body = encoding === "br" ? compressed : compressed.subarray(0, compressed.length >> 1);
  }
  try {
    const res = await fetch(`${server.url}${path}`, {
      method: text === null ? "GET" : "POST",
      headers: {
        Authorization: `Convex ${ADMIN_KEY}`,
        "Content-Type": "application/json",
        ...(encoding === "identity" || text === null ? {} : { "Content-Encoding": "br" }),
      },
      ...(body === undefined ? {} : { body }),
      signal: AbortSignal.timeout(options.limitMs ?? ANSWER_MS),
    });
    return { status: res.status, text: await res.text(), timedOut: false };
  } catch (e) {
    if ((e as Error).name === "TimeoutError") return { status: 0, text: "", timedOut: true };
    throw e;
  }
}

/** The CLI's start_push request; "hashes": the modules the server has sent by hash, as the CLI does on a later push. */
function startPushTemplate(variant: "all" | "hashes"): Record<string, Json> {
  const t = structuredClone(cliStartPush);
  if (variant === "all") return t;
  const deployed = new Map(
    (deployedHashes as { moduleHashes: Array<{ path: string; hash: string }> }).moduleHashes.map(
      (h) => [h.path, h.hash],
    ),
  );
  const def = t.appDefinition as {
    changedModules: Array<{ path: string; environment: string }>;
    unchangedModuleHashes: Json[];
  };
  const changed: typeof def.changedModules = [];
  for (const m of def.changedModules) {
    const sha256 = deployed.get(m.path);
    if (sha256 === undefined) changed.push(m);
    else def.unchangedModuleHashes.push({ path: m.path, environment: m.environment, sha256 });
  }
  def.changedModules = changed;
  return t;
}

/** The CLI's start_push request with `schema` as the app's schema export. */
function pushOfSchema(schema: Json): Json {
  const push = structuredClone(cliStartPush) as {
    appDefinition: { schema: { source: string; sourceMap?: string } };
  };
  push.appDefinition.schema.source = `export default { export: () => ${JSON.stringify(JSON.stringify(schema))} };`;
  delete push.appDefinition.schema.sourceMap;
  return push;
}

/** The table `notes:fill` writes, declared (`x` a number) with `indexes`. */
function bulkTable(indexes: Json[]): Json {
  return {
    tableName: "bulk",
    indexes,
    searchIndexes: [],
    vectorIndexes: [],
    documentType: {
      type: "object",
      value: { x: { fieldType: { type: "number" }, optional: false } },
    },
  };
}

/** `template` naming push `id` instead of the captured one. */
function naming(template: Json, id: string): Json {
  return JSON.parse(JSON.stringify(template).replaceAll(capturedPushId, id));
}

function render(b: Body, template: Json): { text: string; edited: Json } {
  if (b.kind === "text") return { text: b.text, edited: undefined };
  if (b.kind === "json") return { text: JSON.stringify(b.value) ?? "", edited: b.value };
  let out = template;
  for (const e of b.edits) out = applyEdit(out, e);
  const isObject = (x: Json): x is Record<string, Json> => x !== null && typeof x === "object";
  const def = isObject(out) ? out.appDefinition : undefined;
  if (!isObject(def)) return { text: JSON.stringify(out) ?? "", edited: out };
  if (b.module !== undefined && Array.isArray(def.changedModules))
    def.changedModules.push(b.module);
  if (b.schema !== undefined && isObject(def.schema)) {
    // A schema.js whose export() answers the real schema JSON with one change.
    const json = JSON.stringify(
      "edit" in b.schema
        ? applyEdit(schemaExport, b.schema.edit)
        : changeSchema(schemaExport, b.schema.change),
    );
    def.schema.source = `export default { export: () => ${JSON.stringify(json ?? "")} };`;
    delete def.schema.sourceMap;
  }
  return { text: JSON.stringify(out) ?? "", edited: out };
}

/** A 200, or a 4xx with `{code, message}` naming the problem — within the bound. */
function expectAnswered(what: string, a: Answer): void {
  expect(a.timedOut, `${what}: no answer within ${ANSWER_MS} ms`).toBe(false);
  expect(
    a.status,
    `${what}: ${a.text.slice(0, 500)}\n${server.output().slice(-3000)}`,
  ).toBeLessThan(500);
  expect(a.status === 200 || (a.status >= 400 && a.status < 500), `${what}: ${a.status}`).toBe(
    true,
  );
  const parsed = JSON.parse(a.text) as { message?: unknown };
  if (a.status !== 200) {
    expect(typeof parsed.message, `${what}: ${a.text.slice(0, 500)}`).toBe("string");
    expect((parsed.message as string).length).toBeGreaterThan(0);
  }
}

async function pristinePush(): Promise<void> {
  const start = await admin("/api/deploy2/start_push", JSON.stringify(cliStartPush));
  expect(start.status, start.text).toBe(200);
  const id = (JSON.parse(start.text) as { tesseraPushId: string }).tesseraPushId;
  for (const [route, template] of [
    ["wait_for_schema", cliWait],
    ["finish_push", cliFinish],
  ] as const) {
    const a = await admin(`/api/deploy2/${route}`, JSON.stringify(naming(template, id)));
    expect(a.status, a.text).toBe(200);
  }
}

/** The deployed app's code serves, reads its index and writes; its modules are the ones deployed. */
async function expectOldAppServes(): Promise<void> {
  expect((await fetch(`${server.url}/version`)).status).toBe(200);
  const http = new ConvexHttpClient(server.url, { logger: false });
  const before = await http.query(list, {});
  expect(before.version).toBe("v1");
  // Texts that sort the other way round from n: a read through an index on other fields shows.
  const text = `note ${String(1e6 - before.ns.length)}`;
  expect(await http.mutation(add, { text })).toBe("v1");
  const after = await http.query(list, {});
  // Read through its index by_n: n = 0, 1, 2, … in order.
  expect(after).toEqual({ version: "v1", ns: [...before.ns, before.ns.length] });
  expect(after.ns.every((n, i) => n === i)).toBe(true);
  const hashes = await admin("/api/get_config_hashes", JSON.stringify(cliHashes));
  expect(JSON.parse(hashes.text)).toEqual(deployedHashes);
}

/** Runs `steps`; returns whether a push other than the pristine one was finished. */
async function run(steps: Step[], encoding: Encoding): Promise<boolean> {
  /** Pushes started here, by ID: whether their start_push was the CLI's unchanged. */
  const started = new Map<string, boolean>();
  let last: string | null = null;
  let replaced = false;
  for (const s of steps) {
    switch (s.kind) {
      case "push": {
        const { text, edited } = render(s.body, startPushTemplate(s.variant));
        const a = await admin(`/api/deploy2/${s.route}`, text, { encoding });
        expectAnswered(s.route, a);
        if (s.route === "start_push" && a.status === 200) {
          const id = (JSON.parse(a.text) as { tesseraPushId: string }).tesseraPushId;
          expect(typeof id).toBe("string");
          const pristine = JSON.stringify(edited) === JSON.stringify(cliStartPush);
          started.set(id, pristine);
          last = id;
          if (s.next === "wait" || s.next === "both") {
            const wait = await admin(
              "/api/deploy2/wait_for_schema",
              JSON.stringify(naming(cliWait, id)),
            );
            expectAnswered("wait_for_schema", wait);
          }
          if (s.next === "finish" || s.next === "both") {
            const finish = await admin(
              "/api/deploy2/finish_push",
              JSON.stringify(naming(cliFinish, id)),
            );
            expectAnswered("finish_push", finish);
            if (finish.status === 200 && !pristine) replaced = true;
          }
        }
        break;
      }
      case "follow": {
        let id = capturedPushId;
        if (s.target === "fresh" || (s.target === "last" && last === null)) {
          const start = await admin("/api/deploy2/start_push", JSON.stringify(cliStartPush));
          expect(start.status, start.text).toBe(200);
          id = (JSON.parse(start.text) as { tesseraPushId: string }).tesseraPushId;
          started.set(id, true);
          last = id;
        } else if (s.target === "last") id = last!;
        // Sent at once (a client that retries, or two of them).
        const answers = await Promise.all(
          s.requests.map(async (r) => {
            const t = naming(r.route === "wait_for_schema" ? cliWait : cliFinish, id) as Record<
              string,
              Json
            >;
            if (r.dryRun !== undefined) t.dryRun = r.dryRun;
            const { text, edited } = render(r.body, t);
            const answer = await admin(`/api/deploy2/${r.route}`, text, { encoding });
            return { route: r.route, edited, answer };
          }),
        );
        for (const { route, edited, answer } of answers) {
          expectAnswered(route, answer);
          if (route === "finish_push" && answer.status === 200) {
            const named = (edited as { startPush?: { tesseraPushId?: unknown } } | null)?.startPush
              ?.tesseraPushId;
            if (typeof named !== "string" || started.get(named) !== true) replaced = true;
          }
        }
        break;
      }
      case "env": {
        const template = { changes: [{ name: "PUSH_INPUT_VAR", value: "some value" }] };
        const a = await admin("/api/update_environment_variables", render(s.body, template).text, {
          encoding,
        });
        expectAnswered("update_environment_variables", a);
        break;
      }
      case "hashes": {
        const a = await admin("/api/get_config_hashes", render(s.body, cliHashes).text, {
          encoding,
        });
        expectAnswered("get_config_hashes", a);
        break;
      }
      case "logs": {
        const a = await admin(
          `/api/stream_function_logs?cursor=${encodeURIComponent(s.cursor)}`,
          null,
          { limitMs: LOG_POLL_MS },
        );
        // Waiting is what a poll at the newest cursor does.
        if (!(a.timedOut && /^\d+$/.test(s.cursor))) expectAnswered("stream_function_logs", a);
        break;
      }
    }
  }
  return replaced;
}

/** The processes of the server's process group (the launcher, the server, esbuild, Node.js runtimes). */
function serverProcesses(): number {
  let n = 0;
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      // pid (comm) state ppid pgrp …: comm may hold spaces and parentheses.
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]) === server.pid) n++;
    } catch {
      // Gone meanwhile.
    }
  }
  return n;
}

/** A start_push of the CLI's own request with only its schema changed, then `next`. */
function schemaPush(
  schema: NonNullable<Extract<Body, { kind: "edited" }>["schema"]>,
  next?: "wait" | "finish",
): Step[] {
  return [
    {
      kind: "push",
      route: "start_push",
      variant: "all",
      body: { kind: "edited", edits: [], schema },
      ...(next === undefined ? {} : { next }),
    },
  ];
}

/** Cases the property found, kept so that they run every time. */
const FOUND: Step[][] = [
  // A schema whose `indexes` is no list: start_push answered 500 (TypeError while diffing indexes).
  schemaPush({ edit: { op: "replace", at: 4, value: "notes.js" } }),
  // An index the database refuses (its name is empty): start_push accepted it, and
  // finish_push (or wait_for_schema) answered 500 when the database refused to create it.
  schemaPush({ change: { kind: "index", replace: false, name: "", fields: ["n"] } }, "finish"),
  // A push that changes the fields of an index the live code reads, waited for and never
  // finished: wait_for_schema rebuilt the index at once, and the old code's query failed.
  schemaPush({ change: { kind: "index", replace: true, name: "by_n", fields: ["text"] } }, "wait"),
  // A schema defining index by_n twice (the second on other fields): accepted, and the
  // second rebuilt the live index.
  schemaPush({ change: { kind: "index", replace: false, name: "by_n", fields: ["text"] } }, "wait"),
];

describe("admin push endpoints with any input", () => {
  it("answer 200 or a 4xx naming the problem, and the deployed app keeps serving", async () => {
    await expectOldAppServes();
    await fc.assert(
      fc.asyncProperty(
        fc.array(step, { minLength: 1, maxLength: 3 }),
        encoding,
        async (steps, how) => {
          try {
            const replaced = await run(steps, how);
            if (replaced) {
              // A changed push went all the way through: deploy the app again.
              expect((await fetch(`${server.url}/version`)).status).toBe(200);
              await pristinePush();
            }
            await expectOldAppServes();
          } catch (e) {
            // Each case starts from the deployed app, shrunk ones too.
            await pristinePush().catch(() => {});
            throw e;
          }
        },
      ),
      {
        numRuns: Number(process.env.PUSH_INPUT_RUNS ?? 100),
        examples: FOUND.map((steps) => [steps, "identity"]),
      },
    );
  }, 600_000);

  it("refuses a schema the database could not hold, naming what is wrong", async () => {
    type Schema = { tables: Array<{ tableName: string; indexes: Json }> };
    const notes = (s: Schema) => s.tables[0]!;
    const index = (name: Json, fields: Json) => ({ indexDescriptor: name, fields });
    const cases: Array<[(s: Schema) => void, RegExp]> = [
      [
        (s) => {
          notes(s).indexes = "notes.js";
        },
        /indexes of table "notes" must be a list/,
      ],
      [
        (s) => {
          notes(s).indexes = [index(5, ["n"])];
        },
        /needs an indexDescriptor and a list/,
      ],
      [
        (s) => {
          notes(s).indexes = [index("by_n", ["n"]), index("by_n", ["text"])];
        },
        /index "by_n" twice/,
      ],
      [(s) => s.tables.push(structuredClone(notes(s))), /table "notes" is defined twice/],
      [
        (s) => {
          notes(s).tableName = "_storage";
        },
        /starts with an underscore/,
      ],
      [
        (s) => {
          notes(s).indexes = [index("by_creation_time", ["n"])];
        },
        /reserved/,
      ],
      [
        (s) => {
          notes(s).indexes = [index("by_n", ["_creationTime"])];
        },
        /cannot list _creationTime/,
      ],
      [
        (s) => {
          notes(s).indexes = Array.from({ length: 33 }, (_, i) => index(`i${i}`, ["n"]));
        },
        /32 indexes/,
      ],
    ];
    for (const [change, message] of cases) {
      const schema = structuredClone(schemaExport) as Schema;
      change(schema);
      const push = pushOfSchema(schema);
      for (const route of ["evaluate_push", "start_push"]) {
        const a = await admin(`/api/deploy2/${route}`, JSON.stringify(push));
        expect(a.status, a.text).toBe(400);
        expect(JSON.parse(a.text).message).toMatch(message);
      }
    }
    await expectOldAppServes();
  });

  it.runIf(process.platform === "linux")(
    "keeps one push started and never finished at a time (each holds the app's runtimes)",
    async () => {
      // With a "use node" module, each prepared app holds a Node.js process.
      const withNode = structuredClone(cliStartPush) as {
        appDefinition: { changedModules: Json[] };
      };
      withNode.appDefinition.changedModules.push({
        path: "nodeOnly.js",
        source: "export const x = 1;",
        environment: "node",
      });
      const before = serverProcesses();
      const ids: string[] = [];
      for (let i = 0; i < 4; i++) {
        const a = await admin("/api/deploy2/start_push", JSON.stringify(withNode));
        expect(a.status, a.text).toBe(200);
        ids.push((JSON.parse(a.text) as { tesseraPushId: string }).tesseraPushId);
      }
      // Only the newest is held; the others are gone, as a later finish_push says.
      await expect.poll(() => serverProcesses()).toBe(before + 1);
      const stale = await admin(
        "/api/deploy2/finish_push",
        JSON.stringify(naming(cliFinish, ids[0]!)),
      );
      expect(stale.status).toBe(400);
      expect(JSON.parse(stale.text).message).toMatch(/newer push/);
      // And a push started after it replaces it too.
      await pristinePush();
      await expect.poll(() => serverProcesses()).toBe(before);
      await expectOldAppServes();
    },
  );

  it("installs no app that a finish_push for the same push disposed while it waited its turn", async () => {
    const http = new ConvexHttpClient(server.url, { logger: false });
    for (let i = 0; i < 2; i++) await http.mutation(fill, { count: 10_000 });
    // The push declares that table with an index: its wait_for_schema checks and indexes every
    // document, and the finish_push requests sent meanwhile wait behind it.
    const schema = structuredClone(schemaExport) as { tables: Json[] };
    schema.tables.push(bulkTable([{ indexDescriptor: "by_x", fields: ["x"] }]));
    const push = pushOfSchema(schema);
    const started = await admin("/api/deploy2/start_push", JSON.stringify(push));
    expect(started.status, started.text).toBe(200);
    const id = (JSON.parse(started.text) as { tesseraPushId: string }).tesseraPushId;
    const wait = admin("/api/deploy2/wait_for_schema", JSON.stringify(naming(cliWait, id)));
    await sleep(50);
    // A dry run and a real one (a retry, or two clients): the dry run disposes the app, the
    // real one installs it; whichever goes second must not touch it.
    const finishes = await Promise.all(
      [true, false].map((dryRun) => {
        const body = naming(cliFinish, id) as Record<string, Json>;
        body.dryRun = dryRun;
        return admin("/api/deploy2/finish_push", JSON.stringify(body));
      }),
    );
    expectAnswered("wait_for_schema", await wait);
    expect(finishes.map((f) => f.status).sort()).toEqual([200, 400]);
    const refused = finishes.find((f) => f.status === 400)!;
    expect(JSON.parse(refused.text).code).toBe("UnknownPush");
    await expectOldAppServes();
    // Back to the app without that table.
    await pristinePush();
    await expectOldAppServes();
  });

  it("fails a push whose schema a write breaks during its last data check, or fails that write", async () => {
    const http = new ConvexHttpClient(server.url, { logger: false });
    // Documents of a table the push declares: its check reads them page by page, serving others between.
    for (let i = 0; i < 4; i++) await http.mutation(fill, { count: 10_000 });
    const { ns } = await http.query(list, {});
    // A schema that holds exactly the notes there are: the next note `add` makes breaks it.
    type Field = { fieldType: Json; optional: boolean };
    type Table = { tableName: string; documentType: { value: Record<string, Field> } };
    const schema = structuredClone(schemaExport) as { tables: Json[] };
    const notes = schema.tables.find((t) => (t as Table).tableName === "notes") as Table;
    notes.documentType.value.n!.fieldType = {
      type: "union",
      value: ns.map((n) => ({ type: "literal", value: n })),
    };
    schema.tables.push(bulkTable([]));
    const push = pushOfSchema(schema);
    const started = await admin("/api/deploy2/start_push", JSON.stringify(push));
    expect(started.status, started.text).toBe(200);
    const id = (JSON.parse(started.text) as { tesseraPushId: string }).tesseraPushId;
    const waited = await admin("/api/deploy2/wait_for_schema", JSON.stringify(naming(cliWait, id)));
    expect(JSON.parse(waited.text)).toMatchObject({ type: "complete" });
    const finish = admin("/api/deploy2/finish_push", JSON.stringify(naming(cliFinish, id)));
    await sleep(20);
    // Sent while the check reads the 40,000 documents (before it, it would find the note itself).
    const added = await http.mutation(add, { text: "during the check" }).then(
      () => null,
      (e: Error) => e,
    );
    const finished = await finish;
    if (added === null) {
      // The note is in: a push whose schema it breaks must not be installed.
      expect(finished.status, finished.text).toBe(400);
      expect(JSON.parse(finished.text).message).toMatch(
        /^Schema validation failed: Document with ID "[^"]+" in table "notes" does not match the schema/,
      );
    } else {
      // Sent after the push was decided: the old app's write is refused instead.
      expect(added.message).toMatch(/in table "notes" because it does not match the schema/);
      expect(finished.status, finished.text).toBe(200);
    }
    await pristinePush();
    await expectOldAppServes();
  });
});
