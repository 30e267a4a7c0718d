import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { type CliResult, makeApp, runCli } from "./officialCli.js";
import { fixtureConvexDir, type ServerProcess, startServer } from "./serverProcess.js";

// biome-ignore lint/suspicious/noExplicitAny: the fixture app is addressed untyped
const api = anyApi as any;

let server: ServerProcess;
let app: string;

/** Runs the official CLI in the app folder against the server. */
function cli(args: string[], adminKey = server.adminKey): Promise<CliResult> {
  return runCli(app, { url: server.url, adminKey }, args);
}

function editFile(relative: string, edit: (text: string) => string): void {
  const file = join(app, "convex", relative);
  writeFileSync(file, edit(readFileSync(file, "utf8")));
}

beforeAll(async () => {
  app = makeApp(fixtureConvexDir, "deploy-app");
  server = await startServer({ convexDir: null });
}, 60_000);

afterAll(async () => {
  await server?.dispose();
  // After the restart the server runs on a data dir it did not create.
  if (server !== undefined) rmSync(server.dataDir, { recursive: true, force: true });
  rmSync(app, { recursive: true, force: true });
});

describe("the official CLI against tessera serve", () => {
  it("deploys an app (bundle, typecheck, codegen, push) that clients can then call", async () => {
    const before = await new ConvexHttpClient(server.url)
      .query(api.items.inStock, {})
      .catch((e: Error) => e.message);
    expect(before).toMatch(/Could not find public function for 'items:inStock'/);

    const r = await cli(["deploy"]);
    expect(r.out).toContain("Deployed Convex functions");
    expect(r.out).toMatch(/\[\+\] items\.by_remaining/);
    expect(r.code).toBe(0);

    const http = new ConvexHttpClient(server.url);
    await http.mutation(api.items.add, { name: "hat", price: 25, remaining: 1 });
    expect(await http.query(api.items.inStock, {})).toEqual(["hat (25.00)"]);
  }, 90_000);

  it("prints results of `npx convex run`, internal functions included", async () => {
    const pub = await cli(["run", "items:inStock"]);
    expect(pub.code).toBe(0);
    expect(JSON.parse(pub.out.slice(pub.out.indexOf("[")))).toEqual(["hat (25.00)"]);
    const internal = await cli(["run", "items:secret"]);
    expect(internal.out).toContain("internal only");
    // A "use node" action, pushed by the CLI and run in the Node.js runtime.
    const node = await cli(["run", "nodeActions:digest", '{"text": "1;", "counter": "cli"}']);
    expect(node.code).toBe(0);
    expect(node.out).toContain('"statements": 1');
    const missing = await cli(["run", "items:nope"]);
    expect(missing.code).not.toBe(0);
    expect(missing.out).toContain("Could not find public function for 'items:nope'");
  }, 120_000);

  it("serves a changed function after `npx convex dev --once`, and live queries move to it", async () => {
    const client = new ConvexClient(server.url, {
      webSocketConstructor: WebSocket as unknown as typeof globalThis.WebSocket,
    });
    try {
      const seen: string[][] = [];
      const updated = new Promise<void>((resolve) => {
        client.onUpdate(api.items.inStock, {}, (labels: string[]) => {
          seen.push(labels);
          if (labels[0]?.startsWith("hat: ")) resolve();
        });
      });
      await expect.poll(() => seen.length).toBeGreaterThan(0);
      editFile("lib/format.ts", (t) =>
        // A template literal in the fixture's source, written as plain text here.
        t.replace(["`$", "{name} ($", "{price.toFixed(2)})`"].join(""), () =>
          ["`$", "{name}: $$", "{price}`"].join(""),
        ),
      );
      const r = await cli(["dev", "--once", "--typecheck", "disable"]);
      expect(r.out).toContain("Convex functions ready");
      // No data changed: the subscription was re-run on the new code and pushed.
      await updated;
      expect(seen.at(-1)).toEqual(["hat: $25"]);
    } finally {
      await client.close();
    }
  }, 120_000);

  it("refuses a schema the existing data violates, naming the table and document, and keeps serving", async () => {
    const http = new ConvexHttpClient(server.url);
    await http.mutation(api.counters.increment, { name: "clicks" });
    editFile("schema.ts", (t) =>
      t.replace(
        "counters: defineTable({ name: v.string(), value: v.number() })",
        "counters: defineTable({ name: v.string(), value: v.string() })",
      ),
    );
    try {
      const r = await cli(["deploy", "--typecheck", "disable"]);
      expect(r.code).not.toBe(0);
      expect(r.out).toMatch(
        /Document with ID "[a-z0-9]+" in table "counters" does not match the schema/,
      );
      expect(r.out).not.toContain("Deployed Convex functions");
    } finally {
      editFile("schema.ts", (t) =>
        t.replace(
          "counters: defineTable({ name: v.string(), value: v.string() })",
          "counters: defineTable({ name: v.string(), value: v.number() })",
        ),
      );
    }
    // The previous code still serves.
    expect(await http.query(api.counters.get, { name: "clicks" })).toBe(1);
    expect(await http.query(api.items.inStock, {})).toEqual(["hat: $25"]);
  }, 120_000);

  it("changes nothing on a dry run", async () => {
    editFile("schema.ts", (t) =>
      t.replace(
        '.index("by_name", ["name"])',
        () => '.index("by_name", ["name"]).index("by_price", ["price"])',
      ),
    );
    try {
      const dry = await cli(["deploy", "--dry-run", "--typecheck", "disable"]);
      expect(dry.code).toBe(0);
      expect(dry.out).toContain("Would have deployed Convex functions");
      expect(dry.out).toMatch(/\[\+\] items\.by_price/);
      // Not added by the dry run: the real push still adds it.
      const real = await cli(["deploy", "--typecheck", "disable"]);
      expect(real.out).toMatch(/\[\+\] items\.by_price/);
      expect(real.code).toBe(0);
    } finally {
      editFile("schema.ts", (t) => t.replace('.index("by_price", ["price"])', ""));
    }
    const back = await cli(["deploy", "--typecheck", "disable"]);
    expect(back.out).toMatch(/\[-\] items\.by_price/);
  }, 120_000);

  it("sets, lists, reads and removes environment variables with `npx convex env`", async () => {
    expect((await cli(["env", "set", "GREETING", "hello world"])).code).toBe(0);
    expect((await cli(["env", "set", "COLOR=blue"])).code).toBe(0);
    const list = await cli(["env", "list"]);
    expect(list.out).toContain("COLOR=blue");
    expect(list.out).toContain("GREETING=hello world");
    expect((await cli(["env", "get", "GREETING"])).out.trim()).toBe("hello world");
    // Functions read them from process.env; a cached result that read one is re-run on a change.
    const client = new ConvexClient(server.url, {
      webSocketConstructor: WebSocket as unknown as typeof globalThis.WebSocket,
    });
    try {
      const values: Array<string | null> = [];
      client.onUpdate(api.behaviour.envVar, { name: "COLOR" }, (v: string | null) => {
        values.push(v);
      });
      await expect.poll(() => values.at(-1)).toBe("blue");
      expect((await cli(["env", "set", "COLOR", "green"])).code).toBe(0);
      await expect.poll(() => values.at(-1)).toBe("green");
    } finally {
      await client.close();
    }
    expect((await cli(["env", "remove", "COLOR"])).code).toBe(0);
    expect(
      await new ConvexHttpClient(server.url).query(api.behaviour.envVar, { name: "COLOR" }),
    ).toBe(null);
    expect((await cli(["env", "list"])).out).not.toContain("COLOR");
    const bad = await cli(["env", "set", "1BAD", "x"]);
    expect(bad.code).not.toBe(0);
    expect(bad.out).toContain("Invalid environment variable name");
  }, 120_000);

  it("lists tables, documents and functions with `npx convex data` and `function-spec`", async () => {
    const tables = await cli(["data"]);
    expect(tables.out.split("\n")).toEqual(expect.arrayContaining(["counters", "items"]));
    const docs = await cli(["data", "items", "--format", "jsonl"]);
    const rows = docs.out
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { name: string });
    expect(rows.map((r) => r.name)).toEqual(["hat"]);
    const spec = await cli(["function-spec"]);
    const parsed = JSON.parse(spec.out.slice(spec.out.indexOf("{"))) as {
      url: string;
      functions: Array<{ identifier: string; functionType: string; visibility: { kind: string } }>;
    };
    expect(parsed.url).toBe(server.url);
    expect(parsed.functions).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          identifier: "items.js:add",
          functionType: "Mutation",
          visibility: { kind: "public" },
        }),
        expect.objectContaining({
          identifier: "items.js:secret",
          visibility: { kind: "internal" },
        }),
      ]),
    );
  }, 120_000);

  it("streams function logs to the CLI's log endpoint", async () => {
    const res = await fetch(`${server.url}/api/stream_function_logs?cursor=0`, {
      headers: { Authorization: `Convex ${server.adminKey}` },
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as {
      entries: Array<{ identifier: string; udfType: string }>;
      newCursor: number;
    };
    expect(body.entries).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ identifier: "items:add", udfType: "Mutation" }),
      ]),
    );
    expect(body.newCursor).toBeGreaterThan(0);
  });

  it("refuses a wrong admin key (CLI and admin endpoints) and apps with components", async () => {
    const r = await cli(["deploy", "--typecheck", "disable"], "not-the-key");
    expect(r.code).not.toBe(0);
    expect(r.out).toContain("401 Unauthorized: BadAdminKey");
    for (const auth of [undefined, "Convex wrong"]) {
      const res = await fetch(`${server.url}/api/deploy2/start_push`, {
        method: "POST",
        headers: auth === undefined ? {} : { Authorization: auth },
        body: "{}",
      });
      expect(res.status).toBe(401);
    }
    const unknown = await fetch(`${server.url}/api/some_future_endpoint`, {
      method: "POST",
      headers: { Authorization: `Convex ${server.adminKey}` },
      body: "{}",
    });
    expect(unknown.status).toBe(400);
    expect(((await unknown.json()) as { message: string }).message).toContain(
      "not supported yet: POST /api/some_future_endpoint",
    );
    // JSON nested deeper than the server's recursive code can take: a 400, not a 500.
    const deep = await fetch(`${server.url}/api/update_environment_variables`, {
      method: "POST",
      headers: { Authorization: `Convex ${server.adminKey}` },
      body: `{"changes":${"[".repeat(100_000)}${"]".repeat(100_000)}}`,
    });
    expect(deep.status).toBe(400);
    expect(((await deep.json()) as { message: string }).message).toMatch(/more than 1000 levels/);
    const components = await fetch(`${server.url}/api/deploy2/start_push`, {
      method: "POST",
      headers: { Authorization: `Convex ${server.adminKey}`, "Content-Type": "application/json" },
      body: JSON.stringify({
        adminKey: server.adminKey,
        dryRun: false,
        functions: "convex/",
        appDefinition: {
          definition: { path: "convex.config.js", source: "", environment: "isolate" },
          dependencies: ["../node_modules/some-component"],
          schema: null,
          changedModules: [],
          unchangedModuleHashes: [],
          udfServerVersion: "1.48.0",
        },
        componentDefinitions: [],
        nodeDependencies: [],
      }),
    });
    expect(components.status).toBe(400);
    expect(((await components.json()) as { message: string }).message).toContain(
      "not supported yet: components",
    );
  }, 120_000);

  it('installs external packages of "use node" actions from npm', async () => {
    writeFileSync(
      join(app, "convex.json"),
      JSON.stringify({ node: { externalPackages: ["dequal"] } }),
    );
    writeFileSync(
      join(app, "convex", "external.ts"),
      [
        '"use node";',
        'import { dequal } from "dequal";',
        'import { action } from "./_generated/server";',
        "export const same = action({",
        "  args: {},",
        "  handler: async () => dequal({ a: [1, { b: 2 }] }, { a: [1, { b: 2 }] }),",
        "});",
        "",
      ].join("\n"),
    );
    const r = await cli(["deploy", "--typecheck", "disable"]);
    expect(r.out).toContain("Deployed Convex functions");
    expect(r.code).toBe(0);
    const run = await cli(["run", "external:same"]);
    expect(run.out.trim().split("\n").at(-1)).toBe("true");
  }, 120_000);

  it("keeps serving the pushed app after a restart, its modules imported with the push's clock and seed", async () => {
    type ModuleState = { importedAt: number; importRandom: number };
    const state = async () => {
      const s = (await new ConvexHttpClient(server.url).query(
        api.behaviour.moduleState,
        {},
      )) as ModuleState;
      return { importedAt: s.importedAt, importRandom: s.importRandom };
    };
    const before = await state();
    await server.stop();
    server = await startServer({ convexDir: null, dataDir: server.dataDir });
    const http = new ConvexHttpClient(server.url);
    expect(await state()).toEqual(before);
    expect(await http.query(api.items.inStock, {})).toEqual(["hat: $25"]);
    expect((await cli(["env", "get", "GREETING"])).out.trim()).toBe("hello world");
    // The installed external package is used again, not fetched again.
    expect((await cli(["run", "external:same"])).out.trim().split("\n").at(-1)).toBe("true");
  }, 120_000);
});
