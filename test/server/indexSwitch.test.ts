/**
 * A deploy that changes the fields of an index the live app reads, with the
 * official CLI against a real server: the replacement is built while the old
 * app serves, which goes on reading its own index until the switch; from the
 * switch on every call runs the new app on the new index.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { makeApp, runCli } from "./officialCli.js";
import { type ServerProcess, startServer } from "./serverProcess.js";

/** Documents in the table: enough that building an index over them takes a while. */
const DOCS = 40_000;

type Listed = { version: string; keys: number[] };
const list = makeFunctionReference<"query", Record<string, never>, Listed>("items:list");
const fill = makeFunctionReference<"mutation", { start: number; count: number }, null>(
  "items:fill",
);

/** The app's files, its index `by_key` on `field`; `list` reads the first three through it. */
function appFiles(version: string, field: "a" | "b"): Record<string, string> {
  return {
    "schema.ts": [
      'import { defineSchema, defineTable } from "convex/server";',
      'import { v } from "convex/values";',
      "export default defineSchema({",
      `  items: defineTable({ a: v.number(), b: v.number() }).index("by_key", ["${field}"]),`,
      "});",
    ].join("\n"),
    "items.ts": [
      'import { mutationGeneric as mutation, queryGeneric as query } from "convex/server";',
      'import { v } from "convex/values";',
      "export const list = query({",
      "  args: {},",
      "  handler: async (ctx) => {",
      `    const docs = await ctx.db.query("items").withIndex("by_key", (q) => q.gte("${field}", -${DOCS})).take(3);`,
      `    return { version: "${version}", keys: docs.map((d) => d.${field}) };`,
      "  },",
      "});",
      "export const fill = mutation({",
      "  args: { start: v.number(), count: v.number() },",
      "  handler: async (ctx, { start, count }) => {",
      '    for (let i = start; i < start + count; i++) await ctx.db.insert("items", { a: i, b: -i });',
      "  },",
      "});",
    ].join("\n"),
  };
}

function writeApp(app: string, files: Record<string, string>): void {
  for (const [path, text] of Object.entries(files)) {
    const file = join(app, "convex", path);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, text);
  }
}

let server: ServerProcess;
let app: string;
let source: string;

beforeAll(async () => {
  source = mkdtempSync(join(tmpdir(), "tessera-index-switch-src-"));
  writeApp(source, appFiles("v1", "a"));
  app = makeApp(join(source, "convex"), "index-switch");
  server = await startServer({ convexDir: null });
}, 60_000);

afterAll(async () => {
  await server?.dispose();
  if (app !== undefined) rmSync(app, { recursive: true, force: true });
  if (source !== undefined) rmSync(source, { recursive: true, force: true });
});

describe("a deploy that changes an index's fields", () => {
  it("keeps the old app reading its index until the switch, and the new app reads the new one from then on", async () => {
    const target = { url: server.url, adminKey: server.adminKey };
    const first = await runCli(app, target, ["deploy", "--typecheck", "disable"]);
    expect(first.code, first.out).toBe(0);
    const http = new ConvexHttpClient(server.url, { logger: false });
    for (let start = 0; start < DOCS; start += 10_000)
      await http.mutation(fill, { start, count: 10_000 });
    const before: Listed = { version: "v1", keys: [0, 1, 2] };
    // The new index's order (b = -a): the last documents first.
    const after: Listed = { version: "v2", keys: [1 - DOCS, 2 - DOCS, 3 - DOCS] };
    expect(await http.query(list, {})).toEqual(before);

    // A live query of the same function, over WebSocket.
    const client = new ConvexClient(server.url, {
      webSocketConstructor: WebSocket as unknown as typeof globalThis.WebSocket,
      logger: false,
    });
    const seen: Array<Listed | string> = [];
    client.onUpdate(
      list,
      {},
      (r) => seen.push(r),
      (e) => seen.push(`error: ${e.message}`),
    );

    try {
      writeApp(app, appFiles("v2", "b"));
      const deploy = runCli(app, target, ["deploy", "--typecheck", "disable"]);
      let deployed = false;
      void deploy.finally(() => {
        deployed = true;
      });
      // One call after another while the deploy runs (and one after it).
      const answers: Array<Listed | string> = [];
      for (let last = false; !last; ) {
        last = deployed;
        answers.push(await http.query(list, {}).catch((e: Error) => `error: ${e.message}`));
      }
      const result = await deploy;
      expect(result.code, result.out).toBe(0);
      expect(result.out).toMatch(/\[\+\] items\.by_key/);

      // Every answer is one app's on its own index: the old one's until the switch, then the new one's.
      const shown = answers.map((a) => (typeof a === "string" ? a : `${a.version} ${a.keys}`));
      const switchedAt = shown.findIndex((a) => a !== `v1 ${before.keys}`);
      expect(switchedAt, `${shown.length} answers, none from the new app`).toBeGreaterThan(0);
      expect(new Set(shown.slice(switchedAt))).toEqual(new Set([`v2 ${after.keys}`]));
      await expect.poll(() => seen.at(-1)).toEqual(after);
      expect(seen.filter((s) => typeof s === "string")).toEqual([]);
    } finally {
      await client.close();
    }
  }, 120_000);
});
