/**
 * The syscall interface must serve every version of the official
 * `convex/server` library from 1.17 to the newest: the fixture app is built
 * against the oldest supported (1.17, installed as the `convex-1-17` alias)
 * and the newest (the `convex` dev dependency) and run through the same calls.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { FunctionRunner } from "../../src/functions/runner.js";
import { applySchemaIndexes, evaluateSchema } from "../../src/functions/schema.js";
import { AppRuntime } from "../../src/runtime/appRuntime.js";
import { bundleConvexDir, bundleSchema } from "../../src/runtime/bundler.js";
import { linkModules } from "../../src/runtime/loader.js";
import { openTestDb } from "../helpers.js";

const fixture = join(import.meta.dirname, "../fixtures/app/convex");
const packageVersion = (name: string) =>
  JSON.parse(
    readFileSync(join(import.meta.dirname, `../../node_modules/${name}/package.json`), "utf8"),
  ).version as string;

for (const pkg of ["convex-1-17", "convex"]) {
  describe(`convex/server ${packageVersion(pkg)}`, () => {
    it("runs queries, mutations, pagination, errors and IDs", async () => {
      const alias = pkg === "convex" ? undefined : { convex: pkg };
      const modules = await bundleConvexDir(fixture, { alias });
      // The bundle really carries this version of the library: newer versions send
      // their version string with syscalls; 1.17 has none, so it must not carry the newest one.
      const text = modules.map((m) => m.source).join("\n");
      if (pkg === "convex") expect(text).toContain(packageVersion("convex"));
      else expect(text).not.toContain(packageVersion("convex"));
      const runtime = await AppRuntime.create(await linkModules(modules), { isolates: 1 });
      const schemaModule = (await bundleSchema(fixture))!;
      const t = await openTestDb();
      try {
        const schema = await evaluateSchema(schemaModule);
        await applySchemaIndexes(t.db, schema);
        const runner = new FunctionRunner({ db: t.db, runtime, schema });
        const q = (p: string, a = {}) => runner.query(p, a).then((r) => r.value);
        const m = (p: string, a = {}) => runner.mutation(p, a).then((r) => r.value);
        const hat = (await m("items:add", { name: "hat", price: 19.5, remaining: 1 })) as string;
        expect(await q("items:get", { id: hat })).toMatchObject({ name: "hat" });
        expect(await q("items:inStock")).toEqual(["hat (19.50)"]);
        expect(await m("cart:addCart", { itemId: hat, userToken: "u" })).toBe(0);
        await expect(m("cart:addCart", { itemId: hat, userToken: "u" })).rejects.toThrow(
          /Insufficient stock/,
        );
        for (const text of ["a", "b", "c"]) await m("behaviour:addNote", { text });
        const page = (await q("behaviour:page", { cursor: null, numItems: 2 })) as {
          page: unknown[];
          isDone: boolean;
        };
        expect(page.page).toHaveLength(2);
        expect(page.isDone).toBe(false);
        expect(await q("behaviour:normalize", { id: hat })).toEqual({ asItem: hat, asNote: null });
        await expect(q("behaviour:failWithData")).rejects.toMatchObject({
          data: { code: "NOPE", detail: [1, 2n] },
        });
        expect(await q("behaviour:filtered", { min: 10 })).toEqual(["hat"]);
      } finally {
        runtime.dispose();
        await t.close();
      }
    });
  });
}
