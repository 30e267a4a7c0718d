/**
 * Host side: bundles the prelude (globals.ts and what it imports, including
 * whatwg-url and @noble/hashes) into one classic script with esbuild. The
 * script is built once per process and cached.
 */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

let cached: Promise<string> | undefined;

/** The prelude script text (an IIFE); evaluate it in a fresh context before anything else. */
export function buildPrelude(): Promise<string> {
  if (cached === undefined) {
    cached = build().catch((err: unknown) => {
      cached = undefined;
      throw err;
    });
  }
  return cached;
}

/** A prelude source next to this file: `name`.ts from sources (vitest, tsx), `name`.js from dist/. */
function sourceFile(name: string): string {
  const dir = dirname(fileURLToPath(import.meta.url));
  for (const file of [`${name}.ts`, `${name}.js`]) {
    const path = join(dir, file);
    if (existsSync(path)) return path;
  }
  throw new Error(`prelude source ${name}.ts or ${name}.js not found in ${dir}`);
}

/** Sends whatwg-url's `require("tr46")` to tr46_fast, which loads the real tr46 only for non-ASCII domains. */
const fastTr46: esbuild.Plugin = {
  name: "tessera-fast-tr46",
  setup(build) {
    build.onResolve({ filter: /^tr46$/ }, () => ({ path: sourceFile("tr46_fast") }));
  },
};

async function build(): Promise<string> {
  const result = await esbuild.build({
    entryPoints: [sourceFile("globals")],
    bundle: true,
    format: "iife",
    platform: "neutral",
    target: "es2022",
    // Platform "neutral" looks at no package.json main fields by default.
    mainFields: ["module", "main"],
    minify: false,
    sourcemap: false,
    write: false,
    logLevel: "silent",
    charset: "utf8",
    plugins: [fastTr46],
  });
  const file = result.outputFiles[0];
  if (file === undefined) throw new Error("esbuild produced no output for the prelude");
  return file.text;
}
