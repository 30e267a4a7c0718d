import { describe, expect, it } from "vitest";
import { GUARD_GLOBAL } from "../../src/runtime/instrument.js";
import { linkModules, ModuleLoadError } from "../../src/runtime/loader.js";
import { hasUseNodeDirective, type ModuleSource, modulePathOf } from "../../src/runtime/modules.js";

const isolate = (path: string, source: string): ModuleSource => ({
  path,
  source,
  environment: "isolate",
});

describe("module loading", () => {
  it('refuses a Node built-in imported outside a "use node" file, naming the file and the import', async () => {
    for (const spec of ["fs", "node:crypto", "path"]) {
      const err = await linkModules([
        isolate(
          "files.js",
          `import * as x from ${JSON.stringify(spec)};\nexport const f = () => x;`,
        ),
      ]).catch((e) => e);
      expect(err).toBeInstanceOf(ModuleLoadError);
      expect(err.message).toContain(`files.js imports the Node.js built-in "${spec}"`);
      expect(err.message).toContain('"use node"');
    }
  });

  it("refuses a malformed source map with a message of bounded size", async () => {
    // esbuild quotes the text it could not read: a whole megabyte, before clipping.
    const err = await linkModules([
      { ...isolate("a.js", "export const x = 1;\n"), sourceMap: `{${"a".repeat(1_000_000)}` },
    ]).catch((e) => e);
    expect(err).toBeInstanceOf(ModuleLoadError);
    expect(err.message).toContain("a.js");
    expect(err.message).toContain("more characters)");
    expect(err.message.length).toBeLessThan(2_000);
  });

  it("refuses imports of modules that were not pushed", async () => {
    const err = await linkModules([
      isolate("a.js", `import { b } from "./missing.js";\nexport const a = b;`),
    ]).catch((e) => e);
    expect(err).toBeInstanceOf(ModuleLoadError);
    expect(err.message).toMatch(
      /a\.js imports "\.\/missing\.js", which is not among the pushed modules/,
    );
    const pkg = await linkModules([
      isolate("a.js", `import z from "zod";\nexport const a = z;`),
    ]).catch((e) => e);
    expect(pkg.message).toMatch(/a\.js imports "zod"/);
  });

  it('links modules importing each other and shared chunks, and leaves "use node" modules out', async () => {
    const app = await linkModules([
      isolate("a.js", `import { helper } from "./_deps/chunk.js";\nexport const a = helper() + 1;`),
      isolate(
        "dir/b.js",
        `import { helper } from "../_deps/chunk.js";\nimport { a } from "../a.js";\nexport default a + helper();`,
      ),
      isolate("_deps/chunk.js", "export function helper() { return 41; }"),
      {
        path: "node.js",
        source: '"use node";\nimport fs from "fs";\nexport const x = fs;',
        environment: "node",
      },
    ]);
    expect(app.modulePaths).toEqual(["a.js", "dir/b.js"]);
    // A guard that lets everything through (the real one is in the prelude).
    const pass = <T>(o: T) => o;
    const g: { __tessera_app?: { modules: Record<string, Record<string, unknown>> } } = {
      [GUARD_GLOBAL]: {
        e: 0,
        w: pass,
        wc: pass,
        r: pass,
        rv: (_h: unknown, v: unknown) => v,
        t() {},
        roots() {},
        install() {},
      },
    } as never;
    new Function("globalThis", app.script)(g);
    expect(g.__tessera_app!.modules["a.js"]!.a).toBe(42);
    expect(g.__tessera_app!.modules["dir/b.js"]!.default).toBe(83);
  });

  it("refuses invalid module paths", async () => {
    await expect(linkModules([isolate("../evil.js", "export const a = 1;")])).rejects.toThrow(
      /Invalid module path/,
    );
    await expect(linkModules([isolate("/abs.js", "export const a = 1;")])).rejects.toThrow(
      /Invalid module path/,
    );
  });

  it('maps function paths to modules and spots the "use node" directive', () => {
    expect(modulePathOf("messages:list")).toEqual({ module: "messages.js", exportName: "list" });
    expect(modulePathOf("dir/file")).toEqual({ module: "dir/file.js", exportName: "default" });
    expect(hasUseNodeDirective('"use node";\nimport fs from "fs";')).toBe(true);
    expect(hasUseNodeDirective("// comment\n'use node'")).toBe(true);
    expect(hasUseNodeDirective('"use strict";\n"use node";')).toBe(true);
    expect(hasUseNodeDirective('const x = "use node";')).toBe(false);
  });
});
