import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as esbuild from "esbuild";
import ivm from "isolated-vm";
import { describe, expect, it } from "vitest";
import { buildPrelude } from "../../../src/runtime/prelude/build.js";

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, "..", "..", "..");
const sources = join(repo, "src", "runtime", "prelude");

describe("buildPrelude", () => {
  it("returns the same cached script on every call", async () => {
    const [a, b] = await Promise.all([buildPrelude(), buildPrelude()]);
    expect(a).toBe(b);
    expect(await buildPrelude()).toBe(a);
    expect(a).toMatch(/^(?:"use strict";\n)?\(\(\) => \{/);
  });

  it("evaluates in a bare isolated-vm context", async () => {
    const code = await buildPrelude();
    const isolate = new ivm.Isolate({ memoryLimit: 64 });
    try {
      const script = await isolate.compileScript(code);
      const context = await isolate.createContext();
      await script.run(context);
      expect(await context.eval(`typeof TextEncoder + typeof __tessera_env.begin`)).toBe(
        "functionfunction",
      );
    } finally {
      isolate.dispose();
    }
  });

  it("works from compiled JavaScript (dist/), finding globals.js next to build.js", async () => {
    mkdirSync(join(repo, ".tmp"), { recursive: true });
    const out = mkdtempSync(join(repo, ".tmp", "prelude-dist-"));
    try {
      for (const file of readdirSync(sources).filter((f) => f.endsWith(".ts"))) {
        const result = await esbuild.transform(readFileSync(join(sources, file), "utf8"), {
          loader: "ts",
          format: "esm",
          target: "es2022",
        });
        writeFileSync(join(out, file.replace(/\.ts$/, ".js")), result.code);
      }
      const compiled = (await import(pathToFileURL(join(out, "build.js")).href)) as {
        buildPrelude: () => Promise<string>;
      };
      const code = await compiled.buildPrelude();
      const isolate = new ivm.Isolate({ memoryLimit: 64 });
      try {
        const context = await isolate.createContext();
        await (await isolate.compileScript(code)).run(context);
        expect(await context.eval(`new URL("https://example.com/a/../b").href`)).toBe(
          "https://example.com/b",
        );
      } finally {
        isolate.dispose();
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
